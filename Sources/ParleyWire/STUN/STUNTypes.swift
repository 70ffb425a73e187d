/// The 0x2112A442 constant that marks an RFC 5389/8489 STUN message (and seeds the XOR of addresses).
public let stunMagicCookie: UInt32 = 0x2112_A442
/// The fixed STUN header: type, length, magic cookie, transaction id.
public let stunHeaderLength = 20

public enum STUNClass: UInt16, Sendable {
    case request = 0b00
    case indication = 0b01
    case successResponse = 0b10
    case errorResponse = 0b11
}

public struct STUNMethod: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0FFF }
    public static let binding = STUNMethod(rawValue: 0x001)
}

/// The 14-bit message type, with the class bits interleaved into the method bits (RFC 8489 §5).
public struct STUNMessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue & 0x3FFF }

    public init(method: STUNMethod, class messageClass: STUNClass) {
        let m = method.rawValue
        let c = messageClass.rawValue
        rawValue = (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
    }

    public var method: STUNMethod {
        STUNMethod(rawValue: (rawValue & 0x000F) | ((rawValue & 0x00E0) >> 1) | ((rawValue & 0x3E00) >> 2))
    }

    public var messageClass: STUNClass {
        STUNClass(rawValue: ((rawValue >> 4) & 0b01) | ((rawValue >> 7) & 0b10))!
    }

    public static let bindingRequest = STUNMessageType(method: .binding, class: .request)
    public static let bindingIndication = STUNMessageType(method: .binding, class: .indication)
    public static let bindingSuccess = STUNMessageType(method: .binding, class: .successResponse)
    public static let bindingError = STUNMessageType(method: .binding, class: .errorResponse)

    public var description: String {
        let name = method == .binding ? "Binding" : "method 0x\(String(method.rawValue, radix: 16))"
        return "\(name) \(messageClass)"
    }
}

/// The 96-bit transaction id, held as three words so it is a plain value.
public struct STUNTransactionID: Hashable, Sendable, CustomStringConvertible {
    public var word0: UInt32
    public var word1: UInt32
    public var word2: UInt32

    public init(_ word0: UInt32, _ word1: UInt32, _ word2: UInt32) {
        self.word0 = word0
        self.word1 = word1
        self.word2 = word2
    }

    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> STUNTransactionID {
        STUNTransactionID(generator.next(), generator.next(), generator.next())
    }

    public static func random() -> STUNTransactionID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public var description: String {
        [word0, word1, word2].map { word in
            let hex = String(word, radix: 16)
            return String(repeating: "0", count: 8 - hex.count) + hex
        }.joined()
    }
}

/// Attribute types used by ICE over STUN (RFC 8489 §18.3, RFC 8445 §16.1).
public struct STUNAttributeType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let mappedAddress = STUNAttributeType(rawValue: 0x0001)
    public static let username = STUNAttributeType(rawValue: 0x0006)
    public static let messageIntegrity = STUNAttributeType(rawValue: 0x0008)
    public static let errorCode = STUNAttributeType(rawValue: 0x0009)
    public static let unknownAttributes = STUNAttributeType(rawValue: 0x000A)
    public static let realm = STUNAttributeType(rawValue: 0x0014)
    public static let nonce = STUNAttributeType(rawValue: 0x0015)
    public static let messageIntegritySHA256 = STUNAttributeType(rawValue: 0x001C)
    public static let xorMappedAddress = STUNAttributeType(rawValue: 0x0020)
    public static let priority = STUNAttributeType(rawValue: 0x0024)
    public static let useCandidate = STUNAttributeType(rawValue: 0x0025)
    public static let software = STUNAttributeType(rawValue: 0x8022)
    public static let fingerprint = STUNAttributeType(rawValue: 0x8028)
    public static let iceControlled = STUNAttributeType(rawValue: 0x8029)
    public static let iceControlling = STUNAttributeType(rawValue: 0x802A)
    /// DTLS-IN-STUN (draft-hancke-webrtc-sped, SPED): one DTLS datagram riding a Binding message.
    /// The code points Chromium and Pion use (comprehension-optional), pending IANA's.
    public static let dtlsInSTUN = STUNAttributeType(rawValue: 0xC070)
    /// DTLS-IN-STUN-ACK: the CRC-32s of DTLS datagrams received, four at most.
    public static let dtlsInSTUNAcknowledgement = STUNAttributeType(rawValue: 0xC071)

    /// Types below 0x8000 must be understood; an unknown one makes a request fail with 420.
    public var isComprehensionRequired: Bool { rawValue < 0x8000 }
}

/// Why bytes are not an acceptable STUN message. Typed, so throwing it never allocates.
public enum STUNParseError: Error, Equatable, Sendable {
    case truncated
    /// The first two bits are not zero: another protocol's packet.
    case notSTUN
    case badMagicCookie
    /// The header's length disagrees with the datagram or is not a multiple of 4.
    case badLength
    /// An attribute runs past the end of the message.
    case attributeOverflow(offset: Int)
    /// A known attribute with a value of the wrong size or content.
    case malformedAttribute(STUNAttributeType)
    /// Something follows the FINGERPRINT attribute, which must be last.
    case attributeAfterFingerprint
}

public enum STUNBuildError: Error, Equatable, Sendable {
    /// The destination buffer cannot hold the message.
    case bufferTooSmall
    /// The value is longer than STUN allows for the attribute.
    case valueTooLong(STUNAttributeType)
    /// Attributes cannot follow MESSAGE-INTEGRITY or FINGERPRINT.
    case attributeAfterIntegrity
}
