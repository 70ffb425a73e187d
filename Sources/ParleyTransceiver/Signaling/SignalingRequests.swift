import Foundation
import NIOCore
import ParleySignaling

/// An offer as `POST /v1/realtime/calls` takes it: raw `application/sdp`, or `multipart/form-data`
/// with an `sdp` part and an optional `session` part (JSON), as OpenAI's endpoint takes it.
struct OfferRequest: Equatable {
    var sdp: [UInt8]
    var session: SessionConfiguration?

    /// `type/subtype` of a Content-Type, lowercased, without parameters.
    static func mediaType(_ contentType: String?) -> String? {
        contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    }

    static func parse(contentType: String?, body: ByteBuffer) throws(SignalingError) -> OfferRequest {
        switch mediaType(contentType) {
        case "application/sdp":
            return OfferRequest(sdp: Array(body.readableBytesView), session: nil)
        case "multipart/form-data":
            guard let boundary = contentType.flatMap(Self.boundary) else {
                throw .badRequest("multipart/form-data needs a boundary parameter", code: "invalid_multipart")
            }
            let fields = try MultipartForm.parse(Array(body.readableBytesView), boundary: boundary)
            guard let sdp = fields["sdp"] else {
                throw .badRequest("the multipart body needs an sdp part (and may have a session part, JSON)", code: "invalid_multipart")
            }
            guard sdp.count <= SignalingAPI.maximumOfferBytes else {
                throw SignalingError(statusCode: 413, type: "invalid_request_error", code: "body_too_large",
                                     message: "the offer is larger than \(SignalingAPI.maximumOfferBytes) bytes")
            }
            let session = try fields["session"].map { (text: [UInt8]) throws(SignalingError) in try SessionConfiguration(parsing: text) }
            return OfferRequest(sdp: sdp, session: session)
        default:
            throw SignalingError(statusCode: 415, type: "invalid_request_error", code: "unsupported_media_type",
                                 message: "send the offer as Content-Type: application/sdp, or as multipart/form-data with sdp and session parts")
        }
    }

    /// The `boundary` parameter (RFC 2046 §5.1.1: 1–70 characters, possibly quoted).
    static func boundary(_ contentType: String) -> String? {
        for parameter in contentType.split(separator: ";").dropFirst() {
            let parts = parameter.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "boundary" else { continue }
            var value = parts[1].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            return (1...70).contains(value.count) ? value : nil
        }
        return nil
    }
}

/// `POST /v1/realtime/client_secrets`: `{"expires_after": {"anchor": "created_at", "seconds": N},
/// "session": {...}}` → `{"value": "ek_…", "expires_at": …, "session": {...}}` (OpenAI's shape).
enum ClientSecretRequest {
    static func parse(_ body: ByteBuffer) throws(SignalingError) -> (SessionConfiguration, Int64) {
        let bytes = Array(body.readableBytesView)
        guard !bytes.isEmpty else { return (SessionConfiguration(), ClientSecrets.defaultLifetime) }
        guard let value = JSONValue(parsing: bytes), let object = value.objectValue else {
            throw .badRequest("the request must be a JSON object (expires_after, session)", code: "invalid_request")
        }
        var lifetime = ClientSecrets.defaultLifetime
        if let expiry = object["expires_after"] {
            guard let fields = expiry.objectValue else { throw .badRequest("expires_after must be an object", code: "invalid_expiry") }
            if let anchor = fields["anchor"], anchor != .string("created_at") {
                throw .badRequest("expires_after.anchor must be \"created_at\"", code: "invalid_expiry")
            }
            guard case .number(let seconds)? = fields["seconds"], seconds == seconds.rounded(),
                  let whole = Int64(exactly: seconds) else {
                throw .badRequest("expires_after.seconds must be a whole number of seconds", code: "invalid_expiry")
            }
            lifetime = whole
        }
        var session = SessionConfiguration()
        if let requested = object["session"] {
            guard let fields = requested.objectValue else { throw .badRequest("session must be an object", code: "invalid_session") }
            session = try SessionConfiguration(validating: fields)
        }
        return (session, lifetime)
    }

    static func response(_ minted: MintedClientSecret) -> JSONValue {
        .object([
            "value": .string(minted.value),
            "expires_at": .number(Double(minted.claims.expiresAt)),
            "session": minted.claims.session,
        ])
    }
}
