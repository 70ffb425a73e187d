import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import Metrics
import NIOPosix
import ParleyDTLSLibrary
import ParleyClient
import ParleyIO
import ParleyMedia
import ParleyRelay
import ParleyRouting
import ParleySignaling
import ParleyTransceiver
import ParleyWire
import Prometheus
import ServiceLifecycle

@main
struct Parley: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "A WebRTC edge for voice AI: a relay on one public port, transceivers that own the sessions.",
        subcommands: [Dev.self, RelayCommand.self, TransceiverCommand.self, Load.self, BenchSCTP.self, Token.self, Version.self]
    )
}

/// Options every serving command shares.
struct ServingOptions: ParsableArguments {
    @Option(help: "Address the signaling API (and demo page) listens on.")
    var httpHost = "127.0.0.1"
    @Option(help: "Port of the signaling API.")
    var httpPort = 8080
    @Option(help: "Address the media workers bind.")
    var mediaHost = "127.0.0.1"
    @Option(help: "UDP port of the first media worker; worker i binds port + i.")
    var mediaPort = 3478
    @Option(help: "Media worker threads, one UDP port each (one per core by default).")
    var workers = System.coreCount
    @Option(name: .customLong("advertise"),
            help: "Address put in SDP answers as a candidate, e.g. 203.0.113.5:3478 (repeat for several; default: the worker's own).")
    var advertised: [String] = []
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"
    @Option(help: "The agent each call talks to: \(AgentChoice.allCases.map(\.rawValue).joined(separator: ", ")), or ws:// / wss://host:port/path (docs/agent-protocol.md).")
    var agent = "echo"
    @Option(help: "PEM certificates a wss:// agent's certificate may chain to (default: the system's roots).")
    var agentCa: String?
    @Option(name: .customLong("named-agent"),
            help: "An agent a call's session may choose by name: NAME=ws://host:port/path (repeat). Built-in agents are always there.")
    var namedAgents: [String] = []

    @Option(name: .customLong("api-key"),
            help: "An API key requests authenticate with, Authorization: Bearer KEY (repeat; also PARLEY_API_KEYS, comma-separated).")
    var apiKeys: [String] = []
    @Option(help: "A file of API keys, one per line (# starts a comment); reloaded on SIGHUP.")
    var apiKeyFile: String?
    @Option(help: "A key file (`ID HEX [current]` per line, as --routing-key-file) that client secrets are sealed with, so relays, which hold the routing key, cannot mint them (default: the routing key); reloaded on SIGHUP.")
    var clientSecretKeyFile: String?
    @Flag(help: "Take requests without credentials (only on a network you control): every call then has one anonymous owner.")
    var insecureNoAuth = false
    @Option(name: .customLong("trusted-proxy"),
            help: "A proxy (load balancer) network whose X-Forwarded-For is believed for a request's address, e.g. 10.0.0.0/8 (repeat).")
    var trustedProxies: [String] = []

    @Option(help: "Calls a client address may start per second (IPv6: per /64), after a burst of --burst-per-address.")
    var ratePerAddress: Double = 5
    @Option(help: "Calls a client address may start at once.")
    var burstPerAddress = 20
    @Option(help: "Calls an API key (with its client secrets) may start per second, after a burst of --burst-per-key.")
    var ratePerKey: Double = 50
    @Option(help: "Calls an API key may start at once.")
    var burstPerKey = 200
    @Option(help: "Live calls an API key may have at once.")
    var maxCallsPerKey = 1000
    @Option(help: "Live calls this transceiver takes (503 past it).")
    var maxSessions = 10_000
    @Option(help: "Seconds a new HTTP connection has to send its first request's head.")
    var httpHeaderTimeout: Double = 10
    @Option(help: "Seconds a request's body has to arrive.")
    var httpBodyTimeout: Double = 10
    @Option(help: "Seconds an HTTP connection may sit idle between requests.")
    var httpIdleTimeout: Double = 60
    @Option(help: "HTTP connections open at once (past it, new ones wait in the backlog).")
    var maxConnections = 4096
    @Option(help: "HTTP connections one client address (IPv6: /64) may hold at once; --trusted-proxy networks are exempt.")
    var maxConnectionsPerAddress = 64
    @Option(help: "Address of the metrics endpoint (/metrics, /healthz, /readyz); keep it internal.")
    var metricsHost = "127.0.0.1"
    @Option(help: "Port of the metrics endpoint (0: none).")
    var metricsPort = 9090
    @Option(help: "Seconds a draining transceiver (first SIGTERM, or POST /admin/drain) waits for its calls to end before it ends them.")
    var drainTimeout: Double = 3600
    @Option(help: "DTLS library: boringssl (DTLS 1.3 to clients that offer it, 1.2 to the rest) or openssl (1.2 only).")
    var dtls = DTLSLibrary.boringssl

    func validate() throws {
        for entry in namedAgents {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, AgentChoice(rawValue: parts[0]) == nil,
                  case .webSocket? = AgentTarget(parts[1]) else {
                throw ValidationError("--named-agent \(entry): expected NAME=ws://host:port/path (a name other than a built-in agent's)")
            }
        }
        for network in trustedProxies where IPNetwork(network) == nil {
            throw ValidationError("--trusted-proxy \(network): expected a.b.c.d/n or an IPv6 prefix")
        }
        guard ratePerAddress > 0, ratePerKey > 0, burstPerAddress >= 1, burstPerKey >= 1, maxCallsPerKey >= 1, maxSessions >= 1 else {
            throw ValidationError("rates must be positive, bursts and call limits at least 1")
        }
        guard httpHeaderTimeout > 0, httpBodyTimeout > 0, httpIdleTimeout > 0, maxConnections >= 1, maxConnectionsPerAddress >= 1,
              drainTimeout >= 0 else {
            throw ValidationError("HTTP timeouts must be positive, --max-connections at least 1, --drain-timeout not negative")
        }
        guard (0...65535).contains(metricsPort) else { throw ValidationError("--metrics-port must be 0…65535") }
        guard AgentTarget(agent) != nil else {
            throw ValidationError("--agent \(agent): expected \(AgentChoice.allCases.map(\.rawValue).joined(separator: ", ")) or a ws:// or wss:// URL")
        }
        guard (1...256).contains(workers) else { throw ValidationError("--workers must be 1…256") }
        guard IPv4Address(mediaHost) != nil else { throw ValidationError("--media-host must be an IPv4 address") }
        guard (0...65535).contains(httpPort) else { throw ValidationError("--http-port must be 0…65535") }
        guard mediaPort == 0 || (1...(65536 - workers)).contains(mediaPort) else {
            throw ValidationError("--media-port must leave a port for each of the \(workers) workers (1…\(65536 - workers), or 0)")
        }
        for address in advertised where TransportAddress(address) == nil {
            throw ValidationError("--advertise \(address): expected host:port")
        }
    }

    /// The keys of --client-secret-key-file, or nil without one.
    func clientSecretKeyring() throws -> RoutingKeyring? {
        try clientSecretKeyFile.map { try readKeyFile($0, option: "--client-secret-key-file") }
    }

    func configuration(keyring: RoutingKeyring) throws -> TransceiverConfiguration {
        var configuration = TransceiverConfiguration(keyring: keyring)
        configuration.clientSecretKeyring = try clientSecretKeyring()
        configuration.httpHost = httpHost
        configuration.httpPort = httpPort
        configuration.mediaHost = mediaHost
        configuration.mediaPort = mediaPort
        configuration.workers = workers
        configuration.dtlsLibrary = dtls
        configuration.advertisedAddresses = advertised.compactMap(TransportAddress.init)
        configuration.agent = AgentTarget(agent) ?? .builtIn(.echo)
        configuration.agentTrustRootsFile = agentCa
        for entry in namedAgents {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, let target = AgentTarget(parts[1]) { configuration.namedAgents[parts[0]] = target }
        }
        configuration.requireAuthentication = !insecureNoAuth
        configuration.trustedProxies = trustedProxies.compactMap(IPNetwork.init)
        configuration.admission.callsPerSecondPerAddress = ratePerAddress
        configuration.admission.callBurstPerAddress = burstPerAddress
        configuration.admission.callsPerSecondPerKey = ratePerKey
        configuration.admission.callBurstPerKey = burstPerKey
        configuration.admission.maximumCallsPerKey = maxCallsPerKey
        configuration.admission.maximumSessions = maxSessions
        configuration.http.headerTimeout = .milliseconds(Int64(saturating: httpHeaderTimeout * 1000))
        configuration.http.bodyTimeout = .milliseconds(Int64(saturating: httpBodyTimeout * 1000))
        configuration.http.idleTimeout = .milliseconds(Int64(saturating: httpIdleTimeout * 1000))
        configuration.http.maximumConnections = maxConnections
        configuration.http.maximumConnectionsPerAddress = maxConnectionsPerAddress
        configuration.drainTimeout = .milliseconds(Int64(saturating: drainTimeout * 1000))
        return configuration
    }

    /// The API keys from --api-key, PARLEY_API_KEYS and --api-key-file, in that order.
    func loadAPIKeys() throws -> [String] {
        var keys = apiKeys
        if let environment = ProcessInfo.processInfo.environment["PARLEY_API_KEYS"] {
            keys += environment.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if let apiKeyFile {
            let text: String
            do { text = try String(contentsOfFile: apiKeyFile, encoding: .utf8) } catch {
                throw StartupError("cannot read --api-key-file \(apiKeyFile): \(error.localizedDescription)")
            }
            keys += text.split(whereSeparator: \.isNewline).map { $0.prefix { $0 != "#" }.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
        }
        do { _ = try APIKeys(keys) } catch { throw StartupError(error.message) }
        return keys
    }

    var metricsListener: MetricsListener? { metricsPort > 0 ? MetricsListener(host: metricsHost, port: metricsPort) : nil }
}

/// Where /metrics (with /healthz and /readyz) is served: its own listener, kept off the public port.
struct MetricsListener {
    var host: String
    var port: Int
}

/// A key file (`ID HEX [current]` per line) as a keyring; errors name the option and the line.
func readKeyFile(_ path: String, option: String) throws -> RoutingKeyring {
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw StartupError("cannot read \(option) \(path): \(error.localizedDescription)")
    }
    do { return try RoutingKeyFile.parse(text) } catch {
        throw StartupError("\(option) \(path), \(error.description)")
    }
}

/// The routing key every relay and transceiver of a cluster shares ([protocol.md](docs/protocol.md)).
struct RoutingKeyOptions: ParsableArguments {
    @Option(help: "Routing key: 64 hex characters shared by relays and transceivers (or env PARLEY_ROUTING_KEY).")
    var routingKey: String?
    @Option(help: "Id (0–15) of the routing key.")
    var routingKeyID: UInt8 = 0
    @Option(help: "A file of routing keys, `ID HEX` per line, the sealing one marked `current` (required with more than one key); reloaded on SIGHUP. Rotate keys with it (docs/operations.md).")
    var routingKeyFile: String?

    func validate() throws {
        guard routingKeyID < 16 else { throw ValidationError("--routing-key-id must be 0…15") }
        if routingKeyFile != nil, routingKey != nil { throw ValidationError("give --routing-key or --routing-key-file, not both") }
        if let hex = routingKey ?? ProcessInfo.processInfo.environment["PARLEY_ROUTING_KEY"] {
            guard RoutingKey(id: routingKeyID, hexSecret: hex) != nil else {
                let source = routingKey != nil ? "--routing-key" : "PARLEY_ROUTING_KEY"
                throw ValidationError("\(source): expected 64 hex characters (32 random bytes), got \(hex.count) characters. "
                                      + "Make one with `openssl rand -hex 32` and give the same one to every relay and transceiver")
            }
        }
    }

    func keyring() throws -> RoutingKeyring {
        if let routingKeyFile { return try readKeyFile(routingKeyFile, option: "--routing-key-file") }
        guard let hex = routingKey ?? ProcessInfo.processInfo.environment["PARLEY_ROUTING_KEY"],
              let key = RoutingKey(id: routingKeyID, hexSecret: hex) else {
            throw StartupError("a routing key is required: --routing-key or PARLEY_ROUTING_KEY, 64 hex characters "
                               + "shared by every relay and transceiver. Make one with `openssl rand -hex 32`")
        }
        return RoutingKeyring(current: key)
    }
}

struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Relay, transceiver, built-in echo agent and demo page in one process, with in-memory defaults.",
        discussion: "Clients reach the relay on --media-host:--media-port; the transceiver's workers listen on internal loopback ports."
    )

    @OptionGroup var serving: ServingOptions
    @Option(name: .customLong("public-host"),
            help: "The relay's public address, IPv4 or IPv6 (default: --media-host; repeat for both families, e.g. --public-host 0.0.0.0 --public-host ::). A wildcard takes calls from other machines, whose addresses the answers then advertise.")
    var publicHosts: [String] = []
    @Flag(help: "Share the public UDP port with a process that already holds it, on purpose (without it a port in use is refused).")
    var takeOverPort = false
    @Option(help: "ICE-TCP: the relay's public TCP port (default: the UDP port's number; 0: no TCP).")
    var publicTcpPort: Int?
    @Flag(help: "Skip the relay: the transceiver's workers take client traffic directly (worker i on --media-port + i).")
    var direct = false
    @Option(help: "Route-store lookups each relay worker may start per second (see `parley relay --help`).")
    var storeLookupRate = 1000

    func validate() throws {
        guard storeLookupRate >= 1 else { throw ValidationError("--store-lookup-rate must be at least 1") }
        if let publicTcpPort, !(0...65535).contains(publicTcpPort) { throw ValidationError("--public-tcp-port must be 0…65535") }
        if let problem = RelayConfiguration.publicHostsProblem(publicHosts.isEmpty ? [serving.mediaHost] : publicHosts) {
            throw ValidationError("--public-host: \(problem)")
        }
        if direct, publicHosts.count > 1 || publicHosts.contains(where: { IPv4Address($0) == nil }) {
            throw ValidationError("--direct takes one IPv4 --public-host (the workers bind it); IPv6 calls go through the relay")
        }
    }

    func run() async throws {
        let logger = bootstrapObservability(level: serving.logLevel)
        let keyring = TransceiverConfiguration.randomKeyring()
        var configuration = try serving.configuration(keyring: keyring)
        // Zero setup: without a key of its own, dev makes one (and prints it) for the app's server.
        var apiKeys = try serving.loadAPIKeys()
        var generatedKey = false
        if apiKeys.isEmpty, !serving.insecureNoAuth {
            var generator = SystemRandomNumberGenerator()
            apiKeys = [APIKeys.generate(using: &generator)]
            generatedKey = true
        }
        configuration.apiKeys = apiKeys
        let dev = DevServing(key: apiKeys.first, generated: generatedKey)
        let publicHosts = self.publicHosts.isEmpty ? [serving.mediaHost] : self.publicHosts
        guard !direct else {
            if configuration.advertisedAddresses.isEmpty, publicHosts == ["0.0.0.0"] {
                configuration.advertisedAddresses = localAddresses(port: UInt16(clamping: serving.mediaPort))
            }
            configuration.mediaHost = publicHosts[0]
            return try await serve(configuration, logger: logger, metrics: serving.metricsListener, dev: dev,
                                   banner: Banner(mode: "direct (no relay): the workers take client traffic themselves",
                                                  agent: serving.agent, advertised: configuration.advertisedAddresses))
        }

        // The relay owns the public port; the transceiver hides behind it on loopback.
        let loopback = IPNetwork("127.0.0.0/8")!
        var relayConfiguration = RelayConfiguration(keyring: keyring)
        relayConfiguration.publicHosts = publicHosts
        relayConfiguration.publicPort = serving.mediaPort
        relayConfiguration.takeOverPort = takeOverPort
        relayConfiguration.publicTCP = switch publicTcpPort {
        case nil: .sameAsUDP
        case 0?: .none
        case let port?: .port(port)
        }
        // Zero setup: a TCP port someone else holds leaves ICE-TCP out with a warning; one asked for must be had.
        relayConfiguration.tcpOptional = publicTcpPort == nil
        relayConfiguration.internalHost = "127.0.0.1"
        relayConfiguration.workers = serving.workers
        relayConfiguration.storeLookupsPerSecond = storeLookupRate
        relayConfiguration.policy.workerNetworks = [loopback]
        let relay = Relay(configuration: relayConfiguration, store: InMemoryRouteStore(), logger: logger)
        try await relay.start()
        configuration.mediaHost = "127.0.0.1"
        configuration.mediaPort = 0
        configuration.relayNetworks = [loopback]
        let relayPort = UInt16(clamping: relay.publicPort ?? serving.mediaPort)
        // TCP candidates beside the relay's own addresses; not beside --advertise ones (their TCP port is not known).
        if configuration.advertisedAddresses.isEmpty {
            configuration.advertisedTCPPort = relay.publicTCPPort.map { UInt16(clamping: $0) }
        }
        if configuration.advertisedAddresses.isEmpty {
            configuration.advertisedAddresses = publicHosts.flatMap { advertisedAddresses(host: $0, port: relayPort) }
        }
        let listening = publicHosts.map { RelayConfiguration.hostAndPort($0, Int(relayPort)) }.joined(separator: " and ")
        do {
            try await serve(configuration, logger: logger, metrics: serving.metricsListener, dev: dev,
                            banner: Banner(mode: "relay on UDP \(listening)\(relay.publicTCPPort.map { " and TCP \($0)" } ?? "") in front of the transceiver",
                                           agent: serving.agent, advertised: configuration.advertisedAddresses))
        } catch {
            await relay.shutdown()
            throw error
        }
        await relay.shutdown()
    }
}

struct TransceiverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transceiver",
        abstract: "Signaling API and WebRTC sessions (ICE lite, DTLS-SRTP) bridged to the agent."
    )

    @OptionGroup var serving: ServingOptions
    @OptionGroup var key: RoutingKeyOptions
    @Option(help: "Cluster id written into routing tokens.")
    var clusterID: UInt16 = 0
    @Option(name: .customLong("relay-network"),
            help: "Network the relays live in, e.g. 10.0.0.0/8 (repeat): only their tunnel datagrams are believed.")
    var relayNetworks: [String] = []
    @Option(help: "The address relays reach this transceiver's workers at (the pod IP), written into routing tokens (default: --media-host).")
    var workerHost: String?
    @Flag(help: "Serve the demo page at / (it takes a client secret from ?client_secret=ek_…; nothing mints one for it).")
    var demoPage = false
    @Option(name: .customLong("relay"),
            help: ArgumentHelp("A public relay address by region, REGION=HOST:PORT (repeat; IPv6 in brackets). Answers list the client's region's relays first, the others after them for failover; replaces --advertise.",
                               valueName: "region=host:port"))
    var relays: [String] = []
    @Option(help: "This transceiver's region: the client's region when neither the header nor a client network says otherwise.")
    var region = "default"
    @Option(help: "The request header the edge (CDN, load balancer) sets to the client's region.")
    var regionHeader = "X-Parley-Region"
    @Option(name: .customLong("client-region"),
            help: ArgumentHelp("Clients in a network belong to a region: CIDR=REGION (repeat; the first match counts).", valueName: "cidr=region"))
    var clientRegions: [String] = []
    @Option(help: ArgumentHelp("ICE-TCP: the relays' public TCP port (their --public-tcp-port); each relay address in an answer also gets a passive TCP candidate there, below the UDP ones (0: none).",
                               valueName: "port"))
    var advertiseTcpPort = 443

    func relayDirectory() -> RelayDirectory? {
        guard !relays.isEmpty else { return nil }
        var directory = RelayDirectory(ownRegion: region)
        for entry in relays { if let (name, address) = RelayDirectory.parseRelay(entry) { directory.add(address, region: name) } }
        directory.clientNetworks = clientRegions.compactMap(RelayDirectory.parseClientRegion)
        return directory
    }

    func validate() throws {
        for entry in relays where RelayDirectory.parseRelay(entry) == nil {
            throw ValidationError("--relay \(entry): expected REGION=HOST:PORT with an IP address, e.g. eu-west=203.0.113.5:3478")
        }
        for entry in clientRegions where RelayDirectory.parseClientRegion(entry) == nil {
            throw ValidationError("--client-region \(entry): expected CIDR=REGION, e.g. 198.51.100.0/24=eu-west")
        }
        guard RelayDirectory.isRegionName(region) else { throw ValidationError("--region \(region): letters, digits, - _ . (1–64)") }
        // An HTTP token (RFC 9110 §5.6.2): letters, digits and !#$%&'*+-.^_`|~.
        guard !regionHeader.isEmpty, regionHeader.utf8.allSatisfy({ byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }) else { throw ValidationError("--region-header \(regionHeader) is not a header name") }
        if !relays.isEmpty, !serving.advertised.isEmpty { throw ValidationError("give --relay or --advertise, not both") }
        if let workerHost, IPv4Address(workerHost) == nil { throw ValidationError("--worker-host must be an IPv4 address") }
        guard (0...65535).contains(advertiseTcpPort) else { throw ValidationError("--advertise-tcp-port must be 0…65535") }
        for network in relayNetworks where IPNetwork(network) == nil {
            throw ValidationError("--relay-network \(network): expected a.b.c.d/n or an IPv6 prefix such as fd00::/8")
        }
    }

    func run() async throws {
        let logger = bootstrapObservability(level: serving.logLevel)
        var configuration = try serving.configuration(keyring: try key.keyring())
        configuration.clusterID = clusterID
        configuration.relayNetworks = relayNetworks.compactMap(IPNetwork.init)
        configuration.workerEndpointHost = workerHost.flatMap { IPv4Address($0) }
        configuration.relayDirectory = relayDirectory()
        configuration.regionHeader = regionHeader
        configuration.advertisedTCPPort = advertiseTcpPort == 0 ? nil : UInt16(clamping: advertiseTcpPort)
        configuration.apiKeys = try serving.loadAPIKeys()
        guard !configuration.apiKeys.isEmpty || serving.insecureNoAuth else {
            throw StartupError("a transceiver on a network needs API keys: --api-key, PARLEY_API_KEYS or --api-key-file "
                               + "(make one with `openssl rand -hex 24`). Only where no one else can reach it: --insecure-no-auth")
        }
        if serving.insecureNoAuth {
            logger.warning("--insecure-no-auth: anyone who reaches the signaling port can make, read and end calls")
        }
        let key = self.key, serving = self.serving
        try await serve(configuration, logger: logger, metrics: serving.metricsListener, demoPage: demoPage) {
            // SIGHUP: the key files again (a key given on the command line stays as it is).
            KeyReload(routing: try key.keyring(), clientSecrets: try serving.clientSecretKeyring(),
                      apiKeys: serving.apiKeyFile != nil ? try serving.loadAPIKeys() : nil)
        }
    }
}

struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "The public UDP forwarder: routes each flow by the token in its first STUN check.",
        discussion: """
            The first SIGTERM or SIGINT (or POST /admin/drain on the metrics listener) drains the relay: \
            no new flows, /readyz answers 503, committed routes keep forwarding; it exits once they have \
            all idled out or --drain-timeout passes. A second signal exits at once (docs/relay.md).
            """
    )

    @Option(name: .customLong("public-host"),
            help: "Address clients send to, IPv4 or IPv6 (default 0.0.0.0; repeat for both families, one address each: --public-host 0.0.0.0 --public-host ::).")
    var publicHosts: [String] = []
    @Option(help: "The one public UDP port (every worker binds it with SO_REUSEPORT).")
    var publicPort = 3478
    @Option(help: "ICE-TCP: the public TCP port on the same hosts, for clients whose networks block UDP (RFC 6544; default 443, left out with a warning when it cannot be bound; 0: no TCP). Below 1024 needs root or CAP_NET_BIND_SERVICE.")
    var publicTcpPort: Int?
    @Option(help: "Address the workers talk to transceivers from.")
    var internalHost = "127.0.0.1"
    @Option(help: "This relay's cluster (Global Relay): tokens naming another cluster go to that cluster's --cluster-relay.")
    var clusterID: UInt16 = 0
    @Option(name: .customLong("cluster-relay"),
            help: ArgumentHelp("Another cluster's relay, by its id: ID=HOST:PORT, the internal address of its worker 0 (repeat; symmetric: each side names the other). Flows whose tokens name that cluster are forwarded there; tunnel datagrams from that host are believed (docs/global-relay.md).",
                               valueName: "id=host:port"))
    var clusterRelays: [String] = []
    @Option(name: .customLong("peer-network"),
            help: ArgumentHelp("Where other clusters' relays forward from, when not their --cluster-relay address: e.g. another region's node or NAT network behind its relays' load balancer (repeat; docs/kubernetes.md).",
                               valueName: "cidr"))
    var peerNetworks: [String] = []
    @Option(help: "Internal UDP port of worker 0; worker i binds port + i (0: any free port).")
    var internalPort = 0
    @Option(help: "Worker threads, each pinned to a core (one per core by default).")
    var workers = System.coreCount
    @OptionGroup var key: RoutingKeyOptions
    @Option(name: .customLong("worker-network"),
            help: "Network transceiver workers live in, e.g. 10.0.0.0/8 (repeat; tokens naming anything else are refused).")
    var workerNetworks: [String] = []
    @Option(help: ArgumentHelp(
        "Redis for the route store: redis://[user[:password]@]host[:port][/db], rediss://… for TLS, or host:port "
            + "(or env PARLEY_REDIS_URL, which keeps the password off the command line; default: in memory).",
        valueName: "url"))
    var redis: String?
    @Option(help: ArgumentHelp("PEM certificates a rediss:// server's certificate may chain to (default: the system's roots).",
                               valueName: "file"))
    var redisCa: String?
    @Option(help: ArgumentHelp("The name a rediss:// server's certificate is checked against, and sent as SNI (default: the URL's host).",
                               valueName: "name"))
    var redisTlsServerName: String?
    @Flag(help: "Share the public port with a relay that already holds it, on purpose: how a new relay replaces a running one (without it a port in use is refused).")
    var takeOverPort = false
    @Option(help: "Route-store lookups each worker may start per second (unknown flows; a flood costs the store no more).")
    var storeLookupRate = 1000
    @Option(help: ArgumentHelp("Seconds without traffic after which a committed route is forgotten (10–86400).", valueName: "seconds"))
    var routeIdleTimeout = 60
    @Option(help: ArgumentHelp("Seconds a draining relay waits for its routes to idle out before it exits (0: exit at the first signal).",
                               valueName: "seconds"))
    var drainTimeout = 3600
    @Option(help: "Address of the metrics and health endpoint (/metrics, /healthz, /readyz, POST /admin/drain); internal only, no authentication.")
    var metricsHost = "127.0.0.1"
    @Option(help: "Port of the metrics and health endpoint (0: none).")
    var metricsPort = 9090
    @Option(help: "Log level.")
    var logLevel = "info"

    /// The route store's Redis, from --redis or else PARLEY_REDIS_URL (an empty one counts as unset).
    func redisEndpoint() throws -> RedisEndpoint? {
        let environment = ProcessInfo.processInfo.environment["PARLEY_REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 }
        guard let text = redis ?? environment else { return nil }
        let source = redis != nil ? "--redis" : "PARLEY_REDIS_URL"
        do {
            return try RedisEndpoint(parsing: text)
        } catch {
            throw ValidationError("\(source) \(RedisEndpoint.redact(text)): \(error)")
        }
    }

    /// --cluster-relay values by cluster id (validated in `validate`).
    func clusterRelayAddresses() throws -> [UInt16: TransportAddress] {
        var relays: [UInt16: TransportAddress] = [:]
        for entry in clusterRelays {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let id = UInt16(parts[0]), let address = TransportAddress(parts[1]) else {
                throw ValidationError("--cluster-relay \(entry): expected ID=HOST:PORT with an IP address, e.g. 2=10.2.0.9:3479")
            }
            guard id != clusterID else { throw ValidationError("--cluster-relay \(entry): that is this relay's own --cluster-id") }
            guard relays[id] == nil else { throw ValidationError("--cluster-relay: cluster \(id) is named twice") }
            relays[id] = address
        }
        return relays
    }

    func validate() throws {
        if let problem = RelayConfiguration.publicHostsProblem(publicHosts.isEmpty ? ["0.0.0.0"] : publicHosts) {
            throw ValidationError("--public-host: \(problem)")
        }
        _ = try clusterRelayAddresses()
        for network in peerNetworks where IPNetwork(network) == nil {
            throw ValidationError("--peer-network \(network): expected a.b.c.d/n or an IPv6 prefix")
        }
        if !peerNetworks.isEmpty, clusterRelays.isEmpty {
            throw ValidationError("--peer-network needs the --cluster-relay it stands behind (answers go there)")
        }
        for network in workerNetworks where IPNetwork(network) == nil {
            throw ValidationError("--worker-network \(network): expected a.b.c.d/n or an IPv6 prefix such as fd00::/8")
        }
        guard !workerNetworks.isEmpty else { throw ValidationError("at least one --worker-network is required") }
        let endpoint = try redisEndpoint()
        if endpoint?.tls != true {
            if redisCa != nil { throw ValidationError("--redis-ca applies to a rediss:// (TLS) route store only") }
            if redisTlsServerName != nil { throw ValidationError("--redis-tls-server-name applies to a rediss:// (TLS) route store only") }
        }
        if let redisTlsServerName, redisTlsServerName.isEmpty || IPv4Address(redisTlsServerName) != nil || redisTlsServerName.contains(":") {
            throw ValidationError("--redis-tls-server-name must be a host name (an IP address is checked without it)")
        }
        guard storeLookupRate >= 1 else { throw ValidationError("--store-lookup-rate must be at least 1") }
        guard (10...86400).contains(routeIdleTimeout) else {
            throw ValidationError("--route-idle-timeout must be 10…86400 seconds (consent checks every 4–6 s keep a live call inside it)")
        }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout must be 0 or more seconds") }
        if let publicTcpPort, !(0...65535).contains(publicTcpPort) { throw ValidationError("--public-tcp-port must be 0…65535") }
    }

    func run() async throws {
        // First, so a SIGTERM during startup is a drain request, not the default exit.
        let signals = ProcessSignals()
        let logger = bootstrapObservability(level: logLevel)
        var configuration = RelayConfiguration(keyring: try key.keyring())
        configuration.publicHosts = publicHosts.isEmpty ? ["0.0.0.0"] : publicHosts
        configuration.publicPort = publicPort
        configuration.publicTCP = publicTcpPort == 0 ? .none : .port(publicTcpPort ?? 443)
        configuration.tcpOptional = publicTcpPort == nil
        configuration.internalHost = internalHost
        configuration.internalPort = internalPort
        configuration.workers = workers
        configuration.storeLookupsPerSecond = storeLookupRate
        configuration.takeOverPort = takeOverPort
        configuration.policy.workerNetworks = workerNetworks.compactMap(IPNetwork.init)
        configuration.policy.idleTimeout = .seconds(routeIdleTimeout)
        configuration.policy.clusterID = clusterID
        configuration.policy.clusterRelays = try clusterRelayAddresses()
        configuration.policy.peerNetworks = peerNetworks.compactMap(IPNetwork.init)
        let storeGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let store: RouteStore
        if let endpoint = try redisEndpoint() {
            do {
                store = try RedisRouteStore(endpoint: endpoint, trustRootsFile: redisCa, tlsServerName: redisTlsServerName,
                                            eventLoop: storeGroup.next(), logger: logger)
            } catch {
                throw StartupError("--redis-ca: \(error)")
            }
        } else {
            store = InMemoryRouteStore()
        }
        let relay = Relay(configuration: configuration, store: store, logger: logger)
        try await relay.start()

        // Everything that moves the drain along arrives on one stream, handled in order below.
        let (events, eventSink) = AsyncStream.makeStream(of: DrainEvent.self)
        var services: ServiceGroup?
        if metricsPort > 0 {
            let app = Application(router: relayRouter(relay: relay, drainRequests: eventSink),
                                  configuration: .init(address: .hostname(metricsHost, port: metricsPort)), logger: logger)
            services = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        }
        // Outside the task group below: it is stopped gracefully (open requests answered), not cancelled.
        let listener = services.map { services in
            Task {
                do {
                    try await services.run()
                } catch {
                    logger.error("metrics endpoint failed; relaying without it", metadata: ["error": "\(error)"])
                }
            }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await arrival in signals.arrivals { eventSink.yield(.signal(arrival)) }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(500))
                    eventSink.yield(.tick)
                }
            }
            var drain = RelayDrain(timeout: .seconds(drainTimeout))
            var trigger = ""
            eventLoop: for await event in events {
                let now = monotonicNow()
                let action: RelayDrain.Action
                switch event {
                case .signal(let arrival) where arrival.isReload:
                    relay.reloadRoutingKeys(from: key, logger: logger)
                    continue
                case .signal(let arrival):
                    trigger = arrival.name
                    action = drain.terminationSignal(now: now)
                    if action == .none, drain.isDraining {
                        logger.info("\(arrival.name) while draining: still draining (a second signal exits at once)")
                    }
                case .drainRequested:
                    trigger = "POST /admin/drain"
                    action = drain.drainRequested(now: now)
                case .tick:
                    action = drain.tick(now: now, liveRoutes: relay.routeCounts.committedWhileDraining)
                }
                switch action {
                case .none:
                    continue
                case .startDraining:
                    relay.startDraining()
                    let counts = relay.routeCounts
                    logger.notice("relay draining: no new flows, /readyz answers 503; committed routes keep forwarding", metadata: [
                        "trigger": "\(trigger)",
                        "committed_routes": "\(counts.committed)", "pending_routes": "\(counts.pending)",
                        "drain_timeout_s": "\(drainTimeout)", "route_idle_timeout_s": "\(routeIdleTimeout)",
                    ])
                case .reportProgress(let remaining, let elapsed):
                    logger.notice("relay draining", metadata: ["routes_remaining": "\(remaining)", "elapsed_s": "\(elapsed.components.seconds)"])
                case .stop(let reason):
                    switch reason {
                    case .drained: logger.notice("relay drained: no committed route left; exiting")
                    case .timedOut(let remaining):
                        logger.warning("drain timeout passed; exiting with routes still live", metadata: ["routes_remaining": "\(remaining)"])
                    case .interrupted: logger.notice("second termination signal: exiting at once", metadata: [
                        "routes_remaining": "\(relay.routeCounts.committed)",
                    ])
                    }
                    break eventLoop
                }
            }
            group.cancelAll()
        }
        await services?.triggerGracefulShutdown()
        await listener?.value
        logger.info("relay stopping")
        await relay.shutdown()
        (store as? RedisRouteStore)?.shutdown()
        try? await storeGroup.shutdownGracefully()
    }
}

extension Relay {
    /// SIGHUP: the --routing-key-file read again and given to every worker. Committed routes forward
    /// by address and never reopen a token, so calls whose tokens were sealed with a key now retired
    /// go on; only new flows need a key of the new ring.
    fileprivate func reloadRoutingKeys(from options: RoutingKeyOptions, logger: Logger) {
        guard options.routingKeyFile != nil else {
            logger.notice("SIGHUP: nothing to reload (no --routing-key-file)")
            return
        }
        do {
            let keyring = try options.keyring()
            replaceKeyring(keyring)
            logger.notice("routing keys reloaded", metadata: ["routing_keys": "\(keyring.keyIDs)", "sealing_key": "\(keyring.currentKeyID)"])
        } catch {
            logger.error("SIGHUP: routing keys not reloaded, the old ones stay", metadata: ["error": "\(error)"])
        }
    }
}

/// What moves a relay's drain along (RelayDrain decides what each means).
enum DrainEvent: Sendable {
    case signal(ProcessSignals.Arrival)
    case drainRequested
    case tick
}

/// The relay's internal listener: metrics, liveness, readiness, and the drain request. It has no
/// authentication: it must listen on an internal address only (127.0.0.1 by default).
func relayRouter(relay: Relay, drainRequests: AsyncStream<DrainEvent>.Continuation) -> Router<BasicRequestContext> {
    let router = Router()
    // Alive while the process is sound, draining or not.
    router.get("/healthz") { _, _ in "ok\n" }
    // Ready for new calls: not while draining, so the load balancer sends them elsewhere.
    router.get("/readyz") { _, _ -> Response in
        let draining = relay.isDraining
        return Response(status: draining ? .serviceUnavailable : .ok, headers: [.contentType: "text/plain"],
                        body: .init(byteBuffer: ByteBuffer(string: draining ? "draining\n" : "ready\n")))
    }
    router.post("/admin/drain") { _, _ -> Response in
        drainRequests.yield(.drainRequested)
        return Response(status: .accepted, headers: [.contentType: "text/plain"],
                        body: .init(byteBuffer: ByteBuffer(string: "draining\n")))
    }
    router.get("/metrics") { _, _ -> Response in
        var bytes: [UInt8] = []
        prometheusRegistry.emit(into: &bytes)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
    return router
}

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "WebRTC load: N sessions against any endpoint that takes an SDP offer, 50 packets/s each way.",
        discussion: "Prints a progress line every second (standard error) and a JSON report at the end (standard output)."
    )

    @Option(help: "The endpoint that takes SDP offers.")
    var url = "http://127.0.0.1:8080/v1/realtime/calls"
    @Option(help: "Number of sessions.")
    var sessions = 1
    @Option(help: "Seconds each session sends audio once connected.")
    var duration: Double = 10
    @Option(help: "Seconds over which the sessions start (0: all at once).")
    var ramp: Double = 0
    @Option(help: "RTP payload bytes per 20 ms frame.")
    var payloadBytes = 80
    @Flag(help: "Offer audio only: no data channel, no oai-events.")
    var noDataChannel = false
    @Flag(help: "Send real Opus (silence, a pulse each second) and time each pulse's return; works through transcoding agents.")
    var opusPulses = false
    @Flag(help: "WARP's client side: SNAP (a=sctp-init in the offer) and oai-events negotiated on stream 0 (?dcid=0), so no SCTP or DCEP handshake when the server answers in kind. The server must honour ?dcid (Parley does): otherwise the channel looks open and nothing echoes.")
    var warp = false
    @Option(help: "DTLS library of the clients: boringssl (offers DTLS 1.3 and 1.2) or openssl (1.2 only).")
    var dtls = DTLSLibrary.boringssl
    @Option(help: "The API key each offer carries as Authorization: Bearer (or env PARLEY_API_KEY).")
    var apiKey: String?

    func validate() throws {
        guard sessions >= 1 else { throw ValidationError("--sessions must be at least 1") }
        guard duration > 0, ramp >= 0 else { throw ValidationError("--duration must be positive and --ramp not negative") }
        guard !(warp && noDataChannel) else { throw ValidationError("--warp needs the data channel (it is what SNAP and ?dcid start)") }
        _ = try SignalingClient.parse(url: url)
    }

    func run() async throws {
        var configuration = LoadConfiguration(url: url, sessions: sessions, duration: .milliseconds(Int64(duration * 1000)),
                                              ramp: .milliseconds(Int64(ramp * 1000)))
        configuration.payloadBytes = payloadBytes
        configuration.dataChannel = !noDataChannel
        configuration.opusPulses = opusPulses
        configuration.warp = warp
        configuration.dtlsLibrary = dtls
        configuration.apiKey = apiKey ?? ProcessInfo.processInfo.environment["PARLEY_API_KEY"]
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let generator = try LoadGenerator(configuration: configuration, eventLoop: group.next())
        let report = try await generator.run { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        try await group.shutdownGracefully()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
        if let warning = report.client.warning { FileHandle.standardError.write(Data(("warning: " + warning + "\n").utf8)) }
        if report.connected < report.sessions { throw ExitCode(1) }
    }
}

struct BenchSCTP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-sctp",
        abstract: "Data-channel throughput, handshake cost and idle memory of ParleySCTP on one core (in memory).")

    @Option(help: "1 KiB messages to send (64 KiB and 256 KiB runs scale from it).")
    var messages = 20_000

    func run() throws {
        let summary = SCTPBenchmark.run(messages: messages)
        print("| message size | messages | messages/s | MB/s |")
        print("| ---: | ---: | ---: | ---: |")
        for row in summary.throughput {
            print("| \(row.messageSize) | \(row.messages) | \(Int(row.messagesPerSecond)) | \(String(format: "%.0f", row.megabytesPerSecond)) |")
        }
        print("")
        print("handshake (INIT … COOKIE ACK, both ends): \(String(format: "%.1f", summary.handshakeMicroseconds)) µs of CPU")
        print("memory per idle association: \(summary.idleAssociationBytes) bytes")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        FileHandle.standardError.write(try encoder.encode(summary) + Data("\n".utf8))
    }
}

/// Seals a routing token (an ICE ufrag) by hand: for benchmarks and debugging a relay.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a routing token (server ufrag) for a worker.",
                                                    shouldDisplay: false)

    @OptionGroup var key: RoutingKeyOptions
    @Option(help: "The transceiver worker, ip:port.")
    var worker: String
    @Option(help: "Cluster id.")
    var clusterID: UInt16 = 0

    func run() throws {
        let keyring = try key.keyring()
        guard let address = TransportAddress(worker) else { throw ValidationError("bad --worker") }
        var generator = SystemRandomNumberGenerator()
        let token = RoutingToken.random(keyID: keyring.currentKeyID, clusterID: clusterID, worker: address,
                                        issuedHour: RoutingToken.hour(unixSeconds: Int64(Date().timeIntervalSince1970)),
                                        using: &generator)
        print(keyring.seal(token))
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Parley's version and the C libraries it runs on.")

    func run() {
        print("parley \(parleyVersion)")
        for (name, version) in NativeLibraries.summary { print("  \(name): \(version)") }
    }
}

let parleyVersion = "0.1.0-dev"

/// Sets up swift-log (to standard error) and swift-metrics (Prometheus) for the process.
func bootstrapObservability(level: String) -> Logger {
    let logLevel = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = logLevel
        return handler
    }
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: prometheusRegistry))
    return Logger(label: "parley")
}

let prometheusRegistry = PrometheusCollectorRegistry()

/// An error at startup, said plainly (ArgumentParser prints it as `Error: …`, without the usage).
struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What `parley dev` prints once it listens: where to go, what answers, how calls reach it.
struct Banner {
    var mode: String
    var agent: String
    var advertised: [TransportAddress]
}

/// What SIGHUP reads again: the routing keys, the client-secret keys (nil: the routing keys seal
/// secrets), the API keys (nil: unchanged).
struct KeyReload: Sendable {
    var routing: RoutingKeyring
    var clientSecrets: RoutingKeyring?
    var apiKeys: [String]?
}

/// What `parley dev` adds to serving: the demo page with its client-secret route, and its key.
struct DevServing {
    var key: String?
    var generated: Bool
}

/// Runs a transceiver, its signaling API and its metrics listener. The first SIGTERM or SIGINT (or
/// `POST /admin/drain`) drains: `/readyz` answers 503, new offers are refused, live calls go on
/// until they end or the drain timeout passes, then the process stops. A second signal ends every
/// call at once. SIGHUP calls `reload` for new routing and API keys.
func serve(_ configuration: TransceiverConfiguration, logger: Logger, metrics: MetricsListener? = nil, dev: DevServing? = nil,
           demoPage: Bool = false, banner: Banner? = nil, reload: (@Sendable () throws -> KeyReload)? = nil) async throws {
    // First, so a SIGTERM while the workers start is a drain request, not the default exit.
    let signals = ProcessSignals()
    let transceiver = try Transceiver(configuration: configuration, logger: logger)
    do {
        try await transceiver.start()
    } catch let error as IOError {
        await transceiver.shutdown()
        throw StartupError("cannot bind the media workers' UDP ports on \(configuration.mediaHost) "
                           + "(--media-port \(configuration.mediaPort)): \(describe(error)). Is another parley running? "
                           + "Choose another --media-port, or 0 for any free one")
    } catch {
        await transceiver.shutdown()
        throw error
    }
    let drain = DrainController(transceiver: transceiver, timeout: configuration.drainTimeout, logger: logger)
    let api = SignalingAPI(transceiver: transceiver, demoPage: demoPage, devSecrets: dev.map { .init(key: $0.key) },
                           onDrain: { drain.start() })
    let router = api.makeRouter()
    let app = Application(
        router: router,
        server: SignalingServer.builder(router: router, limits: configuration.http, trustedProxies: configuration.trustedProxies,
                                        refused: { [refusals = Counter(label: "parley_signaling_refusals_total",
                                                                       dimensions: [("code", "too_many_connections")])] in
                                            refusals.increment()
                                        }),
        configuration: SignalingServer.configuration(host: configuration.httpHost, port: configuration.httpPort,
                                                     limits: configuration.http, logger: logger),
        onServerRunning: { _ in if let banner { printBanner(banner, configuration: configuration, metrics: metrics, dev: dev) } },
        logger: logger)
    var services = [ServiceGroupConfiguration.ServiceConfiguration(service: app)]
    if let metrics {
        // Off the public port; a listener that cannot bind costs the metrics, not the calls.
        services.append(.init(service: metricsApplication(metrics, transceiver: transceiver, logger: logger),
                              successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
    }
    let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [], logger: logger))
    // Forwarded sidebands (of other pods' calls) end first, with 1012: their app servers connect
    // again through another pod. A drain waits for this pod's calls only.
    drain.onFinished = { Task {
        await transceiver.closeForwardedSidebands()
        await group.triggerGracefulShutdown()
    } }
    logger.info("signaling API", metadata: ["url": "http://\(configuration.httpHost):\(configuration.httpPort)/"])

    let signalTask = Task {
        for await arrival in signals.arrivals {
            switch arrival.signal {
            case SIGHUP:
                guard let reload else {
                    logger.notice("SIGHUP: nothing to reload (no key files given)")
                    continue
                }
                do {
                    let keys = try reload()
                    try transceiver.reload(keyring: keys.routing, secretKeyring: keys.clientSecrets, apiKeys: keys.apiKeys)
                    logger.notice("keys reloaded", metadata: [
                        "routing_keys": "\(keys.routing.keyIDs)", "sealing_key": "\(keys.routing.currentKeyID)",
                        "client_secret_keys": "\(keys.clientSecrets.map { "\($0.keyIDs)" } ?? "the routing keys")",
                        "api_keys": "\(keys.apiKeys.map { "\($0.count)" } ?? "unchanged")",
                    ])
                } catch {
                    logger.error("SIGHUP: keys not reloaded, the old ones stay", metadata: ["error": "\(error)"])
                }
            default:
                // Counted by signal, not by drain state: a preStop hook's POST /admin/drain followed
                // by the kubelet's SIGTERM is one request to drain, not two.
                if arrival.ordinal >= 2 {
                    logger.notice("\(arrival.name), the second termination signal: ending every call now")
                    await transceiver.closeForwardedSidebands()
                    await group.triggerGracefulShutdown()
                } else if drain.isDraining {
                    logger.notice("\(arrival.name) while draining: still draining (a second signal ends every call at once)")
                } else {
                    drain.start()
                }
            }
        }
    }
    defer { signalTask.cancel() }
    do {
        try await group.run()
    } catch let error as IOError {
        await transceiver.shutdown()
        throw StartupError("cannot listen for HTTP on \(configuration.httpHost):\(configuration.httpPort): \(describe(error)). "
                           + "Is another parley running? Choose another --http-port")
    } catch {
        await transceiver.shutdown()
        throw error
    }
    let remaining = transceiver.activeCalls
    if remaining > 0 { logger.notice("ending the calls still live", metadata: ["calls": "\(remaining)"]) }
    await transceiver.shutdown()
    logger.info("stopped")
}

/// /metrics, /healthz and /readyz on their own (internal) listener.
func metricsApplication(_ listener: MetricsListener, transceiver: Transceiver, logger: Logger) -> some Service {
    let router = Router()
    router.get("/healthz") { _, _ in "ok\n" }
    router.get("/readyz") { _, _ -> Response in
        transceiver.isDraining
            ? Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "draining\n")))
            : Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
    }
    router.get("/metrics") { _, _ -> Response in
        var bytes: [UInt8] = []
        prometheusRegistry.emit(into: &bytes)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
    return Application(router: router, configuration: .init(address: .hostname(listener.host, port: listener.port), serverName: "parley-metrics"),
                       logger: logger)
}

/// A transceiver's drain: once started, new calls are refused; when the last call ends, or the
/// timeout passes, `onFinished` runs (the process then stops, ending what is left).
final class DrainController: @unchecked Sendable {
    private let transceiver: Transceiver
    private let timeout: Duration
    private let logger: Logger
    private let lock = NSLock()
    private var started = false
    var onFinished: @Sendable () -> Void = {}

    init(transceiver: Transceiver, timeout: Duration, logger: Logger) {
        self.transceiver = transceiver
        self.timeout = timeout
        self.logger = logger
    }

    var isDraining: Bool { lock.withLock { started } }

    func start() {
        let first = lock.withLock { () -> Bool in
            defer { started = true }
            return !started
        }
        guard first else { return }
        transceiver.startDraining()
        logger.notice("draining: new calls are refused, live calls go on (a second SIGTERM or SIGINT ends them now)", metadata: [
            "calls": "\(transceiver.callsInProgress)", "timeout": "\(timeout)",
        ])
        let transceiver = self.transceiver, timeout = self.timeout, logger = self.logger, onFinished = self.onFinished
        Task {
            let clock = ContinuousClock()
            let deadline = clock.now + timeout
            var lastReport = clock.now
            while transceiver.callsInProgress > 0, clock.now < deadline {
                try? await Task.sleep(for: .milliseconds(200))
                if clock.now - lastReport >= .seconds(10) {
                    lastReport = clock.now
                    logger.notice("draining", metadata: ["calls": "\(transceiver.callsInProgress)"])
                }
            }
            if transceiver.callsInProgress > 0 {
                logger.notice("drain timeout: ending the calls still live", metadata: ["calls": "\(transceiver.callsInProgress)"])
            } else {
                logger.notice("drained: no calls left")
            }
            onFinished()
        }
    }
}

/// An OS error as a person reads it: "address already in use (errno 98)".
func describe(_ error: IOError) -> String {
    "\(String(cString: strerror(error.errnoCode)).lowercased()) (errno \(error.errnoCode))"
}

func printBanner(_ banner: Banner, configuration: TransceiverConfiguration, metrics: MetricsListener?, dev: DevServing?) {
    let host = configuration.httpHost == "0.0.0.0" ? "127.0.0.1" : configuration.httpHost
    let candidates = banner.advertised.map { "\($0)" }.joined(separator: ", ")
    var lines = [
        "",
        "  Parley is running: open http://\(host):\(configuration.httpPort)/ and press Call.",
        "",
        "  agent       \(banner.agent)  (--agent echo|parrot|loopback|ws://…)",
        "  media       \(banner.mode)",
        "  answers     advertise \(candidates.isEmpty ? "the workers' own addresses" : candidates) as the ICE candidate",
        "  signaling   http://\(configuration.httpHost):\(configuration.httpPort)/v1/realtime/calls",
    ]
    if let key = dev?.key {
        lines.append("  API key     \(key)\(dev?.generated == true ? "  (made for this run; --api-key KEY to choose one)" : "")")
        lines.append("              the page gets client secrets from /dev/client_secret, as an app's server mints them with the key")
        if !configuration.httpHost.hasPrefix("127.") && configuration.httpHost != "::1" && configuration.httpHost != "localhost" {
            lines.append("  warning     --http-host \(configuration.httpHost): /dev/client_secret makes calls possible for anyone who reaches")
            lines.append("              this port (rate-limited per address). parley dev is for trying Parley; run `parley transceiver` to expose it.")
        }
    } else {
        lines.append("  API key     none: --insecure-no-auth, anyone who reaches the port can make calls")
    }
    if let metrics { lines.append("  metrics     http://\(metrics.host):\(metrics.port)/metrics") }
    if banner.advertised.allSatisfy({ "\($0)".hasPrefix("127.") || "\($0)".hasPrefix("[::1]") }) {
        lines += [
            "",
            "  Calls from this machine only. From elsewhere (a remote VM, a container): --http-host 0.0.0.0",
            "  --public-host 0.0.0.0, or --advertise <address clients can reach>:\(configuration.advertisedAddresses.first?.port ?? 3478).",
        ]
    }
    FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n\n").utf8))
}

/// The candidates a relay bound to `host` advertises: `host` itself, or for a wildcard this
/// machine's addresses of that family.
func advertisedAddresses(host: String, port: UInt16) -> [TransportAddress] {
    if let ip = IPv4Address(host) { return ip.bits == 0 ? localAddresses(port: port) : [.v4(ip, port: port)] }
    if let ip = IPv6Address(host) { return ip == IPv6Address(high: 0, low: 0) ? localAddresses(port: port, ipv6: true) : [.v6(ip, port: port)] }
    return []
}

/// This machine's IPv4 (or IPv6) addresses, non-loopback first, then loopback, as candidates on
/// `port`. IPv6 link-local addresses are left out: a candidate cannot carry their scope.
func localAddresses(port: UInt16, ipv6: Bool = false) -> [TransportAddress] {
    let fallback: TransportAddress = ipv6 ? .v6(IPv6Address(high: 0, low: 1), port: port) : .v4(IPv4Address(127, 0, 0, 1), port: port)
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return [fallback] }
    defer { freeifaddrs(list) }
    var external: [TransportAddress] = [], loopback: [TransportAddress] = []
    var cursor: UnsafeMutablePointer<ifaddrs>? = first
    while let entry = cursor {
        defer { cursor = entry.pointee.ifa_next }
        guard let address = entry.pointee.ifa_addr else { continue }
        let candidate: TransportAddress
        let isLoopback: Bool
        if !ipv6, address.pointee.sa_family == sa_family_t(AF_INET) {
            let ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { IPv4Address(bits: UInt32(bigEndian: $0.pointee.sin_addr.s_addr)) }
            candidate = .v4(ip, port: port)
            isLoopback = ip.bits >> 24 == 127
        } else if ipv6, address.pointee.sa_family == sa_family_t(AF_INET6) {
            let ip = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { raw in
                withUnsafeBytes(of: raw.pointee.sin6_addr) { IPv6Address(bytes: $0) }
            }
            guard ip.high >> 54 != 0x3FA else { continue }  // fe80::/10
            candidate = .v6(ip, port: port)
            isLoopback = ip == IPv6Address(high: 0, low: 1)
        } else {
            continue
        }
        guard !external.contains(candidate), !loopback.contains(candidate) else { continue }
        if isLoopback { loopback.append(candidate) } else { external.append(candidate) }
    }
    let found = external + loopback
    return found.isEmpty ? [fallback] : found
}

extension DTLSLibrary: ExpressibleByArgument {}
