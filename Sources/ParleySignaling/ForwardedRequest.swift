import Crypto
import Foundation
import ParleyWire

/// What a transceiver tells the owner of a call when it forwards a request about it
/// (`CallLocation.elsewhere`): the credential it authenticated, the client's address and region as
/// it resolved them, and which request this is — sealed with a key only transceivers hold (the
/// client-secret keyring's, like call ids), so the client's own bearer credential never leaves the
/// pod it reached (an address named in a call id may, by the time the request comes, belong to
/// something else), and no client can claim to be a forward.
///
///     X-Parley-Forwarded: fw_ base64url( version 0x01 | key id | AES-256-GCM nonce (12) | ciphertext | tag (16) )
///
/// The AES key is HKDF-SHA256 of the key's secret with the info `parley forwarded request v1`;
/// the plaintext is the claims as JSON. It is good for `lifetime` seconds and for one method and
/// request target only.
public struct ForwardedRequest: Sendable {
    public static let header = CallLocation.forwardedHeader
    /// The owner's answer to a forward carries the forward's nonce here.
    public static let answerHeader = "X-Parley-Forwarded-Answer"

    /// The first frame an owner sends on a forwarded sideband: the forward's nonce.
    public static func sidebandAcknowledgement(nonce: String) -> String { #"{"type":"parley.forwarded","nonce":""# + nonce + #""}"# }
    public static let prefix = "fw_"
    static let version: UInt8 = 1
    /// A forward is made and used within a request's time: what the clocks of two pods may differ
    /// by, and more.
    public static let lifetime: Int64 = 30
    public static let maximumLength = 4096

    /// What the owner learns.
    public struct Claims: Codable, Sendable, Equatable {
        /// `api_key`, `client_secret` or `anonymous`.
        public var kind: String
        /// The API key's id (a client secret's owner).
        public var key: String
        /// A client secret's id and expiry.
        public var secret: String?
        public var secretExpires: Int64?
        public var method: String
        public var target: String
        /// The client's address (text) and region, as the forwarding transceiver resolved them.
        public var client: String
        public var region: String?
        public var expires: Int64
        /// Random, and readable only with the key: the owner proves it is a transceiver of this
        /// cluster (not whatever now holds the address a call id names) by sending it back
        /// (`answerHeader`, or a sideband's first frame).
        public var nonce: String

        enum CodingKeys: String, CodingKey {
            case kind, key, secret, method, target, client, region, nonce
            case secretExpires = "secret_exp"
            case expires = "exp"
        }

        /// The credential these claims stand for.
        public var credential: Credential? {
            switch kind {
            case "api_key": .apiKey(id: key)
            case "anonymous": .anonymous
            case "client_secret":
                secret.map { .clientSecret(ClientSecretClaims(id: $0, owner: key, createdAt: 0, expiresAt: secretExpires ?? 0,
                                                              session: .object([:]))) }
            default: nil
            }
        }
    }

    private let sealingKeyID: UInt8
    private let keys: [UInt8: SymmetricKey]

    /// `keyring`: the transceivers' own (the client-secret keyring; the routing keyring when the
    /// transceivers have no other).
    public init(keyring: RoutingKeyring) {
        sealingKeyID = keyring.currentKeyID
        keys = ClientSecrets.derivedKeys(of: keyring, info: "parley forwarded request v1")
    }

    /// The sealed text, and the nonce the owner's answer must carry.
    public func seal(credential: Credential, method: String, target: String, client: TransportAddress, region: String?,
                     unixSeconds now: Int64) -> (text: String, nonce: String) {
        var generator = SystemRandomNumberGenerator()
        let nonce = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        var claims = Claims(kind: "anonymous", key: credential.keyID, secret: nil, secretExpires: nil, method: method, target: target,
                            client: client.description, region: region, expires: now &+ Self.lifetime, nonce: nonce)
        switch credential {
        case .apiKey: claims.kind = "api_key"
        case .clientSecret(let secret):
            claims.kind = "client_secret"
            claims.secret = secret.id
            claims.secretExpires = secret.expiresAt
        case .anonymous: break
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let plaintext = try? encoder.encode(claims), let key = keys[sealingKeyID],
              let box = try? AES.GCM.seal(plaintext, using: key, authenticating: [Self.version, sealingKeyID]),
              let combined = box.combined else {
            preconditionFailure("sealing a forward cannot fail with a 32-byte key")
        }
        return (Self.prefix + ClientSecrets.base64URL([Self.version, sealingKeyID] + Array(combined)), nonce)
    }

    /// The claims of a forward a transceiver of this cluster sealed for this very request, if it
    /// has not expired; anything else is a 401 (a client claiming to be a forward, or a stale one).
    public func open(_ text: String, method: String, target: String, unixSeconds now: Int64) throws(SignalingError) -> Claims {
        let bytes = Array(text.utf8)
        let prefix = Array(Self.prefix.utf8)
        guard bytes.count <= Self.maximumLength, bytes.starts(with: prefix),
              let sealed = ClientSecrets.decodeBase64URL(bytes.dropFirst(prefix.count)),
              sealed.count > 2 + 12 + 16, sealed[0] == Self.version, let key = keys[sealed[1]],
              let box = try? AES.GCM.SealedBox(combined: sealed[2...]),
              let plaintext = try? AES.GCM.open(box, using: key, authenticating: sealed[0..<2]),
              let claims = try? JSONDecoder().decode(Claims.self, from: plaintext),
              claims.method == method, claims.target == target, now <= claims.expires &+ ClientSecrets.clockSkew,
              claims.expires <= now &+ Self.lifetime &+ ClientSecrets.clockSkew, claims.credential != nil else {
            throw .invalidForward
        }
        return claims
    }
}
