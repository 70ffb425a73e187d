import Crypto
import Foundation
import ParleyWire

/// What a client secret (`ek_…`) says: who minted it, until when it works, and the session it
/// allows. Sealed, not just signed: the session may carry instructions or credentials for the agent
/// that the browser holding the secret must not read (a JWT would show them; hence not jwt-kit).
public struct ClientSecretClaims: Codable, Sendable, Equatable {
    /// `cs_` and 16 hex digits: the id calls made with this secret are owned by.
    public var id: String
    /// The id of the API key that minted it (`APIKeys`): its limits and its sideband apply.
    public var owner: String
    /// Unix seconds.
    public var createdAt: Int64
    public var expiresAt: Int64
    /// The session configuration (a JSON object) every call made with the secret gets.
    public var session: JSONValue

    public init(id: String, owner: String, createdAt: Int64, expiresAt: Int64, session: JSONValue) {
        self.id = id
        self.owner = owner
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.session = session
    }

    enum CodingKeys: String, CodingKey {
        case id, owner, session
        case createdAt = "iat"
        case expiresAt = "exp"
    }
}

/// Mints and opens client secrets, statelessly: any transceiver whose routing keyring holds the key
/// a secret was sealed under opens it, so a secret minted by one works on all, and rotating the
/// routing key (docs/operations.md) rotates these too.
///
///     ek_ base64url( version 0x01 | key id | AES-256-GCM nonce (12) | ciphertext | tag (16) )
///
/// The AES key is HKDF-SHA256 of the routing key's secret with the info `parley client secret v1`,
/// the additional data the version and key id; the plaintext is the claims as JSON.
public struct ClientSecrets: Sendable {
    public static let prefix = "ek_"
    static let version: UInt8 = 1
    /// The longest session a secret carries (JSON text): a secret travels in an Authorization
    /// header, and proxies commonly refuse headers over 8 KiB.
    public static let maximumSessionBytes = 4096
    /// Longer bearer values are not secrets this server minted (and are not decoded).
    public static let maximumLength = 8192
    /// Lifetimes a secret may be minted with (OpenAI's bounds): 10 s to 2 h, 10 min by default.
    public static let lifetimes: ClosedRange<Int64> = 10...7200
    public static let defaultLifetime: Int64 = 600
    /// A secret minted this far in the future by a transceiver whose clock runs ahead is still taken.
    public static let clockSkew: Int64 = 60

    private let sealingKeyID: UInt8
    private let keys: [UInt8: SymmetricKey]

    public init(keyring: RoutingKeyring) {
        sealingKeyID = keyring.currentKeyID
        keys = Self.derivedKeys(of: keyring, info: "parley client secret v1")
    }

    /// An AES-256 key per key of `keyring`: HKDF-SHA256 of its secret with `info` (one purpose each).
    static func derivedKeys(of keyring: RoutingKeyring, info: String) -> [UInt8: SymmetricKey] {
        var keys: [UInt8: SymmetricKey] = [:]
        for id in UInt8(0)..<16 {
            guard let key = keyring.key(id: id) else { continue }
            keys[id] = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: key.secret), info: Array(info.utf8),
                                              outputByteCount: 32)
        }
        return keys
    }

    public func seal(_ claims: ClientSecretClaims) -> String { seal(claims, nonce: AES.GCM.Nonce()) }

    /// With a given nonce: for the documented test vector only (a nonce must never repeat under a key).
    func seal(_ claims: ClientSecretClaims, nonce: AES.GCM.Nonce) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let plaintext = try? encoder.encode(claims), let key = keys[sealingKeyID],
              let box = try? AES.GCM.seal(plaintext, using: key, nonce: nonce, authenticating: [Self.version, sealingKeyID]),
              let combined = box.combined else {
            preconditionFailure("sealing a client secret cannot fail with a 32-byte key")
        }
        return Self.prefix + Self.base64URL([Self.version, sealingKeyID] + Array(combined))
    }

    /// The claims of a secret this cluster minted, if it has not expired at `unixSeconds`.
    public func open(_ text: some Collection<UInt8>, unixSeconds now: Int64) throws(SignalingError) -> ClientSecretClaims {
        let prefix = Array(Self.prefix.utf8)
        guard text.count <= Self.maximumLength, text.starts(with: prefix),
              let bytes = Self.decodeBase64URL(text.dropFirst(prefix.count)),
              // One text per secret: the unused low bits of the last character must be zero.
              Self.base64URL(bytes).utf8.elementsEqual(text.dropFirst(prefix.count)),
              bytes.count > 2 + 12 + 16, bytes[0] == Self.version, let key = keys[bytes[1]],
              let box = try? AES.GCM.SealedBox(combined: bytes[2...]),
              let plaintext = try? AES.GCM.open(box, using: key, authenticating: bytes[0..<2]),
              let claims = try? JSONDecoder().decode(ClientSecretClaims.self, from: plaintext) else {
            throw .invalidClientSecret
        }
        guard now < claims.expiresAt else { throw .clientSecretExpired(ago: now &- claims.expiresAt) }
        guard claims.createdAt <= now &+ Self.clockSkew else { throw .invalidClientSecret }
        return claims
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decodeBase64URL(_ text: some Collection<UInt8>) -> [UInt8]? {
        var characters: [UInt8] = []
        characters.reserveCapacity(text.count + 3)
        for character in text {
            switch character {
            case UInt8(ascii: "-"): characters.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): characters.append(UInt8(ascii: "/"))
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                characters.append(character)
            default: return nil
            }
        }
        while characters.count % 4 != 0 { characters.append(UInt8(ascii: "=")) }
        return Data(base64Encoded: Data(characters)).map(Array.init)
    }
}
