import Logging
import Metrics
import NIOCore
import NIOPosix
import ParleyIO
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

/// One relay worker: a public socket (shared port, SO_REUSEPORT: the kernel keeps each client on
/// one worker), an internal socket toward transceivers, and its own route table. All state is
/// touched only on `eventLoop`.
final class RelayWorker: @unchecked Sendable {
    let index: Int
    let eventLoop: EventLoop
    private let configuration: RelayConfiguration
    private let store: RouteStore
    private let logger: Logger
    private var table: RouteTable
    private var publicChannel: Channel?
    private var internalChannel: Channel?
    private var timer: RepeatedTask?
    /// Datagrams waiting for a route-store answer, per client (both directions).
    private var waiting: [TransportAddress: [(fromClient: Bool, bytes: ByteBuffer, source: TransportAddress)]] = [:]
    private var drops: [RelayDropReason: Int] = [:]
    private var forwarded = (toTransceiver: 0, toClient: 0)
    private var pendingPublicWrites = false
    private var pendingInternalWrites = false
    private let counters: RelayMetrics
    /// NIO socket addresses by transport address: making one boxes its storage, so each peer's is
    /// made once, not per datagram. Bounded; cleared when it outgrows the route table.
    private var socketAddresses: [TransportAddress: SocketAddress] = [:]

    private func socketAddress(_ address: TransportAddress) -> SocketAddress {
        if let cached = socketAddresses[address] { return cached }
        let made = address.socketAddress
        socketAddresses[address] = made
        return made
    }

    init(index: Int, eventLoop: EventLoop, configuration: RelayConfiguration, store: RouteStore, metrics: RelayMetrics,
         logger: Logger) {
        self.index = index
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.store = store
        self.counters = metrics
        var logger = logger
        logger[metadataKey: "relay_worker"] = "\(index)"
        self.logger = logger
        table = RouteTable(keyring: configuration.keyring, policy: configuration.policy)
    }

    var ingressID: UInt16 { UInt16(truncatingIfNeeded: index) }
    var publicAddress: SocketAddress? { publicChannel?.localAddress }
    var internalAddress: SocketAddress? { internalChannel?.localAddress }

    func start() async throws {
        func bootstrap(_ side: RelayChannelHandler.Side, reusePort: Bool) -> DatagramBootstrap {
            DatagramBootstrap(group: eventLoop)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelOption(ChannelOptions.Types.SocketOption(level: .socket, name: .init(rawValue: SO_REUSEPORT)),
                               value: reusePort ? 1 : 0)
                .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(configuration.socketBufferBytes))
                .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(configuration.socketBufferBytes))
                .channelOption(.datagramVectorReadMessageCount, value: 32)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 2048))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RelayChannelHandler(worker: self, side: side))
                    }
                }
        }
        let publicChannel = try await bootstrap(.public, reusePort: true)
            .bind(host: configuration.publicHost, port: configuration.publicPort).get()
        let internalPort = configuration.internalPort == 0 ? 0 : configuration.internalPort + index
        let internalChannel = try await bootstrap(.internal, reusePort: false)
            .bind(host: configuration.internalHost, port: internalPort).get()
        for channel in [publicChannel, internalChannel] {
            for name in [SO_RCVBUFFORCE, SO_SNDBUFFORCE] {
                try? await channel.setOption(ChannelOptions.Types.SocketOption(level: .socket, name: .init(rawValue: name)),
                                             value: SocketOptionValue(configuration.socketBufferBytes)).get()
            }
        }
        try await eventLoop.submit {
            self.publicChannel = publicChannel
            self.internalChannel = internalChannel
            self.table.currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
            self.timer = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in self.everySecond() }
        }.get()
        logger.info("relay worker listening", metadata: [
            "public": "\(publicChannel.localAddress.map { "\($0)" } ?? "?")",
            "internal": "\(internalChannel.localAddress.map { "\($0)" } ?? "?")",
        ])
    }

    func stop() async {
        let futures: [EventLoopFuture<Void>] = (try? await eventLoop.submit { () -> [EventLoopFuture<Void>] in
            self.timer?.cancel()
            return [self.publicChannel?.close(), self.internalChannel?.close()].compactMap { $0 }
        }.get()) ?? []
        for future in futures { try? await future.get() }
    }

    // MARK: Client side

    func fromClient(_ buffer: ByteBuffer, source: SocketAddress) {
        guard let client = TransportAddress(source) else { return }
        let decision = buffer.withUnsafeReadableBytes { table.fromClient($0, client: client, now: Self.now()) }
        switch decision {
        case .forward(let transceiver):
            tunnel(buffer, client: client, to: transceiver)
        case .unknown:
            wait(buffer, fromClient: true, client: client, source: client)
        case .drop(let reason):
            drop(reason)
        }
        storeCommits()
    }

    private func tunnel(_ payload: ByteBuffer, client: TransportAddress, to transceiver: TransportAddress) {
        guard let channel = internalChannel else { return }
        let header = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: ingressID, client: client)
        var buffer = channel.allocator.buffer(capacity: header.encodedLength + payload.readableBytes)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: header.encodedLength) { (try? header.encode(into: $0)) ?? 0 }
        var payload = payload
        buffer.writeBuffer(&payload)
        channel.write(AddressedEnvelope(remoteAddress: socketAddress(transceiver), data: buffer), promise: nil)
        pendingInternalWrites = true
        forwarded.toTransceiver += 1
    }

    // MARK: Transceiver side

    func fromTransceiver(_ buffer: ByteBuffer, source: SocketAddress) {
        guard let transceiver = TransportAddress(source) else { return }
        guard configuration.policy.workerNetworks.contains(where: { $0.contains(transceiver) }) else {
            return drop(.untrustedTransceiver)
        }
        let decoded = buffer.withUnsafeReadableBytes { bytes -> (TunnelHeader, Int)? in
            guard let (header, length) = try? TunnelHeader.decode(bytes), header.direction == .toClient else { return nil }
            return (header, length)
        }
        guard let (header, length) = decoded else { return drop(.malformedTunnel) }
        let payload = buffer.getSlice(at: buffer.readerIndex + length, length: buffer.readableBytes - length) ?? ByteBuffer()
        deliverFromTransceiver(payload, client: header.client, transceiver: transceiver)
        storeCommits()
    }

    private func deliverFromTransceiver(_ payload: ByteBuffer, client: TransportAddress, transceiver: TransportAddress) {
        let decision = payload.withUnsafeReadableBytes {
            table.fromTransceiver($0, client: client, source: transceiver, now: Self.now())
        }
        switch decision {
        case .deliver(let destination):
            guard let channel = publicChannel else { return }
            channel.write(AddressedEnvelope(remoteAddress: socketAddress(destination), data: payload), promise: nil)
            pendingPublicWrites = true
            forwarded.toClient += 1
        case .unknown:
            wait(payload, fromClient: false, client: client, source: transceiver)
        case .drop(let reason):
            drop(reason)
        }
    }

    // MARK: Route store

    /// Holds a datagram of an unknown flow and asks the store once per flow.
    private func wait(_ buffer: ByteBuffer, fromClient: Bool, client: TransportAddress, source: TransportAddress) {
        if var queue = waiting[client] {
            guard queue.count < configuration.lookupQueueDepth else { return drop(.lookupQueueFull) }
            queue.append((fromClient, buffer, source))
            waiting[client] = queue
            return
        }
        guard waiting.count < configuration.maximumLookups else { return drop(.lookupQueueFull) }
        waiting[client] = [(fromClient, buffer, source)]
        counters.storeLookups.increment()
        store.lookup(client: client, on: eventLoop).whenComplete { result in
            let queued = self.waiting.removeValue(forKey: client) ?? []
            guard case .success(let transceiver?) = result,
                  self.table.install(client: client, transceiver: transceiver, now: Self.now()) else {
                self.counters.storeMisses.increment()
                for _ in queued { self.drop(.noRoute) }
                return
            }
            self.counters.storeHits.increment()
            self.logger.info("route recovered from the store", metadata: ["client": "\(client)", "transceiver": "\(transceiver)"])
            for item in queued {
                if item.fromClient {
                    self.tunnel(item.bytes, client: client, to: transceiver)
                } else {
                    self.deliverFromTransceiver(item.bytes, client: client, transceiver: item.source)
                }
            }
            self.flush()
        }
    }

    private func storeCommits() {
        for commit in table.takeCommits() {
            store.save(client: commit.client, transceiver: commit.transceiver, lifetime: configuration.policy.storeLifetime)
        }
    }

    // MARK: Housekeeping

    func flush() {
        if pendingInternalWrites {
            pendingInternalWrites = false
            internalChannel?.flush()
        }
        if pendingPublicWrites {
            pendingPublicWrites = false
            publicChannel?.flush()
        }
    }

    private func drop(_ reason: RelayDropReason) { drops[reason, default: 0] += 1 }

    private func everySecond() {
        table.currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        table.expire(now: Self.now())
        if socketAddresses.count > 2 * max(1024, table.count) { socketAddresses.removeAll(keepingCapacity: true) }
        counters.report(drops: drops, toTransceiver: forwarded.toTransceiver, toClient: forwarded.toClient,
                        worker: index, routes: table.committedCount, pending: table.pendingCount)
        drops.removeAll(keepingCapacity: true)
        forwarded = (0, 0)
    }

    static func now() -> Instant { Instant(nanoseconds: Int64(NIODeadline.now().uptimeNanoseconds)) }
}

/// Hands datagrams of one side to the worker; flushes once per read batch.
final class RelayChannelHandler: ChannelInboundHandler {
    enum Side { case `public`, `internal` }
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let worker: RelayWorker
    private let side: Side

    init(worker: RelayWorker, side: Side) {
        self.worker = worker
        self.side = side
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        switch side {
        case .public: worker.fromClient(envelope.data, source: envelope.remoteAddress)
        case .internal: worker.fromTransceiver(envelope.data, source: envelope.remoteAddress)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) { worker.flush() }

    func errorCaught(context: ChannelHandlerContext, error: Error) {}
}
