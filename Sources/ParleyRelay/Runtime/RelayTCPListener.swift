import CParleySockets
import Logging
import Metrics
import NIOCore
import NIOPosix
import ParleyIO
import ParleyRouting
import ParleyWire
import Synchronization

/// The relay's ICE-TCP listener (docs/relay.md#ice-tcp): TCP on the public port, RFC 4571 frames,
/// each routed by `TCPIngress` and tunnelled to its transceiver worker with the tunnel header's TCP
/// flag, answers written back as frames on the connection. The shell only: one event loop thread
/// owns the decisions, the connections and the internal UDP socket the tunnel uses, so nothing
/// here is locked.
///
/// TCP is the fallback for networks that block UDP, so it is built for bounded memory rather than
/// the UDP workers' batching: a connection holds at most one partial frame, at most
/// `writeHighWaterMark` bytes waiting to be written and a small kernel send buffer; past that,
/// frames for it are dropped (`tcp_backlog`): a slow reader loses packets, not the relay's memory,
/// and a congested one loses packets rather than gaining seconds of delay.
final class RelayTCPListener: @unchecked Sendable {
    /// The tunnel header's ingress id for TCP flows (workers use their index, peer tables 0x8000 | slot).
    static let ingressID: UInt16 = 0x4000
    /// Queued beyond the kernel's buffer, per connection: about a second of a call's audio and
    /// data-channel traffic, not more (a voice call wants loss rather than delay).
    static let writeHighWaterMark = 16 * 1024
    /// The kernel's send buffer per connection (it doubles the figure for its bookkeeping).
    static let socketSendBuffer = 32 * 1024
    /// Frames longer than this close the connection: nothing a relayed call sends is longer.
    static let maximumFrame = 2048

    private let configuration: RelayConfiguration
    private let logger: Logger
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: EventLoop
    // Confined to `loop`.
    private var core: TCPIngress
    private var connections: [TransportAddress: Channel] = [:]
    private var servers: [Channel] = []
    private var tunnel: Channel?
    /// Connections written to since the last flush: flushed once per read of the tunnel socket, so a
    /// burst of answers for one client costs one write system call, not one per frame.
    private var unflushed: [Channel] = []
    private var housekeeping: RepeatedTask?
    private var drops: [RelayDropReason: Int] = [:]
    private var forwardedToTransceiver = 0
    private var forwardedToClient = 0
    private let metrics: RelayMetrics
    private let closes: [TCPIngress.CloseReason: Counter]
    private let connectionsGauge = Gauge(label: "parley_relay_tcp_connections")
    // Published for the drain's route count.
    private let publishedCommitted = Atomic<Int>(0)
    private let publishedPending = Atomic<Int>(0)
    private let drainAcknowledged = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    private(set) var port = 0
    /// The core's limit, kept apart: the core itself is the loop's.
    let maximumConnections: Int

    init(configuration: RelayConfiguration, metrics: RelayMetrics, logger: Logger) {
        self.configuration = configuration
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "relay_worker"] = "tcp"
        self.logger = logger
        loop = group.next()
        core = TCPIngress(keyring: configuration.keyring, routing: configuration.policy, policy: configuration.tcpPolicy)
        maximumConnections = configuration.tcpPolicy.maximumConnections
        var closes: [TCPIngress.CloseReason: Counter] = [:]
        for reason in TCPIngress.CloseReason.allCases {
            closes[reason] = Counter(label: "parley_relay_tcp_closed_total", dimensions: [("reason", reason.rawValue)])
        }
        self.closes = closes
    }

    /// The internal port the tunnel socket binds: the last of the 64 a peer relay believes
    /// (docs/global-relay.md), so another cluster's relay accepts TCP flows forwarded from it too.
    static func internalPort(_ configuration: RelayConfiguration) -> Int {
        configuration.internalPort == 0 ? 0 : configuration.internalPort + PeerRouteTables.maximumPeers - 1
    }

    func start(port requested: Int) async throws {
        let tunnel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 512 * 1024, high: 1024 * 1024))
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(clamping: configuration.socketBufferBytes))
            .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(clamping: configuration.socketBufferBytes))
            .channelOption(.maxMessagesPerRead, value: 32)  // a read burst, then one flush per connection written
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))  // never a truncated datagram
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(TunnelHandler(listener: self)) }
            }
            .bind(host: configuration.internalHost, port: Self.internalPort(configuration)).get()
        try await loop.submit { self.tunnel = tunnel }.get()
        var port = requested
        for host in configuration.publicHosts {
            if !configuration.takeOverPort, port != 0 {
                // As for UDP (Relay.refuseSharedPort): without --take-over-port, a port someone holds is refused.
                let result = parley_tcp_port_in_use(host, Int32(clamping: port))
                let code = errno
                if result == 1 { throw RelayError.portInUse("TCP " + RelayConfiguration.hostAndPort(host, port)) }
                if result != 0 { throw RelayError.bindTCP(RelayConfiguration.hostAndPort(host, port), String(cString: strerror(code))) }
            }
            // IPv6 takes IPv6 only, as the UDP sockets do: IPv4 has its own listener on the same port.
            let v6only = ChannelOptions.Types.SocketOption(level: .ipv6, name: .init(rawValue: IPV6_V6ONLY))
            let server = try await ServerBootstrap(group: group)
                .serverChannelInitializer { channel in
                    IPv6Address(host) == nil ? channel.eventLoop.makeSucceededVoidFuture() : channel.setOption(v6only, value: 1)
                }
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // Always: a relay that replaces this one (--take-over-port) shares the port while both run.
                .serverChannelOption(ChannelOptions.Types.SocketOption(level: .socket, name: .init(rawValue: SO_REUSEPORT)), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP: at SOL_SOCKET, 1 is SO_DEBUG, which a non-root process may not set
                .childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(clamping: Self.socketSendBuffer))
                .childChannelOption(.writeBufferWaterMark, value: .init(low: Self.writeHighWaterMark / 2, high: Self.writeHighWaterMark))
                .childChannelOption(.allowRemoteHalfClosure, value: false)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(listener: self))
                    }
                }
                .bind(host: host, port: port).get()
            port = server.localAddress?.port ?? port
            try await loop.submit { self.servers.append(server) }.get()
        }
        try await loop.submit { [self, port] in
            self.port = port
            // Before the first frame: token ages are checked from the start, not from the first tick.
            core.currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
            housekeeping = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in tick() }
        }.get()
        logger.info("relay TCP listening", metadata: [
            "public": "\(configuration.publicHosts.map { RelayConfiguration.hostAndPort($0, port) })",
            "internal": "\(tunnel.localAddress.map { "\($0)" } ?? "?")",
        ])
    }

    /// Idempotent: a listener that failed to start is stopped then, and again at shutdown (a
    /// second submit to a loop already shut down would never complete).
    func stop() async {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        let channels: [Channel] = (try? await loop.submit {
            self.housekeeping?.cancel()
            return self.servers + Array(self.connections.values) + [self.tunnel].compactMap { $0 }
        }.get()) ?? []
        for channel in channels { try? await channel.close() }
        try? await group.shutdownGracefully()
    }

    func startDraining() {
        guard !stopped.load(ordering: .sequentiallyConsistent) else {
            drainAcknowledged.store(true, ordering: .sequentiallyConsistent)  // nothing to drain
            return
        }
        loop.execute { [self] in
            core.draining = true
            publish()
            drainAcknowledged.store(true, ordering: .sequentiallyConsistent)
        }
    }

    func replaceKeyring(_ keyring: RoutingKeyring) {
        guard !stopped.load(ordering: .sequentiallyConsistent) else { return }
        loop.execute { [self] in core.replaceKeyring(keyring) }
    }

    var routeCounts: (committed: Int, pending: Int, draining: Bool) {
        let draining = drainAcknowledged.load(ordering: .sequentiallyConsistent)
        return (publishedCommitted.load(ordering: .sequentiallyConsistent), publishedPending.load(ordering: .sequentiallyConsistent), draining)
    }

    // MARK: On the loop

    fileprivate func accepted(_ channel: Channel) {
        guard let remote = channel.remoteAddress, let peer = TransportAddress(remote) else {
            channel.close(promise: nil)
            return
        }
        switch core.accept(peer: peer, now: monotonicNow()) {
        case .refuse(let reason):
            closes[reason]?.increment()
            logger.debug("TCP connection refused", metadata: ["client": "\(peer)", "reason": "\(reason.rawValue)"])
            channel.close(promise: nil)
            return
        case .acceptEvicting(let older):
            // Already forgotten by the core: only the socket is left to close.
            closes[.evicted]?.increment()
            logger.debug("TCP connection closed", metadata: ["client": "\(older)", "reason": "evicted"])
            connections.removeValue(forKey: older)?.close(promise: nil)
        case .accept:
            break
        }
        logger.debug("TCP connection", metadata: ["client": "\(peer)"])
        connections[peer] = channel
    }

    /// A whole frame from `peer`; false when the connection is being closed.
    fileprivate func frame(_ bytes: UnsafeRawBufferPointer, from peer: TransportAddress) -> Bool {
        switch core.frame(bytes, from: peer, now: monotonicNow()) {
        case .forward(let transceiver):
            guard let tunnel else { return true }
            guard tunnel.isWritable else {
                // The tunnel socket's queue is full (the kernel refused sends): drop, do not queue without bound.
                drops[.tunnelBacklog, default: 0] += 1
                return true
            }
            let header = TunnelHeader(transport: .tcp, direction: .fromClient, ingressID: Self.ingressID, client: peer)
            var buffer = tunnel.allocator.buffer(capacity: header.encodedLength + bytes.count)
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: header.encodedLength) { (try? header.encode(into: $0)) ?? 0 }
            buffer.writeBytes(bytes)
            tunnel.write(AddressedEnvelope(remoteAddress: transceiver.socketAddress, data: buffer), promise: nil)
            forwardedToTransceiver += 1
            return true
        case .drop(let reason):
            drops[reason, default: 0] += 1
            return true
        case .close(let reason):
            close(peer, reason)
            return false
        }
    }

    fileprivate func readComplete() { tunnel?.flush() }

    fileprivate func tooLong(_ peer: TransportAddress) { close(peer, .frameTooLong) }

    /// A connection's socket failed (a reset, say): it closes, and `closed` forgets it.
    fileprivate func connectionFailed(_ peer: TransportAddress?, _ error: Error) {
        logger.debug("TCP connection failed", metadata: ["client": "\(peer.map { "\($0)" } ?? "?")", "error": "\(error)"])
    }

    fileprivate func closed(_ peer: TransportAddress, channel: Channel) {
        guard connections[peer] === channel else { return }
        connections[peer] = nil
        core.closed(peer: peer)
        logger.debug("TCP connection ended", metadata: ["client": "\(peer)"])
    }

    private func close(_ peer: TransportAddress, _ reason: TCPIngress.CloseReason) {
        closes[reason]?.increment()
        logger.debug("TCP connection closed", metadata: ["client": "\(peer)", "reason": "\(reason.rawValue)"])
        core.closed(peer: peer)
        connections.removeValue(forKey: peer)?.close(promise: nil)
    }

    /// A tunnel datagram on the internal socket: a worker's (or a peer relay's) answer for a TCP client.
    fileprivate func fromTransceiver(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        envelope.data.withUnsafeReadableBytes { datagram in
            guard let (header, length) = try? TunnelHeader.decode(datagram), header.direction == .toClient else {
                drops[.malformedTunnel, default: 0] += 1
                return
            }
            guard configuration.policy.workerNetworks.contains(where: { $0.contains(source) }) || core.table.isClusterRelay(source) else {
                drops[.untrustedTransceiver, default: 0] += 1
                return
            }
            let payload = UnsafeRawBufferPointer(rebasing: datagram[length...])
            switch core.fromTransceiver(payload, client: header.client, source: source, now: monotonicNow()) {
            case .deliver(let client):
                guard let connection = connections[client], let framing = StreamDeframer.header(length: payload.count) else {
                    drops[.noRoute, default: 0] += 1
                    return
                }
                guard connection.isWritable else {
                    drops[.tcpBacklog, default: 0] += 1
                    return
                }
                var frame = connection.allocator.buffer(capacity: 2 + payload.count)
                frame.writeInteger(framing.0)
                frame.writeInteger(framing.1)
                frame.writeBytes(payload)
                connection.write(frame, promise: nil)
                if !unflushed.contains(where: { $0 === connection }) { unflushed.append(connection) }
                forwardedToClient += 1
            case .unknown:
                drops[.noRoute, default: 0] += 1
            case .drop(let reason):
                drops[reason, default: 0] += 1
            }
        }
    }

    /// The end of a read burst on the tunnel socket: every connection written to is flushed.
    fileprivate func tunnelReadComplete() {
        for connection in unflushed { connection.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    private func tick() {
        let now = monotonicNow()
        core.currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        for (peer, reason) in core.expire(now: now) {
            closes[reason]?.increment()
            logger.debug("TCP connection closed", metadata: ["client": "\(peer)", "reason": "\(reason.rawValue)"])
            connections.removeValue(forKey: peer)?.close(promise: nil)
        }
        publish()
        connectionsGauge.record(connections.count)
        metrics.report(drops: drops, toTransceiver: forwardedToTransceiver, toClient: forwardedToClient, worker: "tcp",
                       routes: core.table.committedCount, pending: core.table.pendingCount)
        drops.removeAll(keepingCapacity: true)
        forwardedToTransceiver = 0
        forwardedToClient = 0
    }

    private func publish() {
        publishedCommitted.store(core.table.committedCount, ordering: .sequentiallyConsistent)
        publishedPending.store(core.table.pendingCount, ordering: .sequentiallyConsistent)
    }
}

/// One TCP connection: frames in (RFC 4571), closed on a frame too long.
private final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let listener: RelayTCPListener
    private var deframer = StreamDeframer(maximumFrame: RelayTCPListener.maximumFrame)
    private var peer: TransportAddress?

    init(listener: RelayTCPListener) { self.listener = listener }

    func channelActive(context: ChannelHandlerContext) {
        peer = context.channel.remoteAddress.flatMap(TransportAddress.init)
        listener.accepted(context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peer else { return }
        let buffer = unwrapInboundIn(data)
        let failure = buffer.withUnsafeReadableBytes { bytes in
            deframer.feed(bytes) { frame in listener.frame(frame, from: peer) }
        }
        if failure != nil { listener.tooLong(peer) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        listener.readComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let peer { listener.closed(peer, channel: context.channel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        listener.connectionFailed(peer, error)
        context.close(promise: nil)
    }
}

/// The tunnel's internal UDP socket: answers from workers (and peer relays) for TCP clients.
private final class TunnelHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let listener: RelayTCPListener

    init(listener: RelayTCPListener) { self.listener = listener }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        listener.fromTransceiver(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        listener.tunnelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {}  // an ICMP error for one datagram
}
