import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import HummingbirdWSClient
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ParleySignaling
import ParleyWire
import Synchronization

/// Forwards a request about a call this process does not hold to the transceiver that owns it (the
/// endpoint sealed in the call id, `CallLocation`): one hop, over the cluster's network, with the
/// client's credential and address. The Service in front of the transceivers may send a call's
/// GET, PATCH, DELETE or sideband to any pod; this makes every pod answer for every call of the
/// cluster without shared state. The owner checks the credential and answers; its answer goes back
/// as it is.
final class CallForwarder: Sendable {
    /// A forwarded answer is an SDP answer or a call's JSON: well under this.
    static let maximumAnswerBytes = 1024 * 1024
    /// The owner is on the cluster's network: a second is long for a connection, ten for an answer
    /// (an ICE restart's answer is ready in milliseconds).
    static let connectTimeout: TimeAmount = .seconds(1)
    static let answerTimeout: TimeAmount = .seconds(10)

    private let http: HTTPClient
    private let logger: Logger
    private let metrics: TransceiverMetrics
    /// Open forwarded sidebands, each with the signal that ends it when the process stops.
    private let sidebands = Mutex<(stopped: Bool, next: Int, waiters: [Int: StopSignal])>((false, 0, [:]))
    /// The owner may send events as large as a data-channel message escaped as JSON text (a 256 KiB
    /// message of control characters is ~1.5 MiB): the limit toward the app's server is the
    /// direct sideband's backlog, not a frame size.
    static let maximumSidebandFrame = 8 << 20
    static let sidebandHandshakeTimeout: Duration = .seconds(2)

    init(logger: Logger, metrics: TransceiverMetrics) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: Self.connectTimeout, read: Self.answerTimeout))
        configuration.httpVersion = .http1Only
        http = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
        self.logger = logger
        self.metrics = metrics
    }

    func shutdown() async {
        closeSidebands()
        try? await http.shutdown()
    }

    /// The request target as both ends see it (path and query), which a forward is sealed for.
    static func target(of request: Request) -> String {
        request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
    }

    /// Headers the owner gets: the body's type and the sealed forward (the credential as this pod
    /// authenticated it, the client's address and region as it resolved them). Never the client's
    /// own Authorization: the owner's address comes from a call id, and by the time a request comes
    /// that address may be someone else's.
    static func forwardedHeaders(of request: Request, seal: String) -> HTTPHeaders {
        var headers = HTTPHeaders()
        if let value = request.headers[.contentType] { headers.add(name: HTTPField.Name.contentType.rawName, value: value) }
        headers.add(name: ForwardedRequest.header, value: seal)
        return headers
    }

    /// A request's answer from `owner`: its status, type, location, authentication challenge and body.
    func forward(_ request: Request, body: ByteBuffer?, to owner: TransportAddress, seal: String) async throws(SignalingError) -> Response {
        var outbound = HTTPClientRequest(url: "http://\(owner)\(Self.target(of: request))")
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        outbound.headers = Self.forwardedHeaders(of: request, seal: seal)
        if let body { outbound.body = .bytes(body) }
        do {
            let answer = try await http.execute(outbound, timeout: Self.answerTimeout)
            let bytes = try await answer.body.collect(upTo: Self.maximumAnswerBytes)
            metrics.forwardedAnswered.increment()
            var headers = HTTPFields()
            for name in [HTTPField.Name.contentType, .location, .retryAfter, .wwwAuthenticate] {
                if let value = answer.headers.first(name: name.rawName) { headers[name] = value }
            }
            return Response(status: .init(code: Int(answer.status.code)), headers: headers, body: .init(byteBuffer: bytes))
        } catch {
            metrics.forwardedUnreachable.increment()
            logger.warning("the call's transceiver did not answer a forwarded request", metadata: [
                "owner": "\(owner)", "path": "\(request.uri.path)", "error": "\(error)",
            ])
            throw Self.unreachable(owner)
        }
    }

    /// The sideband, through to the owner's: frames both ways until either side closes, then the
    /// owner's close code (4404 for a call it does not know, say) to the app's server; 1011 when the
    /// owner's connection ended without one; 4502 when the owner did not take the sideband within
    /// `sidebandHandshakeTimeout`; 1012 (restart: connect again, through any pod) when this process
    /// stops (`closeSidebands`), since a drain waits for this pod's calls, not for other pods' calls.
    func forwardSideband(callID: String, to owner: TransportAddress, seal: String, contentType: String?,
                         inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        guard let stop = registerSideband() else {
            try? await outbound.close(.unknown(1012), reason: "restarting: connect again")
            return
        }
        defer { unregisterSideband(stop.id) }
        var headers = HTTPFields()
        if let contentType { headers[.contentType] = contentType }
        headers[HTTPField.Name(ForwardedRequest.header)!] = seal
        let url = "ws://\(owner)\(Self.sidebandTarget(callID))"
        let started = ManagedFlag()
        enum Ending: Sendable { case owner(WebSocketCloseFrame?), failed(String), timedOut, stopping }
        let ending: Ending = await withTaskGroup(of: Ending?.self) { group in
            group.addTask { [logger, metrics, headers] in
                do {
                    let closing = try await WebSocketClient.connect(
                        url: url,
                        configuration: .init(maxFrameSize: Self.maximumSidebandFrame, additionalHeaders: headers,
                                             autoPing: .enabled(timePeriod: .seconds(15))),
                        logger: logger
                    ) { ownerInbound, ownerOutbound, _ in
                        started.set()
                        metrics.forwardedAnswered.increment()
                        await withTaskGroup(of: Void.self) { pipes in
                            pipes.addTask {
                                do {
                                    for try await message in ownerInbound.messages(maxSize: Self.maximumSidebandFrame) {
                                        try await outbound.write(Self.frame(message))
                                    }
                                } catch {}
                            }
                            pipes.addTask {
                                do {
                                    for try await message in inbound.messages(maxSize: SidebandCommand.maximumBytes) {
                                        try await ownerOutbound.write(Self.frame(message))
                                    }
                                } catch {}
                            }
                            await pipes.next()
                            pipes.cancelAll()
                        }
                    }
                    return .owner(closing)
                } catch {
                    return .failed("\(error)")
                }
            }
            group.addTask {
                try? await Task.sleep(for: Self.sidebandHandshakeTimeout)
                return Task.isCancelled || started.isSet ? nil : .timedOut
            }
            group.addTask {
                await stop.signal.wait()
                return Task.isCancelled ? nil : .stopping
            }
            var result: Ending = .failed("ended")
            while let next = await group.next() {
                if let next {
                    result = next
                    break
                }
            }
            group.cancelAll()
            return result
        }
        switch ending {
        case .owner(let closing?):
            try? await outbound.close(closing.closeCode, reason: closing.reason)
        case .owner(nil):
            try? await outbound.close(.unexpectedServerError, reason: "the call's transceiver went away: connect again")
        case .stopping:
            try? await outbound.close(.unknown(1012), reason: "restarting: connect again")
        case .failed(let reason) where started.isSet:
            logger.debug("forwarded sideband ended", metadata: ["owner": "\(owner)", "call": "\(callID)", "error": "\(reason)"])
            try? await outbound.close(.unexpectedServerError, reason: "the call's transceiver went away: connect again")
        case .failed, .timedOut:
            metrics.forwardedUnreachable.increment()
            logger.warning("the call's transceiver did not take a forwarded sideband", metadata: [
                "owner": "\(owner)", "call": "\(callID)", "error": "\(ending)",
            ])
            let refusal = Self.unreachable(owner)
            try? await outbound.write(.text(SidebandEvent.error(code: refusal.code, message: refusal.message).text))
            try? await outbound.close(.unknown(UInt16(clamping: 4000 + refusal.statusCode)), reason: refusal.code)
        }
    }

    /// The request target of a forwarded sideband (what its seal is for).
    static func sidebandTarget(_ callID: String) -> String { "/v1/realtime?call_id=\(callID)" }

    // MARK: Stopping

    /// Ends every forwarded sideband with 1012 and takes no more (the process is stopping).
    func closeSidebands() {
        let waiters = sidebands.withLock { state -> [StopSignal] in
            state.stopped = true
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.fire() }
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

    private static func hostText(_ address: TransportAddress) -> String {
        switch address {
        case .v4(let host, _): host.description
        case .v6(let host, _): host.description
        }
    }
}

/// Set once, read from any task.
private final class ManagedFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
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
