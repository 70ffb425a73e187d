import Foundation
import Hummingbird
import NIOCore
import Prometheus

/// The signaling API: the same shape as OpenAI's Realtime calls endpoint and WHIP (RFC 9725).
///
///     POST   /v1/realtime/calls              application/sdp offer → 201, Location, SDP answer
///     GET    /v1/realtime/calls/{id}         the call's state and counters (JSON)
///     PATCH  /v1/realtime/calls/{id}         application/sdp new offer (ICE restart) → 200, SDP answer
///     DELETE /v1/realtime/calls/{id}         ends the call → 204
///     POST   /v1/realtime/calls/{id}/hangup  ends the call → 204
///     GET    /healthz                        200 while the transceiver serves
///     GET    /metrics                        Prometheus text format
///     GET    /                               the demo page
public struct SignalingAPI: Sendable {
    public static let maximumOfferBytes = 64 * 1024

    let transceiver: Transceiver
    let prometheus: PrometheusCollectorRegistry?

    public init(transceiver: Transceiver, prometheus: PrometheusCollectorRegistry?) {
        self.transceiver = transceiver
        self.prometheus = prometheus
    }

    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        // A page served from another origin (or port) calls the API after a CORS preflight.
        router.add(middleware: CORSMiddleware(
            allowOrigin: .all, allowHeaders: [.contentType, .authorization], allowMethods: [.get, .post, .patch, .delete, .options],
            exposedHeaders: ["Location"]))
        router.post("/v1/realtime/calls") { request, context in try await createCall(request, context) }
        router.get("/v1/realtime/calls/{id}") { _, context in try await describeCall(context) }
        router.patch("/v1/realtime/calls/{id}") { request, context in try await renegotiate(request, context) }
        router.delete("/v1/realtime/calls/{id}") { _, context in try await endCall(context) }
        router.post("/v1/realtime/calls/{id}/hangup") { _, context in try await endCall(context) }
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/metrics") { _, _ in metrics() }
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: DemoPage.html)))
        }
        return router
    }

    private func createCall(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        // `?agent=echo|parrot`: a built-in agent for this call (external agents only by configuration).
        var agent: AgentChoice?
        if let name = request.uri.queryParameters.get("agent") {
            guard let choice = AgentChoice(rawValue: name) else {
                transceiver.metrics.signalingRequest(status: 400)
                throw HTTPError(.badRequest, message: "unknown agent \(name): built-in agents are \(AgentChoice.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            agent = choice
        }
        let offer = try await sdpBody(request)
        do {
            let (id, answer) = try await transceiver.createCall(offer: offer, agent: agent)
            transceiver.metrics.signalingRequest(status: 201)
            return Response(
                status: .created,
                headers: [.contentType: "application/sdp", .location: "/v1/realtime/calls/\(id)"],
                body: .init(byteBuffer: ByteBuffer(string: answer)))
        } catch {
            let status = Self.status(for: error)
            transceiver.metrics.signalingRequest(status: status.code)
            throw HTTPError(status, message: error.description)
        }
    }

    /// A new offer for a call (ICE restart): 200 with the new answer.
    private func renegotiate(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let offer = try await sdpBody(request)
        do {
            guard let answer = try await transceiver.renegotiateCall(id: id, offer: offer) else {
                throw HTTPError(.notFound, message: "no call \(id)")
            }
            return Response(status: .ok, headers: [.contentType: "application/sdp"], body: .init(byteBuffer: ByteBuffer(string: answer)))
        } catch let error as CallSetupError {
            throw HTTPError(Self.status(for: error), message: error.description)
        }
    }

    /// The request's SDP body: 415 for another content type, 413 when too large.
    private func sdpBody(_ request: Request) async throws -> [UInt8] {
        let contentType = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces)
        guard contentType?.lowercased() == "application/sdp" else {
            transceiver.metrics.signalingRequest(status: 415)
            throw HTTPError(.unsupportedMediaType, message: "the offer must be sent as Content-Type: application/sdp")
        }
        do {
            return Array(try await request.body.collect(upTo: Self.maximumOfferBytes).readableBytesView)
        } catch {
            transceiver.metrics.signalingRequest(status: 413)
            throw HTTPError(.contentTooLarge, message: "the offer is larger than \(Self.maximumOfferBytes) bytes")
        }
    }

    private static func status(for error: CallSetupError) -> HTTPResponse.Status {
        switch error {
        case .malformedOffer, .unsupportedOffer: .badRequest
        case .atCapacity: .serviceUnavailable
        case .internalError: .internalServerError
        }
    }

    private func describeCall(_ context: BasicRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        guard let snapshot = await transceiver.describeCall(id: id) else {
            throw HTTPError(.notFound, message: "no call \(id)")
        }
        let json = try JSONEncoder().encode(snapshot)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }

    private func endCall(_ context: BasicRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        guard await transceiver.endCall(id: id) else { throw HTTPError(.notFound, message: "no call \(id)") }
        return Response(status: .noContent)
    }

    private func metrics() -> Response {
        var bytes: [UInt8] = []
        prometheus?.emit(into: &bytes)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
