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
        try? await http.shutdown()
    }

    /// Headers the owner needs: the credential, the body's type, the client's address (appended to
    /// the chain, as a proxy does: the owner believes it from a `--trusted-proxy`, which the pods'
    /// network is), the edge's region header, and the mark that stops a second hop.
    static func forwardedHeaders(of request: Request, client: TransportAddress, regionHeader: String) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for name in [HTTPField.Name.authorization, .contentType] {
            if let value = request.headers[name] { headers.add(name: name.rawName, value: value) }
        }
        if let region = HTTPField.Name(regionHeader) {
            for value in request.headers[values: region] { headers.add(name: region.rawName, value: value) }
        }
        let forwardedFor = HTTPField.Name("X-Forwarded-For")!
        let chain = request.headers[values: forwardedFor] + [Self.hostText(client)]
        headers.add(name: forwardedFor.rawName, value: chain.joined(separator: ", "))
        headers.add(name: CallLocation.forwardedHeader, value: "1")
        return headers
    }

    /// A request's answer from `owner`: its status, type, location and body.
    func forward(_ request: Request, body: ByteBuffer?, to owner: TransportAddress, client: TransportAddress,
                 regionHeader: String) async throws(SignalingError) -> Response {
        var outbound = HTTPClientRequest(url: "http://\(owner)\(request.uri.string)")
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        outbound.headers = Self.forwardedHeaders(of: request, client: client, regionHeader: regionHeader)
        if let body { outbound.body = .bytes(body) }
        do {
            let answer = try await http.execute(outbound, timeout: Self.answerTimeout)
            let bytes = try await answer.body.collect(upTo: Self.maximumAnswerBytes)
            metrics.forwardedAnswered.increment()
            var headers = HTTPFields()
            for name in [HTTPField.Name.contentType, .location, .retryAfter] {
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
    /// owner's close code (4404 for a call it does not know, say) to the app's server.
    func forwardSideband(_ request: Request, callID: String, to owner: TransportAddress, client: TransportAddress,
                         regionHeader: String, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        var headers = HTTPFields()
        for (name, value) in Self.forwardedHeaders(of: request, client: client, regionHeader: regionHeader) {
            if let field = HTTPField.Name(name) { headers[values: field].append(value) }
        }
        let url = "ws://\(owner)/v1/realtime?call_id=\(callID)"
        let maximum = SidebandCommand.maximumBytes
        let closing: WebSocketCloseFrame?
        do {
            closing = try await WebSocketClient.connect(
                url: url, configuration: .init(maxFrameSize: max(maximum, 1 << 20), additionalHeaders: headers),
                logger: logger
            ) { ownerInbound, ownerOutbound, _ in
                self.metrics.forwardedAnswered.increment()
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            for try await message in ownerInbound.messages(maxSize: 1 << 20) {
                                try await outbound.write(Self.frame(message))
                            }
                        } catch {}
                    }
                    group.addTask {
                        do {
                            for try await message in inbound.messages(maxSize: maximum) {
                                try await ownerOutbound.write(Self.frame(message))
                            }
                        } catch {}
                    }
                    await group.next()
                    group.cancelAll()
                }
            }
        } catch {
            metrics.forwardedUnreachable.increment()
            logger.warning("the call's transceiver did not take a forwarded sideband", metadata: [
                "owner": "\(owner)", "call": "\(callID)", "error": "\(error)",
            ])
            let refusal = Self.unreachable(owner)
            try? await outbound.write(.text(SidebandEvent.error(code: refusal.code, message: refusal.message).text))
            try? await outbound.close(.unknown(UInt16(clamping: 4000 + refusal.statusCode)), reason: refusal.code)
            return
        }
        if let closing {
            try? await outbound.close(closing.closeCode, reason: closing.reason)
        } else {
            try? await outbound.close(.normalClosure, reason: nil)
        }
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
