/// A parsed STUN message. It records where each attribute's value lies in the bytes it was
/// parsed from (ranges, not copies), so parsing never allocates; read values with the same bytes.
public struct STUNMessage: Sendable, Equatable {
    public var type: STUNMessageType
    public var transactionID: STUNTransactionID
    /// The whole message's size in bytes, header included.
    public var length: Int

    public var username: Range<Int>?
    public var realm: Range<Int>?
    public var nonce: Range<Int>?
    public var software: Range<Int>?
    public var errorCode: STUNErrorCode?
    public var mappedAddress: TransportAddress?
    public var xorMappedAddress: TransportAddress?
    public var priority: UInt32?
    public var useCandidate = false
    public var iceControlling: UInt64?
    public var iceControlled: UInt64?
    /// SPED's DTLS-IN-STUN value (one DTLS datagram, without padding), when present; it may be
    /// empty (a sender with nothing pending says it still speaks SPED).
    public var dtlsInSTUN: Range<Int>?
    /// SPED's DTLS-IN-STUN-ACK value: big-endian CRC-32s, a multiple of 4 bytes and at most
    /// `maximumDTLSAcknowledgements` of them. One of another size is ignored (as the draft says),
    /// and noted in `hasMalformedDTLSAcknowledgement`.
    public var dtlsInSTUNAcknowledgement: Range<Int>?
    public var hasMalformedDTLSAcknowledgement = false
    /// Offset of the MESSAGE-INTEGRITY attribute's header, when present.
    public var messageIntegrityOffset: Int?
    /// Offset of the FINGERPRINT attribute's header, when present.
    public var fingerprintOffset: Int?
    /// Comprehension-required attributes this parser does not know (the first few, for a 420 answer).
    public var unknownRequiredAttributes = UnknownAttributeList()

    /// Parses one STUN message that fills `bytes` exactly (a UDP datagram, or a frame cut by the
    /// caller). Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored, as RFC 8489
    /// §14.5 requires; of a repeated attribute only the first counts.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(STUNParseError) -> STUNMessage {
        guard bytes.count >= stunHeaderLength else { throw .truncated }
        let rawType = bytes.uint16(at: 0)
        guard rawType & 0xC000 == 0 else { throw .notSTUN }
        guard bytes.uint32(at: 4) == stunMagicCookie else { throw .badMagicCookie }
        let bodyLength = Int(bytes.uint16(at: 2))
        guard bodyLength & 3 == 0, stunHeaderLength + bodyLength == bytes.count else { throw .badLength }

        let transactionID = STUNTransactionID(bytes.uint32(at: 8), bytes.uint32(at: 12), bytes.uint32(at: 16))
        var message = STUNMessage(
            type: STUNMessageType(rawValue: rawType), transactionID: transactionID, length: bytes.count
        )
        var offset = stunHeaderLength
        while offset < bytes.count {
            guard bytes.count - offset >= 4 else { throw .attributeOverflow(offset: offset) }
            if message.fingerprintOffset != nil { throw .attributeAfterFingerprint }
            let type = STUNAttributeType(rawValue: bytes.uint16(at: offset))
            let valueLength = Int(bytes.uint16(at: offset + 2))
            let valueStart = offset + 4
            let paddedEnd = valueStart + ((valueLength + 3) & ~3)
            guard paddedEnd <= bytes.count else { throw .attributeOverflow(offset: offset) }
            let value = valueStart..<(valueStart + valueLength)
            if message.messageIntegrityOffset == nil || type == .fingerprint {
                try message.record(type, value: value, headerOffset: offset, in: bytes)
            }
            offset = paddedEnd
        }
        return message
    }

    public static func parse(_ bytes: some ContiguousBytesLike) throws(STUNParseError) -> STUNMessage {
        try bytes.withRawBytes { (raw) throws(STUNParseError) in try parse(raw) }
    }

    private mutating func record(
        _ type: STUNAttributeType, value: Range<Int>, headerOffset: Int, in bytes: UnsafeRawBufferPointer
    ) throws(STUNParseError) {
        switch type {
        case .username:
            guard value.count <= 763 else { throw .malformedAttribute(type) }
            if username == nil { username = value }
        case .realm:
            guard value.count <= 763 else { throw .malformedAttribute(type) }
            if realm == nil { realm = value }
        case .nonce:
            guard value.count <= 763 else { throw .malformedAttribute(type) }
            if nonce == nil { nonce = value }
        case .software:
            guard value.count <= 763 else { throw .malformedAttribute(type) }
            if software == nil { software = value }
        case .messageIntegrity:
            guard value.count == 20 else { throw .malformedAttribute(type) }
            messageIntegrityOffset = headerOffset
        case .fingerprint:
            guard value.count == 4 else { throw .malformedAttribute(type) }
            fingerprintOffset = headerOffset
        case .errorCode:
            guard value.count >= 4, value.count <= 4 + 763 else { throw .malformedAttribute(type) }
            let classDigit = Int(bytes[value.lowerBound + 2] & 0x07)
            let number = Int(bytes[value.lowerBound + 3])
            guard (3...6).contains(classDigit), number < 100 else { throw .malformedAttribute(type) }
            if errorCode == nil {
                errorCode = STUNErrorCode(code: classDigit * 100 + number, reason: (value.lowerBound + 4)..<value.upperBound)
            }
        case .xorMappedAddress:
            let address = try Self.address(in: bytes, value: value, xor: true, type: type, transactionID: transactionID)
            if xorMappedAddress == nil { xorMappedAddress = address }
        case .mappedAddress:
            let address = try Self.address(in: bytes, value: value, xor: false, type: type, transactionID: transactionID)
            if mappedAddress == nil { mappedAddress = address }
        case .priority:
            guard value.count == 4 else { throw .malformedAttribute(type) }
            if priority == nil { priority = bytes.uint32(at: value.lowerBound) }
        case .useCandidate:
            guard value.isEmpty else { throw .malformedAttribute(type) }
            useCandidate = true
        case .iceControlling:
            guard value.count == 8 else { throw .malformedAttribute(type) }
            if iceControlling == nil { iceControlling = bytes.uint64(at: value.lowerBound) }
        case .iceControlled:
            guard value.count == 8 else { throw .malformedAttribute(type) }
            if iceControlled == nil { iceControlled = bytes.uint64(at: value.lowerBound) }
        case .dtlsInSTUN:
            if dtlsInSTUN == nil { dtlsInSTUN = value }
        case .dtlsInSTUNAcknowledgement:
            guard value.count % 4 == 0, value.count <= 4 * maximumDTLSAcknowledgements else {
                hasMalformedDTLSAcknowledgement = true
                return
            }
            if dtlsInSTUNAcknowledgement == nil { dtlsInSTUNAcknowledgement = value }
        case .unknownAttributes, .messageIntegritySHA256:
            break  // Understood, and not used by ICE: nothing to record.
        default:
            if type.isComprehensionRequired { unknownRequiredAttributes.append(type) }
        }
    }

    private static func address(
        in bytes: UnsafeRawBufferPointer, value: Range<Int>, xor: Bool, type: STUNAttributeType,
        transactionID: STUNTransactionID
    ) throws(STUNParseError) -> TransportAddress {
        guard value.count >= 4 else { throw .malformedAttribute(type) }
        let family = bytes[value.lowerBound + 1]
        var port = bytes.uint16(at: value.lowerBound + 2)
        if xor { port ^= UInt16(truncatingIfNeeded: stunMagicCookie >> 16) }
        switch (family, value.count) {
        case (0x01, 8):
            var bits = bytes.uint32(at: value.lowerBound + 4)
            if xor { bits ^= stunMagicCookie }
            return .v4(IPv4Address(bits: bits), port: port)
        case (0x02, 20):
            var high = bytes.uint64(at: value.lowerBound + 4)
            var low = bytes.uint64(at: value.lowerBound + 12)
            if xor {
                high ^= UInt64(stunMagicCookie) << 32 | UInt64(transactionID.word0)
                low ^= UInt64(transactionID.word1) << 32 | UInt64(transactionID.word2)
            }
            return .v6(IPv6Address(high: high, low: low), port: port)
        default:
            throw .malformedAttribute(type)
        }
    }

    /// The CRC the FINGERPRINT attribute should carry for these bytes, and whether it does.
    public func hasValidFingerprint(in bytes: UnsafeRawBufferPointer) -> Bool {
        guard let offset = fingerprintOffset, offset + 8 <= bytes.count else { return false }
        return STUNMessage.fingerprint(of: UnsafeRawBufferPointer(rebasing: bytes[0..<offset]))
            == bytes.uint32(at: offset + 4)
    }

    public func hasValidFingerprint(in bytes: some ContiguousBytesLike) -> Bool {
        bytes.withRawBytes { hasValidFingerprint(in: $0) }
    }

    /// CRC-32 of the message up to the FINGERPRINT attribute, XORed with 0x5354554E (RFC 8489 §14.7).
    /// The header's length must already count the FINGERPRINT attribute, as on the wire.
    static func fingerprint(of prefix: UnsafeRawBufferPointer) -> UInt32 {
        CRC32.checksum(prefix) ^ 0x5354_554E
    }

    /// The username attribute's bytes after the first `:` — in an ICE check, the sender's ufrag
    /// (in Parley's own checks, its routing token). Nil without a `:`.
    public func usernameSenderPart(in bytes: UnsafeRawBufferPointer) -> Range<Int>? {
        guard let username else { return nil }
        var index = username.lowerBound
        while index < username.upperBound {
            if bytes[index] == UInt8(ascii: ":") { return (index + 1)..<username.upperBound }
            index += 1
        }
        return nil
    }

    /// The username attribute's bytes up to the first `:` — in an ICE check, the recipient's ufrag.
    public func usernameRecipientPart(in bytes: UnsafeRawBufferPointer) -> Range<Int>? {
        guard let username else { return nil }
        var index = username.lowerBound
        while index < username.upperBound {
            if bytes[index] == UInt8(ascii: ":") { return username.lowerBound..<index }
            index += 1
        }
        return username
    }
}

/// The most CRCs a DTLS-IN-STUN-ACK carries (draft-hancke-webrtc-sped: four RECOMMENDED; Chromium
/// and Pion send and accept no more).
public let maximumDTLSAcknowledgements = 4

/// ERROR-CODE: the number (300–699) and where the reason phrase lies.
public struct STUNErrorCode: Sendable, Equatable {
    public var code: Int
    public var reason: Range<Int>

    public static let badRequest = 400
    public static let unauthorized = 401
    public static let unknownAttribute = 420
    public static let roleConflict = 487
    public static let serverError = 500
}

/// Up to four attribute types, kept inline so a parse never allocates; `count` may exceed four.
public struct UnknownAttributeList: Sendable, Equatable {
    public private(set) var count = 0
    private var stored: (UInt16, UInt16, UInt16, UInt16) = (0, 0, 0, 0)

    public init() {}

    mutating func append(_ type: STUNAttributeType) {
        switch count {
        case 0: stored.0 = type.rawValue
        case 1: stored.1 = type.rawValue
        case 2: stored.2 = type.rawValue
        case 3: stored.3 = type.rawValue
        default: break
        }
        count += 1
    }

    /// The recorded types (at most four).
    public var types: [STUNAttributeType] {
        [stored.0, stored.1, stored.2, stored.3].prefix(min(count, 4)).map(STUNAttributeType.init(rawValue:))
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.count == rhs.count && lhs.types == rhs.types }
}
