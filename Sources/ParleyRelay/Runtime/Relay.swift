import Logging
import Metrics
import NIOCore
import NIOPosix
import ParleyIO
import ParleyWire

/// A relay: SO_REUSEPORT workers on one public port, each on its own pinned thread with its own
/// route table, sharing a route store.
public final class Relay: Sendable {
    public let configuration: RelayConfiguration
    private let group: MultiThreadedEventLoopGroup
    private let workers: [RelayWorker]
    private let store: RouteStore
    private let logger: Logger
    private nonisolated(unsafe) var storeStateTask: RepeatedTask?

    public init(configuration: RelayConfiguration, store: RouteStore, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.workers))
        let metrics = RelayMetrics()
        workers = Array(group.makeIterator()).enumerated().map { index, loop in
            RelayWorker(index: index, eventLoop: loop, configuration: configuration, store: store, metrics: metrics, logger: logger)
        }
    }

    public func start() async throws {
        await pinEventLoops(workers.map(\.eventLoop), cores: System.coreCount)
        for worker in workers { try await worker.start() }
        let store = self.store
        storeStateTask = workers.first?.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in
            Gauge(label: "parley_relay_store_connected").record(store.state == "disconnected" ? 0 : 1)
        }
        logger.info("relay listening", metadata: [
            "public": "\(configuration.publicHost):\(configuration.publicPort)", "workers": "\(workers.count)",
            "store": "\(store.state)",
        ])
    }

    public func shutdown() async {
        storeStateTask?.cancel()
        for worker in workers { await worker.stop() }
        try? await group.shutdownGracefully()
    }

    /// The public port actually bound (useful when configured as 0).
    public var publicPort: Int? { workers.first?.publicAddress?.port }
}
