import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import Metrics
import NIOPosix
import ParleyClient
import ParleyMedia
import ParleyTransceiver
import ParleyWire
import Prometheus

@main
struct Parley: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "A WebRTC edge for voice AI: a relay on one public port, transceivers that own the sessions.",
        subcommands: [Dev.self, Relay.self, TransceiverCommand.self, Load.self, Version.self]
    )
}

/// Exit code for a subcommand whose implementation has not landed yet (EX_UNAVAILABLE).
let notImplementedExitCode: Int32 = 69

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
    @Option(help: "Media worker threads, one UDP port each (default: one per core).")
    var workers = System.coreCount
    @Option(name: .customLong("advertise"),
            help: "Address put in SDP answers as a candidate, e.g. 203.0.113.5:3478 (repeat for several; default: the worker's own).")
    var advertised: [String] = []
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard (1...256).contains(workers) else { throw ValidationError("--workers must be 1…256") }
        guard IPv4Address(mediaHost) != nil else { throw ValidationError("--media-host must be an IPv4 address") }
        for address in advertised where TransportAddress(address) == nil {
            throw ValidationError("--advertise \(address): expected host:port")
        }
    }

    func configuration(keyring: RoutingKeyring) -> TransceiverConfiguration {
        var configuration = TransceiverConfiguration(keyring: keyring)
        configuration.httpHost = httpHost
        configuration.httpPort = httpPort
        configuration.mediaHost = mediaHost
        configuration.mediaPort = mediaPort
        configuration.workers = workers
        configuration.advertisedAddresses = advertised.compactMap(TransportAddress.init)
        return configuration
    }
}

struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Transceiver, built-in echo agent and demo page in one process, with in-memory defaults."
    )

    @OptionGroup var serving: ServingOptions

    func run() async throws {
        let logger = bootstrapObservability(level: serving.logLevel)
        let configuration = serving.configuration(keyring: TransceiverConfiguration.randomKeyring())
        try await serve(configuration, logger: logger)
    }
}

struct TransceiverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transceiver",
        abstract: "Signaling API and WebRTC sessions (ICE lite, DTLS-SRTP) bridged to the agent."
    )

    @OptionGroup var serving: ServingOptions
    @Option(help: "Routing key: 64 hex characters shared with the relays (or env PARLEY_ROUTING_KEY).")
    var routingKey: String?
    @Option(help: "Id (0–15) of the routing key.")
    var routingKeyID: UInt8 = 0
    @Option(help: "Cluster id written into routing tokens.")
    var clusterID: UInt16 = 0

    func run() async throws {
        let logger = bootstrapObservability(level: serving.logLevel)
        guard let hex = routingKey ?? ProcessInfo.processInfo.environment["PARLEY_ROUTING_KEY"],
              let key = RoutingKey(id: routingKeyID, hexSecret: hex) else {
            throw ValidationError("a routing key is required: --routing-key or PARLEY_ROUTING_KEY, 64 hex characters")
        }
        var configuration = serving.configuration(keyring: RoutingKeyring(current: key))
        configuration.clusterID = clusterID
        try await serve(configuration, logger: logger)
    }
}

struct Relay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The public UDP/TCP forwarder: routes each flow by the token in its first STUN check."
    )

    func run() throws {
        FileHandle.standardError.write(Data("parley relay: not yet implemented (lands with the relay issue).\n".utf8))
        throw ExitCode(notImplementedExitCode)
    }
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

    func validate() throws {
        guard sessions >= 1 else { throw ValidationError("--sessions must be at least 1") }
        guard duration > 0, ramp >= 0 else { throw ValidationError("--duration must be positive and --ramp not negative") }
        _ = try SignalingClient.parse(url: url)
    }

    func run() async throws {
        var configuration = LoadConfiguration(url: url, sessions: sessions, duration: .milliseconds(Int64(duration * 1000)),
                                              ramp: .milliseconds(Int64(ramp * 1000)))
        configuration.payloadBytes = payloadBytes
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let generator = try LoadGenerator(configuration: configuration, eventLoop: group.next())
        let report = try await generator.run { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        try await group.shutdownGracefully()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
        if report.connected < report.sessions { throw ExitCode(1) }
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

/// Runs a transceiver and its signaling API until SIGINT or SIGTERM, then ends every call.
func serve(_ configuration: TransceiverConfiguration, logger: Logger) async throws {
    let transceiver = try Transceiver(configuration: configuration, logger: logger)
    try await transceiver.start()
    let api = SignalingAPI(transceiver: transceiver, prometheus: prometheusRegistry)
    let app = Application(
        router: api.makeRouter(),
        configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "parley"),
        logger: logger)
    logger.info("signaling API and demo page", metadata: ["url": "http://\(configuration.httpHost):\(configuration.httpPort)/"])
    do {
        try await app.runService()
    } catch {
        await transceiver.shutdown()
        throw error
    }
    await transceiver.shutdown()
}
