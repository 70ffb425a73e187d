import ParleyWire

/// Chunk types WebRTC data channels use (RFC 9260 §3.2, RFC 3758, RFC 6525).
public struct SCTPChunkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let data = SCTPChunkType(rawValue: 0)
    public static let initiation = SCTPChunkType(rawValue: 1)
    public static let initiationAck = SCTPChunkType(rawValue: 2)
    public static let selectiveAck = SCTPChunkType(rawValue: 3)
    public static let heartbeat = SCTPChunkType(rawValue: 4)
    public static let heartbeatAck = SCTPChunkType(rawValue: 5)
    public static let abort = SCTPChunkType(rawValue: 6)
    public static let shutdown = SCTPChunkType(rawValue: 7)
    public static let shutdownAck = SCTPChunkType(rawValue: 8)
    public static let error = SCTPChunkType(rawValue: 9)
    public static let cookieEcho = SCTPChunkType(rawValue: 10)
    public static let cookieAck = SCTPChunkType(rawValue: 11)
    public static let shutdownComplete = SCTPChunkType(rawValue: 14)
    public static let reconfiguration = SCTPChunkType(rawValue: 130)
    public static let forwardTSN = SCTPChunkType(rawValue: 192)

    /// What a receiver does with a chunk type it does not know: the two high bits (RFC 9260 §3.2).
    public var unknownAction: (skip: Bool, report: Bool) { (rawValue & 0x80 != 0, rawValue & 0x40 != 0) }

    public var description: String { "chunk \(rawValue)" }
}

/// Why bytes are not an acceptable SCTP packet. Typed, so rejecting allocates nothing.
public enum SCTPParseError: Error, Equatable, Sendable {
    /// Shorter than the 12-byte common header, or a chunk shorter than its 4-byte header.
    case truncated
    case badChecksum
    /// A chunk's length runs past the packet, or is below 4.
    case badChunkLength(offset: Int)
    /// A known chunk whose fixed fields do not fit its length.
    case malformedChunk(SCTPChunkType)
    /// More chunks than one packet may carry here.
    case tooManyChunks
}

/// One chunk inside a packet: its type, flags, and where its value lies (after the 4-byte header).
public struct SCTPChunk: Equatable, Sendable {
    public var type: SCTPChunkType
    public var flags: UInt8
    /// The chunk's value (header excluded, padding excluded), as offsets into the packet.
    public var value: Range<Int>
}

/// An SCTP packet parsed in place (RFC 9260 §3): the common header and where each chunk lies.
public struct SCTPPacket: Equatable, Sendable {
    public static let headerLength = 12
    public static let maximumChunks = 64

    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var verificationTag: UInt32
    public var chunks: [SCTPChunk]

    /// Parses and checks the CRC-32C. Chunks are walked but not interpreted: see the typed decoders.
    public static func parse(_ bytes: UnsafeRawBufferPointer, verifyChecksum: Bool = true) throws(SCTPParseError) -> SCTPPacket {
        guard bytes.count >= headerLength + 4 else { throw .truncated }
        if verifyChecksum {
            guard checksum(of: bytes) == UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) else {
                throw .badChecksum
            }
        }
        var packet = SCTPPacket(sourcePort: bytes.uint16(at: 0), destinationPort: bytes.uint16(at: 2),
                                verificationTag: bytes.uint32(at: 4), chunks: [])
        var offset = headerLength
        while offset < bytes.count {
            guard bytes.count - offset >= 4 else { throw .truncated }
            let length = Int(bytes.uint16(at: offset + 2))
            guard length >= 4, offset + length <= bytes.count else { throw .badChunkLength(offset: offset) }
            guard packet.chunks.count < maximumChunks else { throw .tooManyChunks }
            packet.chunks.append(SCTPChunk(type: SCTPChunkType(rawValue: bytes[offset]), flags: bytes[offset + 1],
                                           value: (offset + 4)..<(offset + length)))
            offset += (length + 3) & ~3
        }
        return packet
    }

    /// The CRC-32C of a packet with its checksum field taken as zero. The field holds it least
    /// significant byte first (RFC 9260 Appendix A), as Linux, usrsctp and browsers write it.
    public static func checksum(of bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32c.update(0, UnsafeRawBufferPointer(rebasing: bytes[0..<8]))
        crc = withUnsafeBytes(of: UInt32(0)) { CRC32c.update(crc, $0) }
        return CRC32c.update(crc, UnsafeRawBufferPointer(rebasing: bytes[12...]))
    }

    /// Writes the checksum of a finished packet into its header.
    public static func seal(_ bytes: UnsafeMutableRawBufferPointer) {
        let crc = checksum(of: UnsafeRawBufferPointer(bytes))
        bytes.storeBytes(of: crc.littleEndian, toByteOffset: 8, as: UInt32.self)
    }
}
