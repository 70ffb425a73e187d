/// Why the signaling API refuses a request: an HTTP status, the error's `type` and `code` as
/// OpenAI's API shapes them, and a message that says what to do. The HTTP shell turns it into
/// `{"error": {"message", "type", "code"}}`.
public struct SignalingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The HTTP status.
    public var statusCode: Int
    public var type: String
    public var code: String
    public var message: String
    /// Seconds after which a rate-limited request may be tried again (`Retry-After`).
    public var retryAfterSeconds: Int?

    public init(statusCode: Int, type: String, code: String, message: String, retryAfterSeconds: Int? = nil) {
        self.statusCode = statusCode
        self.type = type
        self.code = code
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String { "\(statusCode) \(code): \(message)" }

    // MARK: The refusals the API makes

    public static let missingCredentials = SignalingError(
        statusCode: 401, type: "invalid_request_error", code: "missing_credentials",
        message: "this endpoint needs an API key or a client secret: Authorization: Bearer <key or ek_ secret>")

    public static let invalidAPIKey = SignalingError(
        statusCode: 401, type: "invalid_request_error", code: "invalid_api_key",
        message: "the API key is not one this server accepts")

    public static let invalidClientSecret = SignalingError(
        statusCode: 401, type: "invalid_request_error", code: "invalid_client_secret",
        message: "the client secret is malformed, forged, or sealed with a key this server no longer has")

    /// A request marked as another transceiver's forward whose seal does not open (or no longer does).
    public static let invalidForward = SignalingError(
        statusCode: 401, type: "invalid_request_error", code: "invalid_forward",
        message: "X-Parley-Forwarded is for transceivers of this cluster, sealed for one request: this one is not")

    public static let clientSecretRevoked = SignalingError(
        statusCode: 401, type: "invalid_request_error", code: "client_secret_revoked",
        message: "the API key that minted this client secret is no longer accepted: mint a new one")

    public static func clientSecretExpired(ago seconds: Int64) -> SignalingError {
        SignalingError(statusCode: 401, type: "invalid_request_error", code: "client_secret_expired",
                       message: "the client secret expired \(seconds) s ago: mint a new one with POST /v1/realtime/client_secrets")
    }

    public static func forbidden(_ message: String, code: String = "forbidden") -> SignalingError {
        SignalingError(statusCode: 403, type: "invalid_request_error", code: code, message: message)
    }

    public static func badRequest(_ message: String, code: String = "invalid_request") -> SignalingError {
        SignalingError(statusCode: 400, type: "invalid_request_error", code: code, message: message)
    }

    /// A call that does not exist and one another credential owns look the same: ids cannot be probed.
    public static func noCall(_ id: String) -> SignalingError {
        SignalingError(statusCode: 404, type: "invalid_request_error", code: "call_not_found", message: "no call \(id)")
    }

    public static func rateLimited(_ message: String, retryAfterSeconds: Int) -> SignalingError {
        SignalingError(statusCode: 429, type: "rate_limit_error", code: "rate_limit_exceeded", message: message,
                       retryAfterSeconds: retryAfterSeconds)
    }

    public static let draining = SignalingError(
        statusCode: 503, type: "server_error", code: "draining",
        message: "this transceiver is draining (shutting down once its calls end): send the offer to another one",
        retryAfterSeconds: 1)

    public static let atCapacity = SignalingError(
        statusCode: 503, type: "server_error", code: "at_capacity",
        message: "this transceiver is at its session limit", retryAfterSeconds: 1)
}
