import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import ParleyIO
import ParleySignaling
import ParleyWire
import Synchronization

/// Forwards a request about a call this process does not hold to the transceiver that owns it (the
/// endpoint sealed in the call id, `CallLocation`): one hop, over the cluster's network. The
/// Service in front of the transceivers may send a call's GET, PATCH, DELETE or sideband to any
/// pod; this makes every pod answer for every call of the cluster without shared state. The
/// client's credential stays here: the owner gets a `ForwardedRequest` seal of what this pod
/// authenticated, and must prove it could open it (its nonce, in `answerHeader` or a sideband's
/// first frame) before its answer is passed on — an address a call id names may, by the time a
/// request comes, belong to something else.
final class CallForwarder: Sendable {
    /// A forwarded answer is an SDP answer or a call's JSON: well under this.
    static let maximumAnswerBytes = 1024 * 1024
    /// The owner is on the cluster's network: a second is long for a connection, ten for an answer
    /// (an ICE restart's answer is ready in milliseconds).
    static let connectTimeout: TimeAmount = .seconds(1)
    static let answerTimeout: TimeAmount = .seconds(10)
    /// The owner may send events as large as a data-channel message escaped as JSON text (a 256 KiB
    /// message of control characters is ~1.5 MiB): the limit toward the app's server is the
    /// direct sideband's backlog, not a frame size.
    static let maximumSidebandFrame = 8 << 20
    /// From the upgrade request to the owner's acknowledgement.
    static let sidebandHandshakeTimeout: Duration = .seconds(2)
    /// A forwarded sideband pings the owner this often; a period without a frame from it ends it.
    static let sidebandPingPeriod: Duration = .seconds(15)
    /// How long a stopping process waits for its forwarded sidebands to have sent their 1012.
    static let sidebandCloseWait: Duration = .seconds(2)

    private let http: HTTPClient
    private let logger: Logger
    private let metrics: TransceiverMetrics
    /// Open forwarded sidebands, each with the signal that ends it when the process stops.
    private let sidebands = Mutex<(stopped: Bool, next: Int, waiters: [Int: StopSignal])>((false, 0, [:]))

    init(logger: Logger, metrics: TransceiverMetrics) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: Self.connectTimeout, read: Self.answerTimeout))
        configuration.httpVersion = .http1Only
        // Below the owner's idle timeout (60 s by default): a pooled connection the owner has just
        // closed would fail a request.
        configuration.connectionPool = .init(idleTimeout: .seconds(30))
        http = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
        self.logger = logger
        self.metrics = metrics
    }

    func shutdown() async {
        await closeSidebands()
        try? await http.shutdown()
    }

    /// The request target as both ends see it (path and query), which a forward is sealed for.
    static func target(of request: Request) -> String {
        request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
    }

    /// A request's answer from `owner`: its status, type, authentication challenge and body, once the
    /// owner has shown it opened the seal (else 502: whatever answered is no transceiver of ours).
    func forward(_ request: Request, body: ByteBuffer?, to owner: TransportAddress,
                 seal: (text: String, nonce: String)) async throws(SignalingError) -> Response {
        var outbound = HTTPClientRequest(url: "http://\(owner)\(Self.target(of: request))")
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        if let value = request.headers[.contentType] { outbound.headers.add(name: HTTPField.Name.contentType.rawName, value: value) }
        outbound.headers.add(name: ForwardedRequest.header, value: seal.text)
        if let body { outbound.body = .bytes(body) }
        let problem: String
        do {
            let answer = try await http.execute(outbound, timeout: Self.answerTimeout)
            let bytes = try await answer.body.collect(upTo: Self.maximumAnswerBytes)
            if answer.headers.first(name: ForwardedRequest.answerHeader) == seal.nonce, (200..<300).contains(answer.status.code)
                || (400..<600).contains(answer.status.code) {
                metrics.forwardedAnswered.increment()
                var headers = HTTPFields()
                for name in [HTTPField.Name.contentType, .retryAfter, .wwwAuthenticate] {
                    if let value = answer.headers.first(name: name.rawName) { headers[name] = value }
                }
                return Response(status: .init(code: Int(clamping: answer.status.code)), headers: headers, body: .init(byteBuffer: bytes))
            }
            problem = "an answer (\(answer.status.code)) without the forward's nonce: not a transceiver of this cluster"
        } catch {
            problem = "\(error)"
        }
        metrics.forwardedUnreachable.increment()
        logger.warning("the call's transceiver did not answer a forwarded request", metadata: [
            "owner": "\(owner)", "path": "\(request.uri.path)", "error": "\(problem)",
        ])
        throw Self.unreachable(owner)
    }

    /// How a forwarded sideband ended.
    private enum Ending: Sendable {
        /// The owner closed (its code and reason), or its connection ended without a close frame.
        case owner((code: WebSocketErrorCode, reason: String?)?)
        case failed(String)
        case timedOut
        case stopping
    }

    /// The sideband, through to the owner's: frames both ways until either side closes, then the
    /// owner's close code (4404 for a call it does not know, say) to the app's server; 1011 when the
    /// owner's connection ended without one, or failed after it was set up; 4502 when the owner
    /// did not take it and acknowledge the forward within `sidebandHandshakeTimeout`; 1012 (restart:
    /// connect again, through any pod) when this process stops (`closeSidebands`), since a drain
    /// waits for this pod's calls, not for other pods' calls. The app's server is answered at once
    /// in every case: the owner's connection is left to end on its own (NIO's connect timeout, or
    /// its pipes failing once this side has closed).
    func forwardSideband(callID: String, to owner: TransportAddress, seal: (text: String, nonce: String),
                         inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        guard let registration = registerSideband() else {
            try? await outbound.close(.unknown(1012), reason: "restarting: connect again")
            return
        }
        defer { unregisterSideband(registration.id) }
        let acknowledgement = ForwardedRequest.sidebandAcknowledgement(nonce: seal.nonce)
        let race = Race<Ending>()
        let acknowledged = Flag()
        let session = Task { [metrics] in
            do {
                let link = try await Self.dial(owner, path: Self.sidebandTarget(callID), seal: seal.text)
                let ending = try await link.executeThenClose { fromOwner, toOwner in
                    try await Self.relay(owner: link.channel, fromOwner: fromOwner, toOwner: toOwner, acknowledgement: acknowledgement,
                                         inbound: inbound, outbound: outbound) {
                        acknowledged.set()
                        metrics.forwardedAnswered.increment()
                    }
                }
                race.finish(ending)
            } catch {
                race.finish(.failed("\(error)"))
            }
        }
        let timer = Task {
            try? await Task.sleep(for: Self.sidebandHandshakeTimeout)
            if !Task.isCancelled, !acknowledged.isSet { race.finish(.timedOut) }
        }
        let stopper = Task {
            await registration.signal.wait()
            if !Task.isCancelled { race.finish(.stopping) }
        }
        let ending = await race.result()
        timer.cancel()
        stopper.cancel()
        switch ending {
        case .owner(let closing?):
            try? await outbound.close(Self.passable(closing.code), reason: Self.closeReason(closing.reason))
        case .owner(nil):
            try? await outbound.close(.unexpectedServerError, reason: "the call's transceiver went away: connect again")
        case .stopping:
            try? await outbound.close(.unknown(1012), reason: "restarting: connect again")
            session.cancel()
        case .failed(let reason) where acknowledged.isSet:
            logger.debug("forwarded sideband ended", metadata: ["owner": "\(owner)", "call": "\(callID)", "error": "\(reason)"])
            try? await outbound.close(.unexpectedServerError, reason: "the call's transceiver went away: connect again")
        case .failed, .timedOut:
            session.cancel()
            metrics.forwardedUnreachable.increment()
            logger.warning("the call's transceiver did not take a forwarded sideband", metadata: [
                "owner": "\(owner)", "call": "\(callID)", "error": "\(ending)",
            ])
            let refusal = Self.unreachable(owner)
            try? await outbound.write(.text(SidebandEvent.error(code: refusal.code, message: refusal.message).text))
            try? await outbound.close(.unknown(UInt16(clamping: 4000 + refusal.statusCode)), reason: refusal.code)
        }
    }

    /// A WebSocket to the owner's sideband, its upgrade sealed for the forward; frames reassembled
    /// up to `maximumSidebandFrame`. Fails (the channel closed) if the owner does not upgrade within
    /// `sidebandHandshakeTimeout`.
    private static func dial(_ owner: TransportAddress, path: String, seal: String) async throws
        -> NIOAsyncChannel<WebSocketFrame, WebSocketFrame> {
        let upgrade = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(to: owner.socketAddress) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try WebSocketClientUpgradeHandler<NIOAsyncChannel<WebSocketFrame, WebSocketFrame>>.install(
                        on: channel, host: "\(owner)", path: path, headers: [(ForwardedRequest.header, seal)],
                        maxFrameSize: maximumSidebandFrame, timeout: .nanoseconds(Int64(sidebandHandshakeTimeout.nanoseconds))
                    ) { channel in
                        try channel.pipeline.syncOperations.addHandler(
                            NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1024,
                                                        maxAccumulatedFrameSize: maximumSidebandFrame))
                        // Two frames queued at most (each up to 8 MiB) while the app's server is slow to read.
                        return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(
                            backPressureStrategy: .init(lowWatermark: 1, highWatermark: 2)))
                    }
                }
            }
        return try await upgrade.get()
    }

    /// What the owner's end of a forwarded sideband did, and what this side does in answer.
    private enum OwnerEvent {
        case message(WebSocketOutboundWriter.OutboundFrame)
        case ping(ByteBuffer)
        case close(code: WebSocketErrorCode, reason: String?)
        /// A close frame whose code may not be sent (RFC 6455 §7.4.1): answered with 1002.
        case invalidClose
        case ignored
    }

    private static func classify(_ frame: WebSocketFrame) -> OwnerEvent {
        switch frame.opcode {
        case .text: return .message(.text(String(buffer: frame.unmaskedData)))
        case .binary: return .message(.binary(frame.unmaskedData))
        case .ping: return .ping(frame.unmaskedData)
        case .connectionClose:
            var data = frame.unmaskedData
            guard data.readableBytes > 0 else { return .close(code: .normalClosure, reason: nil) }  // no status (1005)
            guard let code = data.readInteger(as: UInt16.self), isSendableCloseCode(code),
                  let reason = (try? data.readUTF8ValidatedString(length: data.readableBytes)).flatMap({ $0 }) else {
                return .invalidClose
            }
            return .close(code: WebSocketErrorCode(codeNumber: Int(code)), reason: reason.isEmpty ? nil : reason)
        default: return .ignored
        }
    }

    /// Codes an endpoint may put in a close frame (RFC 6455 §7.4.1, §7.4.2).
    static func isSendableCloseCode(_ code: UInt16) -> Bool {
        (1000...1003).contains(code) || (1007...1014).contains(code) || (3000...4999).contains(code)
    }

    /// Frames both ways between the owner (`owner`: a client's end, so every frame sent is masked)
    /// and the app's server, once the owner's first frame is the forward's acknowledgement
    /// (`onAcknowledged` is called then). Ends with the owner's close (echoed once), the owner's
    /// connection ending, the app's server leaving (a 1000 to the owner, a second for its answer),
    /// or the owner sending nothing — not even the pong to a ping — for a whole ping period while
    /// this side was not itself held up writing to the app's server.
    private static func relay(owner channel: Channel, fromOwner: NIOAsyncChannelInboundStream<WebSocketFrame>,
                              toOwner: NIOAsyncChannelOutboundWriter<WebSocketFrame>, acknowledgement: String,
                              inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
                              onAcknowledged: @escaping @Sendable () -> Void) async throws -> Ending {
        func send(_ opcode: WebSocketOpcode, _ data: ByteBuffer) async throws {
            try await toOwner.write(WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data))
        }
        let closeSent = Flag()
        func sendClose(_ code: WebSocketErrorCode) async throws {
            guard !closeSent.take(setting: true) else { return }
            var payload = ByteBuffer()
            payload.write(webSocketErrorCode: code)
            try await send(.connectionClose, payload)
        }
        let heard = Flag()
        let writingToApp = Flag()
        let ready = StopSignal()
        return try await withThrowingTaskGroup(of: Ending.self) { pipes in
            pipes.addTask {
                var frames = fromOwner.makeAsyncIterator()
                // The owner's first frame proves it opened the seal; anything else is no owner.
                guard let first = try await frames.next(), case .message(.text(acknowledgement)) = classify(first) else {
                    return .failed("the owner did not acknowledge the forward")
                }
                onAcknowledged()
                heard.set()  // the first ping period counts from here
                ready.fire()
                while let frame = try await frames.next() {
                    heard.set()
                    switch classify(frame) {
                    case .message(let message):
                        writingToApp.set()
                        defer { writingToApp.clear() }
                        try await outbound.write(message)
                    case .ping(let data): try await send(.pong, data)
                    case .close(let code, let reason):
                        try? await sendClose(code)
                        return .owner((code, reason))
                    case .invalidClose:
                        try? await sendClose(.protocolError)
                        return .owner(nil)
                    case .ignored: break
                    }
                }
                return .owner(nil)
            }
            pipes.addTask {
                await ready.wait()
                try Task.checkCancellation()
                for try await message in inbound.messages(maxSize: SidebandCommand.maximumBytes) {
                    switch message {
                    case .text(let text): try await send(.text, ByteBuffer(string: text))
                    case .binary(let bytes): try await send(.binary, bytes)
                    }
                }
                // The app's server left: the owner is told, and has a second to answer.
                try await sendClose(.normalClosure)
                try await Task.sleep(for: .seconds(1))
                return .owner((.normalClosure, nil))
            }
            pipes.addTask {
                await ready.wait()
                while true {
                    try await Task.sleep(for: sidebandPingPeriod)
                    guard heard.take() || writingToApp.isSet else { return .failed("the owner stopped answering pings") }
                    // Written past the writer's queue, so a stalled owner cannot hold up this check.
                    channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .ping, maskKey: .random(),
                                                         data: ByteBuffer(string: "parley")), promise: nil)
                }
            }
            defer { pipes.cancelAll() }
            return try await pipes.next() ?? .owner(nil)
        }
    }

    /// A close reason as a close frame may carry it: at most 123 bytes of UTF-8 (RFC 6455 §5.5),
    /// cut at a character boundary.
    static func closeReason(_ reason: String?) -> String? {
        guard let reason else { return nil }
        var cut = ""
        for character in reason {
            guard cut.utf8.count + String(character).utf8.count <= 123 else { break }
            cut.append(character)
        }
        return cut
    }

    /// The request target of a forwarded sideband (what its seal is for).
    static func sidebandTarget(_ callID: String) -> String { "/v1/realtime?call_id=\(callID)" }

    /// Close codes one may send (RFC 6455 §7.4: 1005, 1006 and 1015 never go on the wire), as the
    /// owner's; anything else is 1011.
    static func passable(_ code: WebSocketErrorCode) -> WebSocketErrorCode {
        switch code {
        case .normalClosure, .goingAway, .policyViolation, .unexpectedServerError: return code
        case .unknown(let value) where value == 1012 || value == 1013 || (4000...4999).contains(value): return code
        default: return .unexpectedServerError
        }
    }

    // MARK: Stopping

    /// Ends every forwarded sideband with 1012, takes no more, and waits (a little) until they have
    /// sent it: the server's own shutdown would close them with 1000, "call ended".
    func closeSidebands() async {
        let waiters = sidebands.withLock { state -> [StopSignal] in
            state.stopped = true
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.fire() }
        let deadline = ContinuousClock.now + Self.sidebandCloseWait
        while ContinuousClock.now < deadline, !sidebands.withLock({ $0.waiters.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private struct Registration: Sendable {
        let id: Int
        let signal: StopSignal
    }

    private func registerSideband() -> Registration? {
        sidebands.withLock { state in
            guard !state.stopped else { return nil }
            state.next += 1
            let signal = StopSignal()
            state.waiters[state.next] = signal
            return Registration(id: state.next, signal: signal)
        }
    }

    private func unregisterSideband(_ id: Int) {
        _ = sidebands.withLock { $0.waiters.removeValue(forKey: id) }
    }

    private static func frame(_ message: WebSocketMessage) -> WebSocketOutboundWriter.OutboundFrame {
        switch message {
        case .text(let text): .text(text)
        case .binary(let bytes): .binary(bytes)
        }
    }

    private static func unreachable(_ owner: TransportAddress) -> SignalingError {
        SignalingError(statusCode: 502, type: "server_error", code: "call_owner_unreachable",
                       message: "the transceiver that owns this call did not answer (it may have ended)")
    }
}

/// Set once, read from any task.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
    func clear() { value.store(false, ordering: .releasing) }
    /// Whether it was set, leaving it `setting`.
    func take(setting: Bool = false) -> Bool { value.exchange(setting, ordering: .acquiringAndReleasing) }
}

/// The first of several outcomes, awaited once.
private final class Race<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, waiter: CheckedContinuation<Value, Never>?)>((nil, nil))

    func finish(_ value: Value) {
        let waiter = state.withLock { state -> CheckedContinuation<Value, Never>? in
            guard state.value == nil else { return nil }
            state.value = value
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: value)
    }

    func result() async -> Value {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Value? in
                if let value = state.value { return value }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Fired once; every `wait` returns then (at once after it, or when its task is cancelled).
final class StopSignal: Sendable {
    private let state = Mutex<(fired: Bool, next: Int, waiters: [Int: CheckedContinuation<Void, Never>])>((false, 0, [:]))

    func fire() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.fired = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        let id = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.fired || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
