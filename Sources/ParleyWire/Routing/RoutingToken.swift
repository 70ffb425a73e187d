/// What the server ICE ufrag tells a relay: where the session lives. The client copies the ufrag
/// into every STUN check (`USERNAME = serverUfrag:clientUfrag`), so the first packet of a flow
/// carries its own route. The format is in docs/protocol.md; in short:
///
///     header (3, clear: version, key, cluster) | body (13 or 25, encrypted) | tag (8)
///       → base64, 32 or 48 characters
///
/// The tag is SipHash-2-4 over header and plaintext body under the key's MAC key; the body is
/// XORed with a keystream of SipHash-2-4(encryption key, tag ‖ block index), so the tag doubles as
/// a synthetic IV (the SIV construction). Verification decrypts, recomputes and compares the tag.
/// The cluster id stays in the clear (but authenticated) so a Global Relay edge can forward by it
/// without holding the owning cluster's key.
public struct RoutingToken: Hashable, Sendable {
    /// The format version this code writes and reads.
    public static let version: UInt8 = 1
    /// Characters of a token whose worker has an IPv4 / IPv6 address.
    public static let ipv4Length = 32
    public static let ipv6Length = 48
    public static let maximumLength = ipv6Length
    static let headerLength = 3
    static let tagLength = 8

    /// Which key of the keyring sealed the token (0–15), so keys rotate without breaking live calls.
    public var keyID: UInt8 { didSet { keyID &= 0x0F } }
    /// The cluster that owns the session (Global Relay forwards by it).
    public var clusterID: UInt16
    /// The transceiver worker's internal UDP endpoint.
    public var worker: TransportAddress
    /// When the token was issued, in hours since 2024-01-01 00:00 UTC (modulo 2¹⁶, about 7.5
    /// years), so a relay can refuse tokens older than any call lasts.
    public var issuedHour: UInt16
    /// Per-session randomness: ICE wants ≥ 24 random bits in a ufrag; the transceiver also keys
    /// its sessions by it.
    public var nonce: UInt32
    /// What the sealed address is for (authenticated body flag bit 1), so a token of one kind never
    /// opens as the other: a call id (which names a transceiver's signaling endpoint) is no ICE ufrag.
    public var purpose: Purpose

    /// What a token routes to.
    public enum Purpose: UInt8, Sendable, Hashable {
        /// A server ICE ufrag: the transceiver worker's UDP endpoint (what relays route by).
        case media = 0
        /// A call id: the owning transceiver's signaling (HTTP) endpoint, which other transceivers
        /// of the cluster forward a call's requests to (docs/kubernetes.md).
        case signaling = 1
    }

    public init(keyID: UInt8, clusterID: UInt16, worker: TransportAddress, issuedHour: UInt16, nonce: UInt32,
                purpose: Purpose = .media) {
        self.keyID = keyID & 0x0F
        self.clusterID = clusterID
        self.worker = worker
        self.issuedHour = issuedHour
        self.nonce = nonce
        self.purpose = purpose
    }

    /// A token with a fresh random nonce.
    public static func random<G: RandomNumberGenerator>(
        keyID: UInt8, clusterID: UInt16, worker: TransportAddress, issuedHour: UInt16, purpose: Purpose = .media,
        using generator: inout G
    ) -> RoutingToken {
        RoutingToken(keyID: keyID, clusterID: clusterID, worker: worker, issuedHour: issuedHour, nonce: generator.next(),
                     purpose: purpose)
    }

    /// Hours since 2024-01-01 00:00 UTC, modulo 2¹⁶, for `issuedHour`.
    public static func hour(unixSeconds: Int64) -> UInt16 {
        UInt16(truncatingIfNeeded: (unixSeconds - 1_704_067_200) / 3600)
    }

    /// Characters this token encodes to.
    public var encodedLength: Int { worker.isIPv6 ? RoutingToken.ipv6Length : RoutingToken.ipv4Length }

    var binaryLength: Int { encodedLength / 4 * 3 }
}

/// Why a ufrag is not a token this relay or transceiver accepts. Typed, so rejecting never allocates.
public enum RoutingTokenError: Error, Equatable, Sendable {
    /// Not 32 or 48 characters.
    case wrongLength
    /// A character outside the ICE ufrag alphabet.
    case invalidCharacter
    case unsupportedVersion(UInt8)
    /// The key id names no key in this keyring (retired, or never configured).
    case unknownKey(UInt8)
    /// The tag does not match: forged, corrupted, or sealed with another secret.
    case badTag
    /// The tag matched but the body is not a v1 body (reserved bits set, or family and length disagree).
    case malformedBody
    /// Issued longer ago than the maximum age (or more than an hour in the future).
    case expired
}

/// One key of a keyring: a MAC key and an encryption key, both 128-bit SipHash keys.
public struct RoutingKey: Sendable, Hashable {
    public let id: UInt8
    public let macKey: SipHashKey
    public let encryptionKey: SipHashKey
    /// The 32 secret bytes, for keys derived from this one (client secrets: ParleySignaling).
    package let secret: [UInt8]

    /// A key from 32 secret bytes: the first 16 are the MAC key, the last 16 the encryption key.
    public init(id: UInt8, secret: some Collection<UInt8>) {
        precondition(id < 16, "key ids are 0–15")
        precondition(secret.count == 32, "a routing key secret has 32 bytes")
        self.id = id
        macKey = SipHashKey(bytes: secret.prefix(16))
        encryptionKey = SipHashKey(bytes: secret.dropFirst(16))
        self.secret = Array(secret)
    }

    /// A key from 64 hexadecimal characters, as configuration gives it; nil if malformed.
    public init?(id: UInt8, hexSecret: String) {
        let characters = Array(hexSecret.utf8)
        guard id < 16, characters.count == 64 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = Self.hexValue(characters[index]), let low = Self.hexValue(characters[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.init(id: id, secret: bytes)
    }

    private static func hexValue(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// The keys a relay or transceiver accepts, and the one it seals new tokens with. Relays and
/// transceivers of a cluster share it; to rotate, add the new key everywhere, then make it current,
/// then drop the old one once its calls have ended.
public struct RoutingKeyring: Sendable {
    private var keys: [RoutingKey?]
    public private(set) var currentKeyID: UInt8
    /// Tokens older than this are refused when `open` is given the current hour.
    public var maximumAgeHours: UInt16 = 48

    public init(current: RoutingKey, others: [RoutingKey] = []) {
        keys = Array(repeating: nil, count: 16)
        for key in others { keys[Int(key.id)] = key }
        keys[Int(current.id)] = current
        currentKeyID = current.id
    }

    public func key(id: UInt8) -> RoutingKey? { id < 16 ? keys[Int(id)] : nil }

    /// Writes `token`'s text into `output` (at least `token.encodedLength` bytes) and returns its length.
    /// The token's key id must be in the ring.
    @discardableResult
    public func seal(_ token: RoutingToken, into output: UnsafeMutableRawBufferPointer) -> Int {
        guard let key = key(id: token.keyID) else { preconditionFailure("key \(token.keyID) is not in the keyring") }
        precondition(output.count >= token.encodedLength, "the output is shorter than the token")
        return withUnsafeTemporaryAllocation(byteCount: RoutingToken.maximumLength / 4 * 3, alignment: 8) { binary in
            let length = token.binaryLength
            let body = length - RoutingToken.tagLength
            binary[0] = RoutingToken.version << 4 | token.keyID
            binary.store(token.clusterID, at: 1)
            binary[3] = (token.worker.isIPv6 ? 1 : 0) | token.purpose.rawValue << 1
            var offset = 4
            switch token.worker {
            case .v4(let address, let port):
                binary.store(address.bits, at: offset)
                binary.store(port, at: offset + 4)
                offset += 6
            case .v6(let address, let port):
                binary.store(address.high, at: offset)
                binary.store(address.low, at: offset + 8)
                binary.store(port, at: offset + 16)
                offset += 18
            }
            binary.store(token.issuedHour, at: offset)
            binary.store(token.nonce, at: offset + 2)
            let tag = SipHash.hash(UnsafeRawBufferPointer(rebasing: binary[0..<body]), key: key.macKey)
            binary.store(tag, at: body)
            Self.applyKeystream(to: UnsafeMutableRawBufferPointer(rebasing: binary[RoutingToken.headerLength..<body]),
                                tag: tag, key: key.encryptionKey)
            UfragBase64.encode(UnsafeRawBufferPointer(rebasing: binary[0..<length]), into: output)
            return token.encodedLength
        }
    }

    /// The token as text, for SDP.
    public func seal(_ token: RoutingToken) -> String {
        String(unsafeUninitializedCapacity: token.encodedLength) { buffer in
            seal(token, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Reads the clear cluster id of a token without authenticating it (what a Global Relay edge
    /// forwards by; the owning cluster authenticates). Nil when the text cannot be a token.
    public static func clusterID(of text: UnsafeRawBufferPointer) -> UInt16? {
        guard text.count == RoutingToken.ipv4Length || text.count == RoutingToken.ipv6Length else { return nil }
        return withUnsafeTemporaryAllocation(byteCount: 3, alignment: 4) { header in
            guard UfragBase64.decode(UnsafeRawBufferPointer(rebasing: text[0..<4]), into: header),
                  header[0] >> 4 == RoutingToken.version else { return nil }
            return UnsafeRawBufferPointer(header).uint16(at: 1)
        }
    }

    /// Decodes and authenticates a token from ufrag text (only the token: cut a STUN USERNAME at
    /// its `:` first). With `currentHour`, tokens older than `maximumAgeHours` (or issued more than
    /// an hour ahead) are refused. Forged, malformed or unknown-key tokens throw, and so does a token
    /// sealed for another `purpose` (`malformedBody`); nothing allocates.
    public func open(_ text: UnsafeRawBufferPointer, currentHour: UInt16? = nil,
                     purpose: RoutingToken.Purpose = .media) throws(RoutingTokenError) -> RoutingToken {
        guard text.count == RoutingToken.ipv4Length || text.count == RoutingToken.ipv6Length else {
            throw .wrongLength
        }
        let result: Result<RoutingToken, RoutingTokenError> = withUnsafeTemporaryAllocation(
            byteCount: RoutingToken.maximumLength / 4 * 3, alignment: 8
        ) { binary in
            let length = text.count / 4 * 3
            let body = length - RoutingToken.tagLength
            guard UfragBase64.decode(text, into: binary) else { return .failure(.invalidCharacter) }
            let version = binary[0] >> 4
            guard version == RoutingToken.version else { return .failure(.unsupportedVersion(version)) }
            let keyID = binary[0] & 0x0F
            guard let key = key(id: keyID) else { return .failure(.unknownKey(keyID)) }
            let received = UnsafeRawBufferPointer(binary).uint64(at: body)
            Self.applyKeystream(to: UnsafeMutableRawBufferPointer(rebasing: binary[RoutingToken.headerLength..<body]),
                                tag: received, key: key.encryptionKey)
            let expected = SipHash.hash(UnsafeRawBufferPointer(rebasing: binary[0..<body]), key: key.macKey)
            guard expected ^ received == 0 else { return .failure(.badTag) }

            let bytes = UnsafeRawBufferPointer(binary)
            let isIPv6 = length == RoutingToken.ipv6Length / 4 * 3
            guard binary[3] == (isIPv6 ? 1 : 0) | purpose.rawValue << 1 else { return .failure(.malformedBody) }
            let worker: TransportAddress
            let offset: Int
            if isIPv6 {
                worker = .v6(IPv6Address(high: bytes.uint64(at: 4), low: bytes.uint64(at: 12)), port: bytes.uint16(at: 20))
                offset = 22
            } else {
                worker = .v4(IPv4Address(bits: bytes.uint32(at: 4)), port: bytes.uint16(at: 8))
                offset = 10
            }
            let issued = bytes.uint16(at: offset)
            if let currentHour {
                let age = currentHour &- issued
                let ahead = issued &- currentHour
                guard age <= maximumAgeHours || ahead <= 1 else { return .failure(.expired) }
            }
            return .success(RoutingToken(keyID: keyID, clusterID: bytes.uint16(at: 1), worker: worker,
                                         issuedHour: issued, nonce: bytes.uint32(at: offset + 2), purpose: purpose))
        }
        return try result.get()
    }

    public func open(_ text: some ContiguousBytesLike, currentHour: UInt16? = nil,
                     purpose: RoutingToken.Purpose = .media) throws(RoutingTokenError) -> RoutingToken {
        try text.withRawBytes { (raw) throws(RoutingTokenError) in try open(raw, currentHour: currentHour, purpose: purpose) }
    }

    public func open(_ text: String, currentHour: UInt16? = nil,
                     purpose: RoutingToken.Purpose = .media) throws(RoutingTokenError) -> RoutingToken {
        try open(Array(text.utf8), currentHour: currentHour, purpose: purpose)
    }

    /// XORs `body` with SipHash-2-4(key, tag ‖ block) for blocks 0, 1, … (8 bytes each).
    private static func applyKeystream(to body: UnsafeMutableRawBufferPointer, tag: UInt64, key: SipHashKey) {
        withUnsafeTemporaryAllocation(byteCount: 9, alignment: 8) { input in
            input.store(tag, at: 0)
            var block: UInt8 = 0
            var offset = 0
            while offset < body.count {
                input[8] = block
                let stream = SipHash.hash(UnsafeRawBufferPointer(input), key: key)
                var index = 0
                while index < 8, offset + index < body.count {
                    body[offset + index] ^= UInt8(truncatingIfNeeded: stream >> (56 - 8 * index))
                    index += 1
                }
                offset += 8
                block += 1
            }
        }
    }
}
