import CParleySockets
import Logging
import Metrics
import NIOCore
import NIOPosix
import ParleyIO
import ParleyRouting
import ParleyWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A relay: worker threads on one public port (SO_REUSEPORT), each pinned to a core with its own
/// sockets and route table, sharing a route store. A small event loop serves the store's answers
/// and the metrics gauge.
public final class Relay: Sendable {
    public let configuration: RelayConfiguration
    private let controlGroup: MultiThreadedEventLoopGroup
    private let workers: [RelayWorker]
    private let tcp: RelayTCPListener?
    private let store: RouteStore
    private let logger: Logger
    private nonisolated(unsafe) var storeStateTask: RepeatedTask?
    private let draining = Atomic<Bool>(false)

    public init(configuration: RelayConfiguration, store: RouteStore, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        controlGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let metrics = RelayMetrics()
        let loop = controlGroup.next()
        workers = (0..<max(1, configuration.workers)).map { index in
            RelayWorker(index: index, configuration: configuration, store: store, storeLoop: loop, metrics: metrics, logger: logger)
        }
        if configuration.publicTCP == .none {
            tcp = nil
        } else {
            // Each TCP connection is a file descriptor: the soft limit goes up to the hard one, and
            // the connections stay under it with room for everything else (Redis, metrics, sockets).
            var sized = configuration
            let descriptors = Self.raiseFileDescriptorLimit()
            sized.tcpPolicy.maximumConnections = min(sized.tcpPolicy.maximumConnections, max(64, descriptors - 512))
            sized.tcpPolicy.maximumHandshakes = min(sized.tcpPolicy.maximumHandshakes, sized.tcpPolicy.maximumConnections)
            tcp = RelayTCPListener(configuration: sized, metrics: metrics, logger: logger)
        }
    }

    /// Raises the soft limit on open files to the hard limit; returns the limit now in force.
    static func raiseFileDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(truncatingIfNeeded: RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(truncatingIfNeeded: RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }

    public func start() async throws {
        if let problem = RelayConfiguration.publicHostsProblem(configuration.publicHosts) { throw RelayError.configuration(problem) }
        if !configuration.takeOverPort, configuration.publicPort != 0 {
            for host in configuration.publicHosts { try Self.refuseSharedPort(host: host, port: configuration.publicPort) }
        }
        var port = configuration.publicPort
        if tcp != nil, configuration.internalPort != 0, configuration.workers >= PeerRouteTables.maximumPeers {
            throw RelayError.configuration("with --internal-port and TCP, at most \(PeerRouteTables.maximumPeers - 1) workers "
                                           + "(the TCP listener's tunnel socket takes internal port + \(PeerRouteTables.maximumPeers - 1))")
        }
        for worker in workers {
            try worker.start(publicPort: port)
            port = worker.publicPort
        }
        if let tcp {
            let tcpPort = switch configuration.publicTCP {
            case .none, .sameAsUDP: port
            case .port(let number): number
            }
            do {
                try await tcp.start(port: tcpPort)
            } catch where configuration.tcpOptional {
                logger.warning("ICE-TCP is off: the TCP port cannot be had (clients whose networks block UDP cannot call through this relay)",
                               metadata: ["port": "\(tcpPort)", "error": "\(error)",
                                          "fix": "--public-tcp-port with a port this process may bind, or CAP_NET_BIND_SERVICE for 443"])
                await tcp.stop()
            } catch {
                for worker in workers { worker.stop() }
                await tcp.stop()
                if let error = error as? RelayError { throw error }
                throw RelayError.bindTCP(configuration.publicHosts.map { RelayConfiguration.hostAndPort($0, tcpPort) }.joined(separator: ", "),
                                         "\(error)")
            }
        }
        let store = self.store
        let connected = Gauge(label: "parley_relay_store_connected")
        let states = Dictionary(uniqueKeysWithValues: RouteStoreState.allCases.map {
            ($0, Gauge(label: "parley_relay_store_state", dimensions: [("state", $0.rawValue)]))
        })
        Gauge(label: "parley_relay_draining").record(0)
        storeStateTask = controlGroup.next().scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in
            let state = store.state
            connected.record(state.isAvailable ? 1 : 0)
            for (each, gauge) in states { gauge.record(each == state ? 1 : 0) }
        }
        logger.info("relay listening", metadata: [
            "public": "\(configuration.publicHosts.map { RelayConfiguration.hostAndPort($0, publicPort ?? configuration.publicPort) })", "workers": "\(workers.count)",
            "tcp": "\(tcp.map { "\($0.port) (up to \($0.maximumConnections) connections)" } ?? "off")", "store": "\(store.state.rawValue)", "cluster": "\(configuration.policy.clusterID)",
            "cluster_relays": "\(configuration.policy.clusterRelays.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })",
        ])
    }

    /// Stops taking new flows (`RouteTable.draining`); committed routes go on until they idle out.
    public func startDraining() {
        draining.store(true, ordering: .sequentiallyConsistent)
        for worker in workers { worker.startDraining() }
        tcp?.startDraining()
        Gauge(label: "parley_relay_draining").record(1)
    }

    /// Routing-key rotation: every worker opens new flows' tokens with `keyring` from its next turn on.
    public func replaceKeyring(_ keyring: RoutingKeyring) {
        for worker in workers { worker.replaceKeyring(keyring) }
        tcp?.replaceKeyring(keyring)
    }

    public var isDraining: Bool { draining.load(ordering: .sequentiallyConsistent) }

    /// Committed and pending routes over every worker (as of the last second). `committedWhileDraining`
    /// is nil until every worker has taken the drain in: before that a count could still grow.
    public var routeCounts: (committed: Int, pending: Int, committedWhileDraining: Int?) {
        let counts = workers.map(\.routeCounts) + (tcp.map { [$0.routeCounts] } ?? [])
        let committed = counts.reduce(0) { $0 + $1.committed }
        let pending = counts.reduce(0) { $0 + $1.pending }
        return (committed, pending, counts.allSatisfy(\.draining) ? committed : nil)
    }

    public func shutdown() async {
        storeStateTask?.cancel()
        for worker in workers { worker.stop() }
        await tcp?.stop()
        try? await controlGroup.shutdownGracefully()
    }

    /// A socket bound without SO_REUSEPORT fails if anyone holds the port, with SO_REUSEPORT or not:
    /// the test for "is it ours to take" before the workers bind it with SO_REUSEPORT.
    static func refuseSharedPort(host: String, port: Int) throws {
        let result = parley_udp_port_in_use(host, Int32(clamping: port))
        let code = errno
        switch result {
        case 0: return
        case 1: throw RelayError.portInUse("UDP " + RelayConfiguration.hostAndPort(host, port))
        default: throw RelayError.bind(RelayConfiguration.hostAndPort(host, port), code)
        }
    }

    /// The public port actually bound (useful when configured as 0).
    public var publicPort: Int? { workers.first.map(\.publicPort) }
    /// The public TCP port bound, nil without TCP.
    public var publicTCPPort: Int? { tcp.flatMap { $0.port == 0 ? nil : $0.port } }
}
