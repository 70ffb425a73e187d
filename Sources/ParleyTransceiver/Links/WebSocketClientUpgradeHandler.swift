import NIOCore
import NIOWebSocket
import ParleySignaling

/// Why a WebSocket Parley dialed did not open.
struct WebSocketDialError: Error, CustomStringConvertible {
    let description: String
}

/// Takes a new TCP (or TLS) channel through the client's opening handshake
/// (`WebSocketClientHandshake` decides on the answer) and then hands the channel, in order, to the
/// frame codec and whatever `configure` adds: the bytes that came with or after the 101 reach the
/// frame decoder before any later read or event — the server's EOF included.
///
/// Written by hand, instead of NIO's `NIOTypedHTTPClientUpgradeHandler`, because that one swaps
/// its HTTP codec out asynchronously and loses what arrives meanwhile when the server also ends
/// its side: a transceiver refusing a forwarded sideband sends the 101, an error event, a close
/// frame and its FIN at once, and under CPU load the forwarder never saw the event (measured:
/// about one in four runs of the forwarding test with two cores busy; in the lab test
/// `WebSocketClientUpgradeTests`, with the NIO-based client, a hang). Its default also drops bytes
/// that share a read with the 101, which an agent sending first would have met.
final class WebSocketClientUpgradeHandler<Value: Sendable>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        case waiting
        case upgraded
        case failed
    }

    private let handshake: WebSocketClientHandshake
    private let request: String
    private let maxFrameSize: Int
    private let timeout: TimeAmount
    private let configure: (Channel) throws -> Value
    private let promise: EventLoopPromise<Value>
    private var state = State.waiting
    /// What arrived before the head ended (at most one read past `WebSocketClientHandshake.maximumHeadBytes`),
    /// and how much of it has been searched for the head's end.
    private var received = ByteBuffer()
    private var searched = 0
    private var interimResponses = 0
    private var requestSent = false
    private var timer: Scheduled<Void>?

    /// Adds the handler at the end of `channel`'s pipeline (after TLS, if any). The future succeeds
    /// with `configure`'s value once upgraded, or fails: the server refused, answered something
    /// else, closed (a write that failed closes the channel too), or did not answer within `timeout`.
    static func install(on channel: Channel, host: String, path: String, headers: [(name: String, value: String)] = [],
                        maxFrameSize: Int, timeout: TimeAmount,
                        configure: @escaping (Channel) throws -> Value) throws -> EventLoopFuture<Value> {
        let handshake = WebSocketClientHandshake.random()
        guard let request = handshake.request(host: host, path: path, headers: headers) else {
            throw WebSocketDialError(description: "the upgrade request for \(host)\(path) would not be well-formed")
        }
        let promise = channel.eventLoop.makePromise(of: Value.self)
        let handler = WebSocketClientUpgradeHandler(handshake: handshake, request: request, maxFrameSize: maxFrameSize,
                                                    timeout: timeout, configure: configure, promise: promise)
        do {
            try channel.pipeline.syncOperations.addHandler(handler)
        } catch {
            promise.fail(error)  // a promise left pending is a leak NIO reports
            throw error
        }
        return promise.futureResult
    }

    private init(handshake: WebSocketClientHandshake, request: String, maxFrameSize: Int, timeout: TimeAmount,
                 configure: @escaping (Channel) throws -> Value, promise: EventLoopPromise<Value>) {
        self.handshake = handshake
        self.request = request
        self.maxFrameSize = maxFrameSize
        self.timeout = timeout
        self.configure = configure
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            handler.fail(context, "no WebSocket upgrade within \(handler.timeout)")
        }
        if context.channel.isActive { sendRequest(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        if case .waiting = state { fail(context, "the upgrade was abandoned") }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendRequest(context)
        context.fireChannelActive()
    }

    private func sendRequest(_ context: ChannelHandlerContext) {
        guard !requestSent else { return }
        requestSent = true
        context.writeAndFlush(NIOAny(ByteBuffer(string: request)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .waiting = state else {
            if case .upgraded = state { context.fireChannelRead(data) }
            return
        }
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        judge(context)
    }

    /// At most this many interim 1xx answers before the 101.
    static var maximumInterimResponses: Int { 8 }

    private func judge(_ context: ChannelHandlerContext) {
        switch handshake.evaluate(received.readableBytesView, searchFrom: searched) {
        case .incomplete:
            searched = received.readableBytes
        case .interim(let headLength):
            interimResponses += 1
            guard interimResponses <= Self.maximumInterimResponses else { return fail(context, "too many interim responses") }
            received.moveReaderIndex(forwardBy: headLength)
            received.discardReadBytes()
            searched = 0
            judge(context)
        case .refused(let status):
            fail(context, "the server answered \(status), not 101")
        case .invalid(let reason):
            fail(context, "not a WebSocket upgrade: \(reason)")
        case .upgraded(let headLength):
            let leftover = received.getSlice(at: received.readerIndex + headLength, length: received.readableBytes - headLength)
            received = ByteBuffer()
            upgrade(context, leftover: leftover ?? ByteBuffer())
        }
    }

    private func upgrade(_ context: ChannelHandlerContext, leftover: ByteBuffer) {
        timer?.cancel()
        let value: Value
        do {
            try context.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
            try context.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            // A frame the decoder refuses (too large, a fragmented control frame) is answered with
            // the close code RFC 6455 §7.4.1 names (1009, 1002) before the connection closes.
            try context.pipeline.syncOperations.addHandler(WebSocketProtocolErrorHandler(isServer: false))
            value = try configure(context.channel)
        } catch {
            return fail(context, "the upgraded pipeline could not be set up: \(error)")
        }
        state = .upgraded
        promise.succeed(value)
        // In order: what came with the 101 goes to the frame decoder before any later read or event.
        if leftover.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(leftover)) }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .waiting = state, event as? ChannelEvent == .inputClosed {
            return fail(context, "the server closed the connection before upgrading")
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .waiting = state { fail(context, "the connection closed before the upgrade") }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard case .upgraded = state else { return fail(context, "\(error)") }
        context.fireErrorCaught(error)
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        guard case .waiting = state else { return }
        state = .failed
        timer?.cancel()
        promise.fail(WebSocketDialError(description: reason))
        context.close(promise: nil)
    }
}
