import Crypto

/// The API keys a transceiver accepts. Only their SHA-256 digests are kept; a presented key is
/// hashed and compared with every digest in constant time, so neither timing nor an early exit
/// tells how much of a guess was right. A key is known elsewhere (logs, metrics, call owners) by
/// its id: `key_` and the first 12 hex digits of its digest, which reveals nothing usable.
public struct APIKeys: Sendable, Equatable {
    public struct Key: Sendable, Hashable {
        public let id: String
        fileprivate let digest: [UInt8]
    }

    public private(set) var keys: [Key]

    /// Shorter keys are refused at startup: a guessable key is no key.
    public static let minimumLength = 16
    /// Longer bearer values are not keys (and are not hashed).
    public static let maximumLength = 512

    /// Keys from configuration; throws naming the first one that is too short, too long or not printable.
    public init(_ keys: some Sequence<String>) throws(SignalingError) {
        var seen: Set<String> = []
        self.keys = []
        for key in keys {
            let bytes = Array(key.utf8)
            guard bytes.count >= Self.minimumLength, bytes.count <= Self.maximumLength,
                  bytes.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw .badRequest("an API key must be \(Self.minimumLength)–\(Self.maximumLength) printable ASCII characters "
                                  + "without spaces (one given has \(bytes.count)); make one with `openssl rand -hex 24`")
            }
            // A bearer value starting ek_ is read as a client secret, so such a key could never match.
            guard !bytes.starts(with: Array(ClientSecrets.prefix.utf8)) else {
                throw .badRequest("an API key must not start with \(ClientSecrets.prefix) (the prefix of client secrets)")
            }
            let entry = Self.entry(bytes)
            guard seen.insert(entry.id).inserted else { continue }
            self.keys.append(entry)
        }
    }

    public var isEmpty: Bool { keys.isEmpty }

    /// Whether a key with this id is configured (a client secret's owner must be).
    public func contains(id: String) -> Bool { keys.contains { $0.id == id } }

    /// The id of the key `presented` is, or nil.
    public func match(_ presented: some Collection<UInt8>) -> String? {
        guard presented.count <= Self.maximumLength else { return nil }
        let digest = Array(SHA256.hash(data: Array(presented)))
        var found: String?
        for key in keys where Self.constantTimeEqual(key.digest, digest) { found = key.id }
        return found
    }

    /// The id a key has, for configuration that names keys.
    public static func id(of key: String) -> String { entry(Array(key.utf8)).id }

    /// A fresh key for `parley dev`: `sk_parley_` and 40 hex digits (160 bits).
    public static func generate<G: RandomNumberGenerator>(using generator: inout G) -> String {
        "sk_parley_" + (0..<20).map { _ in hex(UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    private static func entry(_ bytes: [UInt8]) -> Key {
        let digest = Array(SHA256.hash(data: bytes))
        return Key(id: "key_" + digest.prefix(6).map(hex).joined(), digest: digest)
    }

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
