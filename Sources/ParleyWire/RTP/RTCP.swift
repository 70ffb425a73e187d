/// The RTCP packets Parley reads and writes (RFC 3550 §6): sender and receiver reports with their
/// report blocks, SDES CNAME, BYE. Others in a compound packet are skipped.
public enum RTCPPacketType: UInt8, Sendable {
    case senderReport = 200
    case receiverReport = 201
    case sourceDescription = 202
    case goodbye = 203
}

/// One report block: what the sender of the report knows about the stream from `ssrc`.
public struct RTCPReportBlock: Sendable, Equatable {
    public var ssrc: UInt32
    /// Fraction of packets lost since the previous report, in 1/256.
    public var fractionLost: UInt8
    /// Cumulative packets lost (24-bit signed on the wire).
    public var cumulativeLost: Int32
    public var extendedHighestSequence: UInt32
    /// Interarrival jitter in timestamp units.
    public var jitter: UInt32
    /// Middle 32 bits of the NTP time of the last SR received from `ssrc`, 0 if none.
    public var lastSenderReport: UInt32
    /// Delay since that SR, in 1/65536 s.
    public var delaySinceLastSenderReport: UInt32

    public init(ssrc: UInt32, fractionLost: UInt8, cumulativeLost: Int32, extendedHighestSequence: UInt32,
                jitter: UInt32, lastSenderReport: UInt32, delaySinceLastSenderReport: UInt32) {
        self.ssrc = ssrc
        self.fractionLost = fractionLost
        self.cumulativeLost = cumulativeLost
        self.extendedHighestSequence = extendedHighestSequence
        self.jitter = jitter
        self.lastSenderReport = lastSenderReport
        self.delaySinceLastSenderReport = delaySinceLastSenderReport
    }

    static let length = 24

    func write(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.store(ssrc, at: offset)
        let lost = UInt32(bitPattern: max(-0x80_0000, min(0x7F_FFFF, cumulativeLost))) & 0x00FF_FFFF
        buffer.store(UInt32(fractionLost) << 24 | lost, at: offset + 4)
        buffer.store(extendedHighestSequence, at: offset + 8)
        buffer.store(jitter, at: offset + 12)
        buffer.store(lastSenderReport, at: offset + 16)
        buffer.store(delaySinceLastSenderReport, at: offset + 20)
    }

    static func read(_ packet: UnsafeRawBufferPointer, at offset: Int) -> RTCPReportBlock {
        let word = packet.uint32(at: offset + 4)
        var lost = Int32(bitPattern: word & 0x00FF_FFFF)
        if lost & 0x80_0000 != 0 { lost -= 0x100_0000 }
        return RTCPReportBlock(
            ssrc: packet.uint32(at: offset), fractionLost: UInt8(truncatingIfNeeded: word >> 24), cumulativeLost: lost,
            extendedHighestSequence: packet.uint32(at: offset + 8), jitter: packet.uint32(at: offset + 12),
            lastSenderReport: packet.uint32(at: offset + 16), delaySinceLastSenderReport: packet.uint32(at: offset + 20))
    }
}

/// What a sender report says about its sender's stream.
public struct RTCPSenderInfo: Sendable, Equatable {
    public var ssrc: UInt32
    /// 64-bit NTP timestamp (seconds since 1900 in the high 32 bits, fraction in the low).
    public var ntpTimestamp: UInt64
    public var rtpTimestamp: UInt32
    public var packetCount: UInt32
    public var octetCount: UInt32

    public init(ssrc: UInt32, ntpTimestamp: UInt64, rtpTimestamp: UInt32, packetCount: UInt32, octetCount: UInt32) {
        self.ssrc = ssrc
        self.ntpTimestamp = ntpTimestamp
        self.rtpTimestamp = rtpTimestamp
        self.packetCount = packetCount
        self.octetCount = octetCount
    }

    /// The middle 32 bits, as report blocks echo them in LSR.
    public var compactNTP: UInt32 { UInt32(truncatingIfNeeded: ntpTimestamp >> 16) }
}

/// One packet of a compound RTCP packet, as far as Parley reads it.
public enum RTCPPacket: Sendable, Equatable {
    case senderReport(RTCPSenderInfo, [RTCPReportBlock])
    case receiverReport(ssrc: UInt32, [RTCPReportBlock])
    case goodbye(ssrcs: [UInt32])
    /// SDES, feedback, XR and anything else: type only.
    case other(packetType: UInt8)
}

public enum RTCPParseError: Error, Equatable, Sendable {
    case truncated
    case badVersion
    case badLength
}

public enum RTCPCompound {
    /// Parses every packet of a compound RTCP packet; at most 16 are read.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(RTCPParseError) -> [RTCPPacket] {
        var packets: [RTCPPacket] = []
        var offset = 0
        while offset < bytes.count, packets.count < 16 {
            guard bytes.count - offset >= 4 else { throw .truncated }
            guard bytes[offset] >> 6 == 2 else { throw .badVersion }
            let count = Int(bytes[offset] & 0x1F)
            let type = bytes[offset + 1]
            let length = 4 * (Int(bytes.uint16(at: offset + 2)) + 1)
            guard offset + length <= bytes.count else { throw .badLength }
            let packet = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
            switch type {
            case RTCPPacketType.senderReport.rawValue:
                guard length >= 28 + count * RTCPReportBlock.length else { throw .badLength }
                let info = RTCPSenderInfo(
                    ssrc: packet.uint32(at: 4), ntpTimestamp: packet.uint64(at: 8), rtpTimestamp: packet.uint32(at: 16),
                    packetCount: packet.uint32(at: 20), octetCount: packet.uint32(at: 24))
                packets.append(.senderReport(info, (0..<count).map { RTCPReportBlock.read(packet, at: 28 + $0 * 24) }))
            case RTCPPacketType.receiverReport.rawValue:
                guard length >= 8 + count * RTCPReportBlock.length else { throw .badLength }
                packets.append(.receiverReport(
                    ssrc: packet.uint32(at: 4), (0..<count).map { RTCPReportBlock.read(packet, at: 8 + $0 * 24) }))
            case RTCPPacketType.goodbye.rawValue:
                guard length >= 4 + 4 * count else { throw .badLength }
                packets.append(.goodbye(ssrcs: (0..<count).map { packet.uint32(at: 4 + 4 * $0) }))
            default:
                packets.append(.other(packetType: type))
            }
            offset += length
        }
        return packets
    }

    /// The longest compound `writeReport` writes: an SR with 31 blocks and a 255-byte CNAME.
    public static let maximumReportLength = 28 + 31 * RTCPReportBlock.length + 4 + 264

    /// Writes a compound packet: an SR (when `sender` is given) or an RR from `ssrc`, with `blocks`,
    /// then SDES with the CNAME (RFC 3550 §6.1). Returns the length written. `buffer` must hold
    /// `maximumReportLength` bytes.
    public static func writeReport(
        ssrc: UInt32, sender: RTCPSenderInfo?, blocks: [RTCPReportBlock], cname: String,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        precondition(buffer.count >= maximumReportLength, "an RTCP report needs a buffer of maximumReportLength bytes")
        let blocks = blocks.prefix(31)
        var offset = 0
        let reportLength = (sender == nil ? 8 : 28) + blocks.count * RTCPReportBlock.length
        buffer[0] = 0x80 | UInt8(truncatingIfNeeded: blocks.count)  // ≤ 31
        buffer[1] = sender == nil ? RTCPPacketType.receiverReport.rawValue : RTCPPacketType.senderReport.rawValue
        buffer.store(UInt16(truncatingIfNeeded: reportLength / 4 - 1), at: 2)
        buffer.store(ssrc, at: 4)
        offset = 8
        if let sender {
            buffer.store(sender.ntpTimestamp, at: 8)
            buffer.store(sender.rtpTimestamp, at: 16)
            buffer.store(sender.packetCount, at: 20)
            buffer.store(sender.octetCount, at: 24)
            offset = 28
        }
        for block in blocks {
            block.write(into: buffer, at: offset)
            offset += RTCPReportBlock.length
        }
        // SDES: one chunk, CNAME item, then a null terminator padded to 32 bits.
        let name = Array(cname.utf8.prefix(255))
        let chunkLength = (4 + 2 + name.count + 1 + 3) & ~3
        let start = offset
        buffer[offset] = 0x81
        buffer[offset + 1] = RTCPPacketType.sourceDescription.rawValue
        buffer.store(UInt16(truncatingIfNeeded: (4 + chunkLength) / 4 - 1), at: offset + 2)
        buffer.store(ssrc, at: offset + 4)
        buffer[offset + 8] = 1
        buffer[offset + 9] = UInt8(truncatingIfNeeded: name.count)  // ≤ 255
        for (index, byte) in name.enumerated() { buffer[offset + 10 + index] = byte }
        for index in (offset + 10 + name.count)..<(start + 4 + chunkLength) { buffer[index] = 0 }
        return start + 4 + chunkLength
    }

    /// A BYE for `ssrc`.
    public static func writeGoodbye(ssrc: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        buffer[0] = 0x81
        buffer[1] = RTCPPacketType.goodbye.rawValue
        buffer.store(UInt16(1), at: 2)
        buffer.store(ssrc, at: 4)
        return 8
    }
}
