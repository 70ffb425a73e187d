import ParleyDTLSLibrary
import ParleyMedia
import ParleySession
import ParleySignaling
import ParleyWire

/// Everything a transceiver process is told at start (command-line options or environment).
public struct TransceiverConfiguration: Sendable {
    /// Where the signaling API listens.
    public var httpHost = "127.0.0.1"
    public var httpPort = 8080
    /// Where the media workers bind; worker `i` binds `mediaPort + i`.
    public var mediaHost = "127.0.0.1"
    public var mediaPort = 3478
    public var workers = 1
    /// Addresses put in answers as ICE candidates, most preferred first. Empty: each worker's own
    /// bound address (direct mode, as `parley dev` runs).
    public var advertisedAddresses: [TransportAddress] = []
    /// ICE-TCP (RFC 6544): each advertised relay address (`advertisedAddresses` or the directory's)
    /// also gets a passive TCP candidate on this port, the relays' public TCP port, below every UDP
    /// one. Nil: none (and never for a worker's own address: workers take no TCP).
    public var advertisedTCPPort: UInt16?
    /// Public relays by region (Global Relay): when not empty, each answer advertises the relays of
    /// the client's region first and the others after them, instead of `advertisedAddresses`.
    public var relayDirectory: RelayDirectory?
    /// The request header the edge sets to the client's region (`--region-header`).
    public var regionHeader = "X-Parley-Region"
    /// The address written into routing tokens for worker 0 (others add their index to the port).
    /// Nil: the bound media address.
    public var workerEndpointHost: IPv4Address?
    /// Where other transceivers of the cluster reach this one's signaling API: sealed into call
    /// ids, so a request about a call that reaches another pod is forwarded here. The worker host
    /// (the pod's IP) or a specific HTTP host, and the HTTP port; an unspecified address (a wildcard
    /// listener and no worker host) cannot be forwarded to.
    public var signalingEndpoint: TransportAddress {
        let host = workerEndpointHost ?? IPv4Address(httpHost) ?? IPv4Address(0, 0, 0, 0)
        return .v4(host, port: UInt16(clamping: httpPort))
    }
    public var keyring: RoutingKeyring
    /// Sources whose tunnel datagrams (relay-forwarded, carrying a client address) are believed.
    /// Anyone else could claim any client address, so tunnel datagrams from elsewhere are dropped.
    public var relayNetworks: [IPNetwork] = []
    public var clusterID: UInt16 = 0
    public var dtls = DTLSConfiguration()
    /// BoringSSL answers DTLS 1.3 to clients that offer it and 1.2 to the rest; OpenSSL only 1.2.
    public var dtlsLibrary = DTLSLibrary.boringssl
    public var timeouts = SessionTimeouts()
    /// Per-socket kernel buffers: hundreds of calls share a socket, and the default (~200 KiB)
    /// drops packets in bursts long before the CPU is busy.
    public var socketBufferBytes = 4 * 1024 * 1024
    /// Rate limits, live calls per key and in all (docs/operations.md, "Limits").
    public var admission = AdmissionLimits()
    /// Refuse new calls beyond this many (503).
    public var maximumSessions: Int {
        get { admission.maximumSessions }
        set { admission.maximumSessions = newValue }
    }
    /// The keys client secrets are sealed with, when not the routing key's: every relay holds the
    /// routing key, and whoever holds the key secrets are sealed with can mint secrets. Only
    /// transceivers need this one (`--client-secret-key-file`).
    public var clientSecretKeyring: RoutingKeyring?
    /// The API keys requests authenticate with (`Authorization: Bearer …`); see docs/api.md.
    public var apiKeys: [String] = []
    /// False only with `--insecure-no-auth`: requests need no credential (they are all one owner's).
    public var requireAuthentication = true
    /// Proxies (load balancers) whose `X-Forwarded-For` is believed for a request's client address.
    public var trustedProxies: [IPNetwork] = []
    /// HTTP limits of the signaling listener.
    public var http = HTTPLimits()
    /// How long a draining transceiver waits for its calls to end before it ends them.
    public var drainTimeout: Duration = .seconds(3600)
    /// The agent a call talks to when its session names none.
    public var agent: AgentTarget = .builtIn(.echo)
    /// Agents a session may name (`session.agent`) besides the built-in ones: external agents by name.
    public var namedAgents: [String: AgentTarget] = [:]
    /// PEM certificates a `wss://` agent's certificate may chain to, instead of the system's roots.
    public var agentTrustRootsFile: String?

    public init(keyring: RoutingKeyring) {
        self.keyring = keyring
    }

    /// A keyring with one fresh random key: for a single process (`parley dev`), where nothing else
    /// needs to open its tokens.
    public static func randomKeyring() -> RoutingKeyring {
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return RoutingKeyring(current: RoutingKey(id: 0, secret: secret))
    }
}

extension TransceiverConfiguration {
    /// The names a session's `agent` may take: the built-in agents and the named ones.
    public var agentNames: Set<String> { Set(AgentChoice.allCases.map(\.rawValue)).union(namedAgents.keys) }

    /// The agent a session names (nil: the default one).
    public func agent(named name: String?) -> AgentTarget? {
        guard let name else { return agent }
        if let target = namedAgents[name] { return target }
        return AgentChoice(rawValue: name).map { .builtIn($0) }
    }
}

/// What the signaling listener allows a connection (slow or idle clients hold sockets and memory).
public struct HTTPLimits: Sendable, Equatable {
    /// A new connection must have sent its first request's head within this.
    public var headerTimeout: Duration = .seconds(10)
    /// A request's body must have arrived within this of its head.
    public var bodyTimeout: Duration = .seconds(10)
    /// A connection with no request in progress is closed after this.
    public var idleTimeout: Duration = .seconds(60)
    /// Connections open at once; past it the listener stops accepting until one closes.
    public var maximumConnections = 4096
    /// Connections one client address (IPv6: /64) may hold of those, trusted proxies aside.
    public var maximumConnectionsPerAddress = 64

    public init() {}
}

/// Which agent a call gets: a built-in one by name.
public enum AgentChoice: String, Sendable, CaseIterable {
    /// Immediate loopback of the caller's Opus frames and data-channel messages (no transcoding):
    /// the latency instrument.
    case echo
    /// Plays each utterance back once the caller stops; barge-in clears it (ParrotAgent).
    case parrot
    /// Returns the caller's decoded audio as its own at once, re-encoded (LoopbackAgent): the
    /// instrument for the transcoding path's latency and cost.
    case loopback
}

/// The agent a call talks to: a built-in one, or an external one over a WebSocket.
public enum AgentTarget: Sendable, Equatable, CustomStringConvertible {
    case builtIn(AgentChoice)
    case webSocket(AgentEndpoint)

    /// `echo`, `parrot`, or a `ws://` URL.
    public init?(_ text: String) {
        if let choice = AgentChoice(rawValue: text) {
            self = .builtIn(choice)
        } else if let endpoint = AgentEndpoint(url: text) {
            self = .webSocket(endpoint)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .builtIn(let choice): choice.rawValue
        case .webSocket(let endpoint): endpoint.description
        }
    }
}
