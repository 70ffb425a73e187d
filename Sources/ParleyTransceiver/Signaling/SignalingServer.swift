import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import ParleySignaling
import ParleyWire
import Synchronization

/// The signaling listener: HTTP/1.1 with the sideband's WebSocket upgrade, and the limits a
/// server on the internet needs against slow or idle clients: the first request's head within
/// `headerTimeout` of connecting (a raw-bytes guard ahead of the HTTP parser), later ones within the
/// idle timeout (Hummingbird's connection state handler), bodies within `bodyTimeout` (the API),
/// and at most `maximumConnections` at once (the listener stops accepting past it).
public enum SignalingServer {
    public static func builder(router: Router<SignalingContext>, limits: HTTPLimits, trustedProxies: [IPNetwork] = [],
                               refused: (@Sendable () -> Void)? = nil) -> HTTPServerBuilder {
        let webSocketResponder = router.buildResponder()
        let configuration = HTTP1WebSocketUpgradeChannel.Configuration(
            http1: .init(idleTimeout: TimeAmount(limits.idleTimeout)),
            ws: .init(maxFrameSize: SidebandCommand.maximumBytes, autoPing: .enabled(timePeriod: .seconds(30)),
                      closeTimeout: .seconds(5)))
        let headerTimeout = TimeAmount(limits.headerTimeout)
        let connections = ConnectionCounter(ConnectionCount(maximumPerAddress: limits.maximumConnectionsPerAddress,
                                                            exempt: trustedProxies), refused: refused)
        return HTTPServerBuilder { responder in
            FirstRequestDeadlineChannel(
                inner: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder,
                                                    configuration: configuration),
                timeout: headerTimeout, connections: connections)
        }
    }

    public static func configuration(host: String, port: Int, limits: HTTPLimits, logger: Logger) -> ApplicationConfiguration {
        ApplicationConfiguration(address: .hostname(host, port: port), serverName: "parley",
                                 availableConnectionsDelegate: MaximumAvailableConnections(limits.maximumConnections, logger: logger))
    }
}

/// Puts `FirstRequestDeadlineHandler` in front of another child channel's pipeline.
/// The shell around `ConnectionCount`: one per listener, shared by its connections' event loops.
final class ConnectionCounter: Sendable {
    private let count: Mutex<ConnectionCount>
    private let refused: (@Sendable () -> Void)?

    init(_ count: ConnectionCount, refused: (@Sendable () -> Void)?) {
        self.count = Mutex(count)
        self.refused = refused
    }

    /// Counts `channel` against its peer's address until it closes; false (the caller closes it) past the limit.
    func admit(_ channel: any Channel) -> Bool {
        guard let address = channel.remoteAddress.flatMap(TransportAddress.init) else { return true }
        guard count.withLock({ $0.open(address) }) else {
            refused?()
            return false
        }
        channel.closeFuture.whenComplete { [self] _ in count.withLock { $0.close(address) } }
        return true
    }
}

struct FirstRequestDeadlineChannel<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value
    let inner: Inner
    let timeout: TimeAmount
    let connections: ConnectionCounter

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let timeout = self.timeout
        guard connections.admit(channel) else {
            // Closed before any byte is read: that address holds its share of connections already.
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.inputClosed)
        }
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(FirstRequestDeadlineHandler(timeout: timeout), position: .first)
        }.flatMap { inner.setup(channel: channel, logger: logger) }
    }

    func handle(value: Value, logger: Logger) async { await inner.handle(value: value, logger: logger) }
}

/// Closes a connection whose first request head (up to its blank line) has not arrived within the
/// timeout: a client that opens connections and sends a byte now and then (slowloris) holds no
/// socket for long. It looks only for `\r\n\r\n` in the raw bytes, then leaves the pipeline.
final class FirstRequestDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?
    /// The end of what was read so far (the blank line may straddle reads).
    private var tail: [UInt8] = []

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let bytes = tail + Array(buffer.readableBytesView)
        let complete = bytes.count >= 4 && (0...(bytes.count - 4)).contains { index in
            bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10
        }
        tail = Array(bytes.suffix(3))
        context.fireChannelRead(data)
        if complete {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
