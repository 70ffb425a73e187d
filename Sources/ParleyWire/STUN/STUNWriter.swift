/// Builds a STUN message into caller-owned memory (a pre-allocated packet buffer), attribute by
/// attribute, keeping the header's length current. Nothing here allocates.
public struct STUNWriter {
    public let buffer: UnsafeMutableRawBufferPointer
    /// Bytes written so far; the message is `buffer[0..<count]`.
    public private(set) var count: Int
    public let transactionID: STUNTransactionID
    /// The byte used to pad attribute values to 4 bytes. RFC 8489 says the value is ignored;
    /// RFC 5769's vectors use 0x20, so the tests set it to reproduce them byte for byte.
    public var paddingByte: UInt8 = 0
    var hasIntegrity = false
    private var hasFingerprint = false

    public init(
        into buffer: UnsafeMutableRawBufferPointer, type: STUNMessageType, transactionID: STUNTransactionID
    ) throws(STUNBuildError) {
        guard buffer.count >= stunHeaderLength else { throw .bufferTooSmall }
        self.buffer = buffer
        self.transactionID = transactionID
        buffer.store(type.rawValue, at: 0)
        buffer.store(UInt16(0), at: 2)
        buffer.store(stunMagicCookie, at: 4)
        buffer.store(transactionID.word0, at: 8)
        buffer.store(transactionID.word1, at: 12)
        buffer.store(transactionID.word2, at: 16)
        count = stunHeaderLength
    }

    /// Reserves an attribute of `length` value bytes, writes its header and padding, updates the
    /// message length, and returns where the value goes.
    mutating func reserve(_ type: STUNAttributeType, length: Int) throws(STUNBuildError) -> Int {
        guard !hasFingerprint, !hasIntegrity || type == .fingerprint else { throw .attributeAfterIntegrity }
        guard length <= 0xFFFF - 4 else { throw .valueTooLong(type) }
        let padded = (length + 3) & ~3
        guard count + 4 + padded <= buffer.count, count - stunHeaderLength + 4 + padded <= 0xFFFF else {
            throw .bufferTooSmall
        }
        buffer.store(type.rawValue, at: count)
        buffer.store(UInt16(truncatingIfNeeded: length), at: count + 2)  // ≤ 0xFFFF - 4, checked above
        let valueOffset = count + 4
        for index in (valueOffset + length)..<(valueOffset + padded) { buffer[index] = paddingByte }
        count = valueOffset + padded
        buffer.store(UInt16(truncatingIfNeeded: count - stunHeaderLength), at: 2)  // ≤ 0xFFFF, checked above
        return valueOffset
    }

    /// Any attribute, its value copied from `value`.
    public mutating func append(_ type: STUNAttributeType, value: UnsafeRawBufferPointer) throws(STUNBuildError) {
        let offset = try reserve(type, length: value.count)
        if let base = value.baseAddress, !value.isEmpty {
            (buffer.baseAddress! + offset).copyMemory(from: base, byteCount: value.count)
        }
    }

    public mutating func append(_ type: STUNAttributeType, value: some ContiguousBytesLike) throws(STUNBuildError) {
        try value.withRawBytes { (raw) throws(STUNBuildError) in try append(type, value: raw) }
    }

    public mutating func appendUsername(_ value: some ContiguousBytesLike) throws(STUNBuildError) {
        let tooLong = value.withRawBytes { $0.count > 508 }  // RFC 8489 §14.3: fewer than 509 bytes
        if tooLong { throw .valueTooLong(.username) }
        try append(.username, value: value)
    }

    public mutating func appendUsername(_ text: String) throws(STUNBuildError) {
        try appendUsername(Array(text.utf8))
    }

    public mutating func appendSoftware(_ text: String) throws(STUNBuildError) {
        try append(.software, value: Array(text.utf8))
    }

    public mutating func appendPriority(_ priority: UInt32) throws(STUNBuildError) {
        buffer.store(priority, at: try reserve(.priority, length: 4))
    }

    public mutating func appendUseCandidate() throws(STUNBuildError) {
        _ = try reserve(.useCandidate, length: 0)
    }

    public mutating func appendICEControlling(tieBreaker: UInt64) throws(STUNBuildError) {
        buffer.store(tieBreaker, at: try reserve(.iceControlling, length: 8))
    }

    public mutating func appendICEControlled(tieBreaker: UInt64) throws(STUNBuildError) {
        buffer.store(tieBreaker, at: try reserve(.iceControlled, length: 8))
    }

    public mutating func appendXORMappedAddress(_ address: TransportAddress) throws(STUNBuildError) {
        try appendAddress(.xorMappedAddress, address, xor: true)
    }

    public mutating func appendMappedAddress(_ address: TransportAddress) throws(STUNBuildError) {
        try appendAddress(.mappedAddress, address, xor: false)
    }

    private mutating func appendAddress(
        _ type: STUNAttributeType, _ address: TransportAddress, xor: Bool
    ) throws(STUNBuildError) {
        let portMask: UInt16 = xor ? UInt16(truncatingIfNeeded: stunMagicCookie >> 16) : 0
        switch address {
        case .v4(let ip, let port):
            let offset = try reserve(type, length: 8)
            buffer.store(UInt16(0x0001), at: offset)
            buffer.store(port ^ portMask, at: offset + 2)
            buffer.store(ip.bits ^ (xor ? stunMagicCookie : 0), at: offset + 4)
        case .v6(let ip, let port):
            let offset = try reserve(type, length: 20)
            buffer.store(UInt16(0x0002), at: offset)
            buffer.store(port ^ portMask, at: offset + 2)
            let highMask = xor ? UInt64(stunMagicCookie) << 32 | UInt64(transactionID.word0) : 0
            let lowMask = xor ? UInt64(transactionID.word1) << 32 | UInt64(transactionID.word2) : 0
            buffer.store(ip.high ^ highMask, at: offset + 4)
            buffer.store(ip.low ^ lowMask, at: offset + 12)
        }
    }

    /// DTLS-IN-STUN carrying one DTLS datagram (SPED). It must come before MESSAGE-INTEGRITY, which
    /// then vouches for it.
    public mutating func appendDTLSInSTUN(_ datagram: some ContiguousBytesLike) throws(STUNBuildError) {
        try append(.dtlsInSTUN, value: datagram)
    }

    /// DTLS-IN-STUN-ACK with up to four CRC-32s (more are a programming error).
    public mutating func appendDTLSInSTUNAcknowledgement(_ checksums: some Collection<UInt32>) throws(STUNBuildError) {
        precondition(checksums.count <= maximumDTLSAcknowledgements, "SPED acknowledges four datagrams at most")
        let offset = try reserve(.dtlsInSTUNAcknowledgement, length: 4 * checksums.count)
        for (index, checksum) in checksums.enumerated() { buffer.store(checksum, at: offset + 4 * index) }
    }

    /// ERROR-CODE with a reason phrase (RFC 8489 §14.8).
    public mutating func appendErrorCode(_ code: Int, reason: String) throws(STUNBuildError) {
        precondition((300...699).contains(code), "STUN error codes are 300–699")
        // RFC 8489 §14.8: fewer than 128 characters; cut on a character boundary.
        let phrase = Array(String(reason.prefix(127)).utf8)
        let offset = try reserve(.errorCode, length: 4 + phrase.count)
        buffer.store(UInt16(0), at: offset)
        buffer[offset + 2] = UInt8(truncatingIfNeeded: code / 100)  // 3…6 (precondition above)
        buffer[offset + 3] = UInt8(truncatingIfNeeded: code % 100)
        for (index, byte) in phrase.enumerated() { buffer[offset + 4 + index] = byte }
    }

    /// UNKNOWN-ATTRIBUTES, for a 420 answer.
    public mutating func appendUnknownAttributes(_ types: [STUNAttributeType]) throws(STUNBuildError) {
        let offset = try reserve(.unknownAttributes, length: 2 * types.count)
        for (index, type) in types.enumerated() { buffer.store(type.rawValue, at: offset + 2 * index) }
    }

    /// FINGERPRINT over everything written so far; it must be the last attribute.
    public mutating func appendFingerprint() throws(STUNBuildError) {
        let offset = try reserve(.fingerprint, length: 4)
        hasFingerprint = true
        let prefix = UnsafeRawBufferPointer(rebasing: buffer[0..<(offset - 4)])
        buffer.store(STUNMessage.fingerprint(of: prefix), at: offset)
    }

    /// The finished message's bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer[0..<count]) }
}

extension STUNWriter {
    /// Builds a message into a new array: for tests, tools and paths where an allocation is fine.
    public static func build(
        type: STUNMessageType, transactionID: STUNTransactionID, capacity: Int = 1280,
        _ body: (inout STUNWriter) throws(STUNBuildError) -> Void
    ) throws(STUNBuildError) -> [UInt8] {
        var failure: STUNBuildError?
        let bytes = [UInt8](unsafeUninitializedCapacity: capacity) { storage, initialized in
            initialized = 0
            do throws(STUNBuildError) {
                var writer = try STUNWriter(
                    into: UnsafeMutableRawBufferPointer(storage), type: type, transactionID: transactionID
                )
                try body(&writer)
                initialized = writer.count
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return bytes
    }
}
