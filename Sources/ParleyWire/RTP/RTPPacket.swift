/// The fixed RTP header (RFC 3550 §5.1) of a packet, parsed in place: the payload is a range of
/// the bytes it came from.
public struct RTPHeader: Sendable, Equatable {
    public var marker: Bool
    public var payloadType: UInt8
    public var sequenceNumber: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    /// Where the payload lies in the packet (after CSRCs, extension and before padding).
    public var payload: Range<Int>

    public static let fixedLength = 12

    public static func parse(_ packet: UnsafeRawBufferPointer) throws(RTPParseError) -> RTPHeader {
        guard packet.count >= fixedLength else { throw .truncated }
        let first = packet[0]
        guard first >> 6 == 2 else { throw .badVersion }
        var offset = fixedLength + 4 * Int(first & 0x0F)
        guard offset <= packet.count else { throw .truncated }
        if first & 0x10 != 0 {
            guard offset + 4 <= packet.count else { throw .truncated }
            offset += 4 + 4 * Int(packet.uint16(at: offset + 2))
            guard offset <= packet.count else { throw .truncated }
        }
        var end = packet.count
        if first & 0x20 != 0 {
            let padding = Int(packet[packet.count - 1])
            guard padding > 0, end - padding >= offset else { throw .badPadding }
            end -= padding
        }
        return RTPHeader(
            marker: packet[1] & 0x80 != 0, payloadType: packet[1] & 0x7F, sequenceNumber: packet.uint16(at: 2),
            timestamp: packet.uint32(at: 4), ssrc: packet.uint32(at: 8), payload: offset..<end)
    }

    /// Writes a 12-byte header (no CSRC, no extension, no padding) at the start of `buffer`.
    public static func write(marker: Bool, payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32, ssrc: UInt32,
                             into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= fixedLength)
        buffer[0] = 0x80
        buffer[1] = (marker ? 0x80 : 0) | (payloadType & 0x7F)
        buffer.store(sequenceNumber, at: 2)
        buffer.store(timestamp, at: 4)
        buffer.store(ssrc, at: 8)
    }
}

public enum RTPParseError: Error, Equatable, Sendable {
    case truncated
    case badVersion
    case badPadding
}
