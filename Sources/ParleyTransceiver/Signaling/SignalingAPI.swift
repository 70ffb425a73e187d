import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import ParleyIO
import ParleySession
import ParleySignaling
import ParleyWire
import Prometheus

/// The signaling API, in the shape of OpenAI's Realtime API over WebRTC (docs/api.md):
///
///     POST   /v1/realtime/client_secrets     API key → a client secret (`ek_…`) for a browser
///     POST   /v1/realtime/calls              SDP offer (application/sdp, or multipart sdp + session) → 201, SDP answer
///     GET    /v1/realtime/calls/{id}         the call's state and counters (JSON)
///     PATCH  /v1/realtime/calls/{id}         a new SDP offer (ICE restart) → 200, SDP answer
///     DELETE /v1/realtime/calls/{id}         ends the call → 204
///     POST   /v1/realtime/calls/{id}/hangup  ends the call → 204
///     GET    /v1/realtime?call_id={id}       the sideband: a WebSocket for the app's server
///     POST   /admin/drain                    starts draining (API key) → 202
///     GET    /healthz, /readyz               liveness; readiness (503 while draining)
///     GET    /                               the demo page (`parley dev` only)
///
/// Every request but the health checks and the demo page carries `Authorization: Bearer` with an
/// API key or a client secret; calls belong to the credential that made them. The decisions are
/// ParleySignaling's; this is the HTTP shell around them.
public struct SignalingAPI: Sendable {
    public static let maximumOfferBytes = 64 * 1024
    /// A multipart body: the offer, a session, and the form's framing.
    public static let maximumMultipartBytes = maximumOfferBytes + SessionConfiguration.maximumBytes + 4096

    let transceiver: Transceiver
    let addresses: ClientAddressResolver
    /// Serve the demo page at `/` (`parley dev`; `parley transceiver --demo-page`, where the page
    /// takes its client secret from `?client_secret=`).
    let demoPage: Bool
    /// `parley dev` only: `POST /dev/client_secret` mints secrets for the page with this key (nil
    /// with `--insecure-no-auth`), the part an app's backend plays in production.
    let devSecrets: DevSecrets?
    /// Called by `POST /admin/drain` (the process's drain: the transceiver, and what else it runs).
    let onDrain: @Sendable () -> Void

    public struct DevSecrets: Sendable {
        public var key: String?
        public init(key: String?) { self.key = key }
    }

    public init(transceiver: Transceiver, demoPage: Bool = false, devSecrets: DevSecrets? = nil,
                onDrain: @escaping @Sendable () -> Void = {}) {
        self.transceiver = transceiver
        addresses = ClientAddressResolver(trustedProxies: transceiver.configuration.trustedProxies)
        self.demoPage = demoPage || devSecrets != nil
        self.devSecrets = devSecrets
        self.onDrain = onDrain
    }

    public func makeRouter() -> Router<SignalingContext> {
        let router = Router(context: SignalingContext.self)
        router.add(middleware: RequestMetricsMiddleware(metrics: transceiver.metrics))
        router.add(middleware: ForwardAnswerMiddleware(transceiver: transceiver))
        // A page served from another origin (or port) calls the API after a CORS preflight.
        router.add(middleware: CORSMiddleware(
            allowOrigin: .all, allowHeaders: [.contentType, .authorization], allowMethods: [.get, .post, .patch, .delete, .options],
            exposedHeaders: ["Location"]))
        router.post("/v1/realtime/client_secrets") { request, context in try await mintClientSecret(request, context) }
        router.post("/v1/realtime/calls") { request, context in try await createCall(request, context) }
        router.get("/v1/realtime/calls/{id}") { request, context in try await describeCall(request, context) }
        router.patch("/v1/realtime/calls/{id}") { request, context in try await renegotiate(request, context) }
        router.delete("/v1/realtime/calls/{id}") { request, context in try await endCall(request, context) }
        router.post("/v1/realtime/calls/{id}/hangup") { request, context in try await endCall(request, context) }
        router.ws("/v1/realtime") { request, context in
            try await sidebandShouldUpgrade(request, context)
        } onUpgrade: { inbound, outbound, context in
            await sideband(inbound: inbound, outbound: outbound, request: context.request, context: context.requestContext)
        }
        router.post("/admin/drain") { request, context in try await drain(request, context) }
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ in try readiness() }
        if demoPage {
            router.get("/") { _, _ in
                Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                         body: .init(byteBuffer: ByteBuffer(string: DemoPage.html)))
            }
        }
        if let devSecrets {
            router.post("/dev/client_secret") { request, context in try await devClientSecret(request, context, key: devSecrets.key) }
        }
        return router
    }

    /// 200 while taking calls, 503 while draining: what a load balancer's readiness probe reads.
    func readiness() throws -> Response {
        guard !transceiver.isDraining else {
            return Response(status: .serviceUnavailable, headers: [.contentType: "text/plain", .retryAfter: "1"],
                            body: .init(byteBuffer: ByteBuffer(string: "draining\n")))
        }
        return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
    }

    // MARK: Credentials

    /// The request's credential. A failed one counts against its address's rate, so keys cannot be
    /// guessed faster than calls can be made.
    /// `acceptForward`: the request may be another transceiver's forward (requests about a call);
    /// anywhere else a forward's header is refused.
    private func credential(_ request: Request, _ context: SignalingContext, acceptForward: Bool = false) throws(SignalingError) -> Credential {
        // Another transceiver's forward: the credential it authenticated, sealed for this request.
        if request.headers[HTTPField.Name(ForwardedRequest.header)!] != nil {
            guard acceptForward, let forward = try forwardClaims(request), let credential = forward.credential else { throw .invalidForward }
            return credential
        }
        do {
            return try transceiver.authenticate(authorization: request.headers[.authorization])
        } catch {
            try transceiver.admit(address: clientAddress(request, context))
            throw error
        }
    }

    /// The claims of another transceiver's forward of this request (nil: not a forward); a forged,
    /// stale or misdirected one is a 401.
    private func forwardClaims(_ request: Request) throws(SignalingError) -> ForwardedRequest.Claims? {
        guard let text = request.headers[HTTPField.Name(ForwardedRequest.header)!] else { return nil }
        return try transceiver.openForward(text, method: request.method.rawValue, target: CallForwarder.target(of: request))
    }

    /// The relays an answer for this request advertises, nearest the client first (nil without a
    /// relay directory: the configured addresses).
    func nearestRelays(_ request: Request, _ context: SignalingContext) -> [TransportAddress]? {
        guard let directory = transceiver.configuration.relayDirectory, !directory.isEmpty else { return nil }
        return directory.relays(for: directory.region(header: edgeRegion(request, context), client: clientAddress(request, context)))
    }

    /// The region header is the edge's word: believed only from a --trusted-proxy, and its last
    /// value (the one the edge appended) if a client sent one of its own too; a forward carries the
    /// region the forwarding transceiver believed.
    func edgeRegion(_ request: Request, _ context: SignalingContext) -> String? {
        if let forward = try? forwardClaims(request) { return forward.region }
        let peer = context.remoteAddress.flatMap(TransportAddress.init)
        let fromEdge = peer.map { peer in transceiver.configuration.trustedProxies.contains { $0.contains(peer) } } ?? false
        return fromEdge ? HTTPField.Name(transceiver.configuration.regionHeader).flatMap { request.headers[values: $0].last } : nil
    }

    func clientAddress(_ request: Request, _ context: SignalingContext) -> TransportAddress {
        if let forward = try? forwardClaims(request), let client = TransportAddress(forward.client) { return client }
        let peer = context.remoteAddress.flatMap(TransportAddress.init) ?? .v4(IPv4Address(0, 0, 0, 0), port: 0)
        return addresses.resolve(peer: peer, forwardedFor: request.headers[values: HTTPField.Name("X-Forwarded-For")!])
    }

    // MARK: Client secrets

    private func mintClientSecret(_ request: Request, _ context: SignalingContext) async throws -> Response {
        let credential = try credential(request, context)
        let body = try await collect(request, limit: SessionConfiguration.maximumBytes + 1024, what: "the request")
        let (session, lifetime) = try ClientSecretRequest.parse(body)
        let minted = try transceiver.mintClientSecret(for: credential, session: session, lifetimeSeconds: lifetime)
        context.logger.info("client secret minted", metadata: [
            "key": "\(credential.keyID)", "secret": "\(minted.claims.id)", "expires_in": "\(lifetime)",
        ])
        return json(.ok, ClientSecretRequest.response(minted))
    }

    /// `parley dev`'s page gets its secret here, with no credential: the part an app's backend plays.
    private func devClientSecret(_ request: Request, _ context: SignalingContext, key: String?) async throws -> Response {
        // Open to anyone who reaches the port (that is its purpose: no app server in dev), so each
        // secret counts against the caller's address like a call.
        try transceiver.admit(address: clientAddress(request, context))
        let credential = try transceiver.authenticate(authorization: key.map { "Bearer " + $0 })
        let body = try await collect(request, limit: SessionConfiguration.maximumBytes + 1024, what: "the request")
        let (session, lifetime) = try ClientSecretRequest.parse(body)
        return json(.ok, ClientSecretRequest.response(
            try transceiver.mintClientSecret(for: credential, session: session, lifetimeSeconds: lifetime)))
    }

    // MARK: Calls

    private func createCall(_ request: Request, _ context: SignalingContext) async throws -> Response {
        let credential = try credential(request, context)
        // An app's server holding an API key may start many calls from one address (its own): its
        // key's limits bound it. Browsers (client secrets) and open servers count per address.
        if case .apiKey = credential {} else { try transceiver.admit(address: clientAddress(request, context)) }
        let contentType = request.headers[.contentType]
        let isMultipart = OfferRequest.mediaType(contentType) == "multipart/form-data"
        let body = try await collect(request, limit: isMultipart ? Self.maximumMultipartBytes : Self.maximumOfferBytes,
                                     what: "the offer")
        let offer = try OfferRequest.parse(contentType: contentType, body: body)
        let session = try SessionConfiguration.resolve(requested: offer.session, credential: credential,
                                                       agents: transceiver.configuration.agentNames)
        // `?dcid=N`: the client made `oai-events` a negotiated channel on stream N (no DCEP).
        var eventsChannel: UInt16?
        if let text = request.uri.queryParameters.get("dcid") {
            let streams = SNAPInits.configuration.streams
            guard text.utf8.allSatisfy({ (48...57).contains($0) }), let id = UInt16(text), id < streams else {
                throw SignalingError.badRequest("dcid must be a data channel stream id, 0 to \(streams - 1)", code: "invalid_dcid")
            }
            eventsChannel = id
        }
        let (id, answer) = try await transceiver.createCall(offer: offer.sdp, session: session, credential: credential,
                                                            relays: nearestRelays(request, context), eventsChannel: eventsChannel)
        context.logger.info("call created", metadata: [
            "call": "\(id)", "owner": "\(credential.description)", "agent": "\(session.agent ?? "default")",
        ])
        return Response(status: .created, headers: [.contentType: "application/sdp", .location: "/v1/realtime/calls/\(id)"],
                        body: .init(byteBuffer: ByteBuffer(string: answer)))
    }

    /// Where a request about call `id` is answered (`CallLocation`): by another transceiver of the
    /// cluster when the id names one and this process does not hold the call.
    private func owner(ofCall id: String, _ request: Request) -> TransportAddress? {
        let forwarded = request.headers[HTTPField.Name(CallLocation.forwardedHeader)!] != nil
        guard case .elsewhere(let owner) = transceiver.location(ofCall: id, forwarded: forwarded) else { return nil }
        return owner
    }

    /// `request`, answered by the call's owner, with `credential` (authenticated here) sealed for it.
    private func forward(_ request: Request, _ context: SignalingContext, credential: Credential, body: ByteBuffer? = nil,
                         to owner: TransportAddress) async throws(SignalingError) -> Response {
        let seal = transceiver.sealForward(credential: credential, method: request.method.rawValue,
                                           target: CallForwarder.target(of: request), client: clientAddress(request, context),
                                           region: edgeRegion(request, context))
        return try await transceiver.forwarder.forward(request, body: body, to: owner, seal: seal)
    }

    /// A new offer for a call (ICE restart): 200 with the new answer.
    private func renegotiate(_ request: Request, _ context: SignalingContext) async throws -> Response {
        let credential = try credential(request, context, acceptForward: true)
        let id = try context.parameters.require("id")
        let body = try await collect(request, limit: Self.maximumOfferBytes, what: "the offer")
        if let owner = owner(ofCall: id, request) {
            return try await forward(request, context, credential: credential, body: body, to: owner)
        }
        let offer = try OfferRequest.parse(contentType: request.headers[.contentType], body: body)
        do {
            guard let answer = try await transceiver.renegotiateCall(id: id, offer: offer.sdp, credential: credential,
                                                                     relays: nearestRelays(request, context)) else {
                throw SignalingError.noCall(id)
            }
            return Response(status: .ok, headers: [.contentType: "application/sdp"], body: .init(byteBuffer: ByteBuffer(string: answer)))
        } catch let error as CallSetupError {
            throw error.signalingError
        }
    }

    private func describeCall(_ request: Request, _ context: SignalingContext) async throws -> Response {
        let credential = try credential(request, context, acceptForward: true)
        let id = try context.parameters.require("id")
        if let owner = owner(ofCall: id, request) { return try await forward(request, context, credential: credential, to: owner) }
        guard let snapshot = await transceiver.describeCall(id: id, credential: credential) else { throw SignalingError.noCall(id) }
        let json = try JSONEncoder().encode(snapshot)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }

    private func endCall(_ request: Request, _ context: SignalingContext) async throws -> Response {
        let credential = try credential(request, context, acceptForward: true)
        let id = try context.parameters.require("id")
        if let owner = owner(ofCall: id, request) { return try await forward(request, context, credential: credential, to: owner) }
        guard await transceiver.endCall(id: id, credential: credential) else { throw SignalingError.noCall(id) }
        return Response(status: .noContent)
    }

    private func drain(_ request: Request, _ context: SignalingContext) async throws -> Response {
        let credential = try credential(request, context)
        guard credential.isAPIKey else { throw SignalingError.forbidden("draining needs an API key", code: "api_key_required") }
        context.logger.notice("drain requested", metadata: ["key": "\(credential.keyID)"])
        onDrain()
        return json(.accepted, .object(["draining": .bool(true), "calls": .number(Double(transceiver.activeCalls))]))
    }

    // MARK: The sideband

    /// A plain GET (no upgrade) is told what the upgrade would meet: 401/404, or 426 when all is in order.
    private func sidebandShouldUpgrade(_ request: Request, _ context: SignalingContext) async throws -> RouterShouldUpgrade {
        if request.headers[.upgrade]?.lowercased() == "websocket" { return .upgrade([:]) }
        _ = try await sidebandAccess(request, context)
        throw SignalingError(statusCode: 426, type: "invalid_request_error", code: "upgrade_required",
                             message: "the sideband is a WebSocket: send the request as a WebSocket upgrade")
    }

    /// The credential (an API key) and the call the sideband is for, or why not; with the call's
    /// owner when another transceiver holds it (whose sideband this one's is forwarded to).
    private func sidebandAccess(_ request: Request, _ context: SignalingContext)
        async throws(SignalingError) -> (Credential, String, owner: TransportAddress?) {
        let credential = try credential(request, context, acceptForward: true)
        guard credential.isAPIKey else {
            throw .forbidden("the sideband is for the app's server, with its API key", code: "api_key_required")
        }
        guard let callID = request.uri.queryParameters.get("call_id"), !callID.isEmpty else {
            throw .badRequest("the sideband needs ?call_id=<the call's id>", code: "missing_call_id")
        }
        if let owner = owner(ofCall: callID, request) { return (credential, callID, owner) }
        guard transceiver.registry.lookup(callID).map({ credential.mayAccess($0.owner) }) == true else { throw .noCall(callID) }
        return (credential, callID, nil)
    }

    /// The WebSocket upgrade was taken before the credential was checked (the WebSocket layer
    /// answers a refused upgrade with a bare 400): a refusal is an `error` event and a close code
    /// 4000 + the HTTP status (4401, 4403, 4404), so the app's server learns why.
    private func sideband(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request,
                          context: SignalingContext) async {
        // A forward's owner proves it opened the seal before anything else, refusals included.
        if let forward = try? forwardClaims(request) {
            try? await outbound.write(.text(ForwardedRequest.sidebandAcknowledgement(nonce: forward.nonce)))
        }
        let credential: Credential, callID: String, owner: TransportAddress?
        do {
            (credential, callID, owner) = try await sidebandAccess(request, context)
        } catch {
            try? await outbound.write(.text(SidebandEvent.error(code: error.code, message: error.message).text))
            try? await outbound.close(.unknown(UInt16(clamping: 4000 + error.statusCode)), reason: error.code)
            return
        }
        if let owner {
            context.logger.info("sideband forwarded to the call's transceiver", metadata: ["call": "\(callID)", "owner": "\(owner)"])
            let seal = transceiver.sealForward(credential: credential, method: "GET", target: CallForwarder.sidebandTarget(callID),
                                               client: clientAddress(request, context), region: edgeRegion(request, context))
            await transceiver.forwarder.forwardSideband(callID: callID, to: owner, seal: seal, inbound: inbound, outbound: outbound)
            return
        }
        let opened: AsyncStream<SidebandFrame>?
        do {
            opened = try await transceiver.openSideband(callID: callID, credential: credential)
        } catch {
            try? await outbound.write(.text(SidebandEvent.error(code: error.code, message: error.message).text))
            try? await outbound.close(.unknown(UInt16(clamping: 4000 + error.statusCode)), reason: error.code)
            return
        }
        guard let events = opened else {
            try? await outbound.close(.unknown(4404), reason: "call_not_found")
            return
        }
        transceiver.metrics.sidebandsOpened.increment()
        context.logger.info("sideband open", metadata: ["call": "\(callID)", "key": "\(credential.keyID)"])
        let transceiver = self.transceiver
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var ended = false
                for await frame in events {
                    ended = frame.endsCall
                    try? await outbound.write(.text(frame.text))
                    frame.delivered()
                }
                if ended {
                    try? await outbound.close(.normalClosure, reason: "call ended")
                } else if !Task.isCancelled {
                    try? await outbound.close(.policyViolation, reason: "sideband fell behind: reconnect for the current state")
                }
            }
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: SidebandCommand.maximumBytes) {
                        guard case .text(let text) = message else {
                            try? await outbound.write(.text(SidebandEvent.error(code: "invalid_message",
                                                                                message: "sideband messages are JSON text").text))
                            continue
                        }
                        do {
                            let command = try SidebandCommand(decoding: Array(text.utf8))
                            guard try await transceiver.sidebandCommand(command, callID: callID, credential: credential) else { break }
                        } catch let error as SignalingError {
                            try? await outbound.write(.text(SidebandEvent.error(code: error.code, message: error.message).text))
                        } catch {}
                    }
                } catch {}
            }
            // Whichever ends first (the call, or the app's server leaving) ends the other.
            await group.next()
            group.cancelAll()
        }
        context.logger.info("sideband closed", metadata: ["call": "\(callID)"])
    }

    // MARK: Bodies

    /// The body, at most `limit` bytes, within the body timeout: 413 past the size, 408 past the time.
    private func collect(_ request: Request, limit: Int, what: String) async throws(SignalingError) -> ByteBuffer {
        let timeout = transceiver.configuration.http.bodyTimeout
        let body = request.body
        let result: Result<ByteBuffer, SignalingError> = await withTaskGroup(of: Result<ByteBuffer, SignalingError>?.self) { group in
            group.addTask {
                do {
                    return .success(try await body.collect(upTo: limit))
                } catch {
                    return .failure(SignalingError(statusCode: 413, type: "invalid_request_error", code: "body_too_large",
                                                   message: "\(what) is larger than \(limit) bytes"))
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return Task.isCancelled ? nil : .failure(SignalingError(
                    statusCode: 408, type: "invalid_request_error", code: "request_timeout",
                    message: "\(what) did not arrive within \(timeout)"))
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .failure(SignalingError(statusCode: 408, type: "invalid_request_error", code: "request_timeout",
                                                    message: "\(what) did not arrive"))
        }
        return try result.get()
    }

    private func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: value.text)))
    }
}

/// The request context of the signaling API: the client's address (for limits) and the WebSocket
/// upgrade's handler slot (for the sideband).
public struct SignalingContext: RequestContext, WebSocketRequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<SignalingContext>
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        remoteAddress = source.channel.remoteAddress
    }
}

/// Refusals as OpenAI's API shapes them: `{"error": {"message", "type", "code"}}`, with
/// `WWW-Authenticate` on a 401 and `Retry-After` on a 429 or 503.
extension SignalingError: HTTPResponseError {
    public var status: HTTPResponse.Status { HTTPResponse.Status(code: statusCode) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if statusCode == 401 { headers[.wwwAuthenticate] = "Bearer" }
        if let retryAfterSeconds { headers[.retryAfter] = "\(retryAfterSeconds)" }
        let body = JSONValue.object(["error": .object([
            "message": .string(message), "type": .string(type), "code": .string(code),
        ])])
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body.text)))
    }
}

/// Counts every answer by status, and refusals by their code.
/// The owner's answer to another transceiver's forward carries the forward's nonce, which only a
/// holder of the transceivers' key can read from the seal: the forwarding pod passes on no answer
/// without it (whatever else may answer at a reused address).
struct ForwardAnswerMiddleware<Context: RequestContext>: RouterMiddleware {
    let transceiver: Transceiver

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let text = request.headers[HTTPField.Name(ForwardedRequest.header)!],
              let claims = try? transceiver.openForward(text, method: request.method.rawValue, target: CallForwarder.target(of: request)),
              let answerHeader = HTTPField.Name(ForwardedRequest.answerHeader) else {
            return try await next(request, context)
        }
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as HTTPResponseError {
            response = try error.response(from: request, context: context)
        }
        response.headers[answerHeader] = claims.nonce
        return response
    }
}

struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: TransceiverMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            let response = try await next(request, context)
            metrics.signalingRequest(status: response.status.code)
            return response
        } catch let error as SignalingError {
            metrics.signalingRequest(status: error.statusCode)
            metrics.signalingRefused(code: error.code)
            throw error
        } catch let error as HTTPResponseError {
            metrics.signalingRequest(status: error.status.code)
            throw error
        }
    }
}
