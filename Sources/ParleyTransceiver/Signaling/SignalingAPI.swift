import Foundation
import Hummingbird
import NIOCore
import Prometheus

/// The signaling API: the same shape as OpenAI's Realtime calls endpoint and WHIP (RFC 9725).
///
///     POST   /v1/realtime/calls              application/sdp offer → 201, Location, SDP answer
///     GET    /v1/realtime/calls/{id}         the call's state and counters (JSON)
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
            allowOrigin: .all, allowHeaders: [.contentType, .authorization], allowMethods: [.get, .post, .delete, .options],
            exposedHeaders: ["Location"]))
        router.post("/v1/realtime/calls") { request, context in try await createCall(request, context) }
        router.get("/v1/realtime/calls/{id}") { _, context in try await describeCall(context) }
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
        let contentType = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces)
        guard contentType?.lowercased() == "application/sdp" else {
            transceiver.metrics.signalingRequest(status: 415)
            throw HTTPError(.unsupportedMediaType, message: "the offer must be sent as Content-Type: application/sdp")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maximumOfferBytes)
        } catch {
            transceiver.metrics.signalingRequest(status: 413)
            throw HTTPError(.contentTooLarge, message: "the offer is larger than \(Self.maximumOfferBytes) bytes")
        }
        let offer = Array(body.readableBytesView)
        do {
            let (id, answer) = try await transceiver.createCall(offer: offer)
            transceiver.metrics.signalingRequest(status: 201)
            return Response(
                status: .created,
                headers: [.contentType: "application/sdp", .location: "/v1/realtime/calls/\(id)"],
                body: .init(byteBuffer: ByteBuffer(string: answer)))
        } catch {
            let status: HTTPResponse.Status
            switch error {
            case .malformedOffer, .unsupportedOffer: status = .badRequest
            case .atCapacity: status = .serviceUnavailable
            case .internalError: status = .internalServerError
            }
            transceiver.metrics.signalingRequest(status: status.code)
            throw HTTPError(status, message: error.description)
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
