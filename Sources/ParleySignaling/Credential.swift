import ParleyWire

/// Who a request is from, once its bearer value checked out.
public enum Credential: Sendable, Equatable {
    /// An app's server, with one of the configured API keys (by its id).
    case apiKey(id: String)
    /// A browser or app holding a client secret an API key minted.
    case clientSecret(ClientSecretClaims)
    /// No credential, on a transceiver started with `--insecure-no-auth`.
    case anonymous

    /// The owner a call made with this credential gets.
    public var owner: CallOwner {
        switch self {
        case .apiKey(let id): CallOwner(keyID: id, secretID: nil)
        case .clientSecret(let claims): CallOwner(keyID: claims.owner, secretID: claims.id)
        case .anonymous: CallOwner(keyID: CallOwner.anonymousKeyID, secretID: nil)
        }
    }

    /// The API key whose limits the request counts against.
    public var keyID: String { owner.keyID }

    /// Whether this credential may see, change or end a call `owner` owns: the API key that made
    /// it (or minted the secret that did), or that very secret. Anything else is told there is no
    /// such call (404), so ids cannot be probed.
    public func mayAccess(_ owner: CallOwner) -> Bool {
        switch self {
        case .apiKey(let id): owner.keyID == id
        case .clientSecret(let claims): owner.secretID == claims.id && owner.keyID == claims.owner
        case .anonymous: owner.keyID == CallOwner.anonymousKeyID
        }
    }

    public var isAPIKey: Bool {
        switch self {
        case .apiKey, .anonymous: true
        case .clientSecret: false
        }
    }

    /// For logs: the key id, and the secret's id when there is one.
    public var description: String {
        switch self {
        case .apiKey(let id): id
        case .clientSecret(let claims): "\(claims.owner)/\(claims.id)"
        case .anonymous: CallOwner.anonymousKeyID
        }
    }
}

/// Whom a call belongs to.
public struct CallOwner: Sendable, Hashable, Codable {
    public var keyID: String
    /// The client secret that made the call, if one did.
    public var secretID: String?

    public static let anonymousKeyID = "anonymous"

    public init(keyID: String, secretID: String?) {
        self.keyID = keyID
        self.secretID = secretID
    }
}

/// Turns an `Authorization` header into a credential, or says why not (sans-IO: the shell passes
/// the header and the wall clock).
public struct Authenticator: Sendable {
    public var apiKeys: APIKeys
    public var secrets: ClientSecrets
    /// False only with `--insecure-no-auth`: requests without a (valid) credential are `.anonymous`.
    public var requireCredentials: Bool

    public init(apiKeys: APIKeys, secrets: ClientSecrets, requireCredentials: Bool = true) {
        self.apiKeys = apiKeys
        self.secrets = secrets
        self.requireCredentials = requireCredentials
    }

    public func authenticate(authorization: String?, unixSeconds now: Int64) throws(SignalingError) -> Credential {
        guard let value = authorization.flatMap(Self.bearerValue) else {
            if !requireCredentials { return .anonymous }
            throw .missingCredentials
        }
        let bytes = Array(value.utf8)
        if bytes.starts(with: Array(ClientSecrets.prefix.utf8)) {
            do throws(SignalingError) {
                let claims = try secrets.open(bytes, unixSeconds: now)
                // A secret lives no longer than its key: removing a leaked key (SIGHUP) ends the
                // secrets it minted, and a secret naming an owner this server never had (sealed by
                // anyone else holding the secret key) gets nothing.
                guard !requireCredentials || apiKeys.contains(id: claims.owner) else { throw SignalingError.clientSecretRevoked }
                return .clientSecret(claims)
            } catch {
                if !requireCredentials { return .anonymous }
                throw error
            }
        }
        if let id = apiKeys.match(bytes) { return .apiKey(id: id) }
        if !requireCredentials { return .anonymous }
        throw .invalidAPIKey
    }

    /// `Bearer <value>` (the scheme in any case, RFC 9110 §11.1); nil for another scheme or no value.
    static func bearerValue(_ header: String) -> String? {
        let trimmed = header.drop { $0 == " " }
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        let value = trimmed.dropFirst(7).trimmingSpaces()
        return value.isEmpty ? nil : String(value)
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var result = self
        while result.first == " " || result.first == "\t" { result = result.dropFirst() }
        while result.last == " " || result.last == "\t" { result = result.dropLast() }
        return result
    }
}
