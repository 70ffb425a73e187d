import Logging
import NIOCore
import NIOPosix
import ParleyIO
import ParleyWire
import Synchronization

/// The route store on Redis, through a small RESP client on SwiftNIO (see docs/relay.md for why
/// not hiredis): one pipelined connection, replies matched to requests in order, reconnect with
/// backoff. While Redis is unreachable, saves are dropped and lookups answer nil at once, so the
/// relay keeps forwarding what it knows and rebuilds routes from the next checks.
public final class RedisRouteStore: RouteStore, @unchecked Sendable {
    public let host: String
    public let port: Int
    private let eventLoop: EventLoop
    private let logger: Logger
    /// Touched only on `eventLoop`.
    private var channel: Channel?
    private var pending: CircularBuffer<(promise: EventLoopPromise<RESPValue>, sentAt: NIODeadline)> = []
    /// A reply slower than this means Redis hangs: the connection is dropped and made again, and
    /// everything waiting on it fails (the relay then treats those flows as unknown).
    public static let replyTimeout: TimeAmount = .milliseconds(250)
    private var watchdog: RepeatedTask?
    /// Commands issued while a connection attempt is under way, sent when it succeeds.
    private var waitingForConnection: [(command: [String], promise: EventLoopPromise<RESPValue>)] = []
    private var connecting = false
    private var backoff: TimeAmount = .milliseconds(100)
    private var stopped = false
    private let connectedFlag = Atomic<Bool>(false)
    private let maximumPending = 10_000

    public init(host: String, port: Int, eventLoop: EventLoop, logger: Logger) {
        self.host = host
        self.port = port
        self.eventLoop = eventLoop
        self.logger = logger
        eventLoop.execute {
            self.connect()
            self.watchdog = eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
                guard let oldest = self.pending.first, NIODeadline.now() - oldest.sentAt > Self.replyTimeout else { return }
                self.logger.warning("route store reply timed out", metadata: ["redis": "\(self.host):\(self.port)"])
                self.channel?.close(promise: nil)
            }
        }
    }

    public var state: String { connectedFlag.load(ordering: .relaxed) ? "connected" : "disconnected" }
    public var isConnected: Bool { connectedFlag.load(ordering: .relaxed) }

    public func save(client: TransportAddress, transceiver: TransportAddress, lifetime: Duration) {
        let seconds = max(1, lifetime.components.seconds)
        _ = send(["SET", client.storeKey, "\(transceiver)", "EX", "\(seconds)"])
    }

    public func lookup(client: TransportAddress, on callerLoop: EventLoop) -> EventLoopFuture<TransportAddress?> {
        send(["GET", client.storeKey]).map { reply -> TransportAddress? in
            if case .bulk(let text?) = reply { return TransportAddress(text) }
            return nil
        }.recover { _ in nil }.hop(to: callerLoop)
    }

    /// PING, for health checks and tests.
    public func ping() -> EventLoopFuture<Bool> {
        send(["PING"]).map { reply in
            if case .simple("PONG") = reply { return true }
            return false
        }.recover { _ in false }
    }

    public func shutdown() {
        eventLoop.execute {
            self.stopped = true
            self.watchdog?.cancel()
            self.channel?.close(promise: nil)
        }
    }

    private func send(_ command: [String]) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        eventLoop.execute {
            guard let channel = self.channel else {
                // A first connection (or a reconnection) under way: hold the command briefly, so a
                // relay that just started can answer its first lookups.
                if self.connecting, self.waitingForConnection.count < 1024 {
                    self.waitingForConnection.append((command, promise))
                } else {
                    promise.fail(RedisError.unavailable)
                }
                return
            }
            self.write(command, promise: promise, on: channel)
        }
        return promise.futureResult
    }

    private func write(_ command: [String], promise: EventLoopPromise<RESPValue>, on channel: Channel) {
        guard pending.count < maximumPending else {
            promise.fail(RedisError.unavailable)
            return
        }
        pending.append((promise, NIODeadline.now()))
        var buffer = channel.allocator.buffer(capacity: 64)
        buffer.writeBytes(RESPValue.encode(command: command))
        channel.writeAndFlush(buffer, promise: nil)
    }

    private func connect() {
        guard !stopped, !connecting, channel == nil else { return }
        connecting = true
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(1))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler(store: self))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                self.connecting = false
                switch result {
                case .success(let channel):
                    self.channel = channel
                    self.backoff = .milliseconds(100)
                    self.connectedFlag.store(true, ordering: .relaxed)
                    for (command, promise) in self.waitingForConnection { self.write(command, promise: promise, on: channel) }
                    self.waitingForConnection.removeAll()
                    self.logger.info("route store connected", metadata: ["redis": "\(self.host):\(self.port)"])
                case .failure(let error):
                    for (_, promise) in self.waitingForConnection { promise.fail(RedisError.unavailable) }
                    self.waitingForConnection.removeAll()
                    self.logger.warning("route store unreachable", metadata: ["redis": "\(self.host):\(self.port)", "error": "\(error)"])
                    self.scheduleReconnect()
                }
            }
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        let delay = backoff
        backoff = min(backoff * 2, .seconds(2))
        eventLoop.scheduleTask(in: delay) { self.connect() }
    }

    fileprivate func received(_ reply: RESPValue) {
        guard let promise = pending.popFirst()?.promise else { return }
        if case .error(let message) = reply { promise.fail(RedisError.server(message)) } else { promise.succeed(reply) }
    }

    fileprivate func disconnected() {
        channel = nil
        connectedFlag.store(false, ordering: .relaxed)
        while let entry = pending.popFirst() { entry.promise.fail(RedisError.unavailable) }
        logger.warning("route store disconnected", metadata: ["redis": "\(host):\(port)"])
        scheduleReconnect()
    }

    private final class ReplyHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = RESPValue
        let store: RedisRouteStore

        init(store: RedisRouteStore) { self.store = store }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) { store.received(unwrapInboundIn(data)) }
        func channelInactive(context: ChannelHandlerContext) { store.disconnected() }
        func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    }
}

public enum RedisError: Error, Equatable {
    case unavailable
    case server(String)
}

/// Decodes RESP2 replies with ParleyWire's `RESPReader`; waits for more bytes when a reply is
/// incomplete, and gives up on a connection whose unfinished reply grows past any it could send.
struct RESPDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue
    static let maximumPending = 2 * RESPReader.maximumBulk + 65536

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let read = try buffer.withUnsafeReadableBytes { bytes throws(RESPError) in try RESPReader.read(bytes) }
        guard let (value, length) = read else {
            if buffer.readableBytes > Self.maximumPending { throw RedisError.server("reply too large") }
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: length)
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }
}
