/// Builds SCTP packets: a common header, then chunks, each padded to 4 bytes; `finish` writes the
/// CRC-32C. Packets are built on association timers and sends, not per received byte.
struct SCTPPacketWriter {
    private(set) var bytes: [UInt8]
    /// Padding the last parameter added, if nothing came after it: a chunk's length counts the
    /// padding of every parameter but its last (RFC 9260 §3.2).
    private var trailingParameterPadding = 0

    init(sourcePort: UInt16, destinationPort: UInt16, verificationTag: UInt32, capacity: Int = 1200) {
        bytes = []
        bytes.reserveCapacity(capacity)
        append16(sourcePort)
        append16(destinationPort)
        append32(verificationTag)
        append32(0)
    }

    var count: Int { bytes.count }

    /// Appends a chunk whose value `body` writes.
    mutating func chunk(_ type: SCTPChunkType, flags: UInt8 = 0, _ body: (inout SCTPPacketWriter) -> Void = { _ in }) {
        let start = bytes.count
        bytes.append(type.rawValue)
        bytes.append(flags)
        append16(0)
        trailingParameterPadding = 0
        body(&self)
        writeLength(at: start, excluding: trailingParameterPadding)
        while bytes.count % 4 != 0 { bytes.append(0) }
        trailingParameterPadding = 0
    }

    /// A type-length-value parameter inside a chunk.
    mutating func parameter(_ type: UInt16, _ body: (inout SCTPPacketWriter) -> Void) {
        let start = bytes.count
        append16(type)
        append16(0)
        body(&self)
        writeLength(at: start)
        let unpadded = bytes.count
        while bytes.count % 4 != 0 { bytes.append(0) }
        trailingParameterPadding = bytes.count - unpadded
    }

    /// The 16-bit length of the chunk or parameter that starts at `start`. Every caller keeps its
    /// chunks within one packet (an MTU), far below 2^16.
    private mutating func writeLength(at start: Int, excluding padding: Int = 0) {
        let length = UInt16(clamping: bytes.count - start - padding)
        bytes[start + 2] = UInt8(truncatingIfNeeded: length >> 8)
        bytes[start + 3] = UInt8(truncatingIfNeeded: length)
    }

    mutating func append16(_ value: UInt16) {
        trailingParameterPadding = 0
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    mutating func append32(_ value: UInt32) {
        trailingParameterPadding = 0
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    mutating func append(_ data: some Sequence<UInt8>) {
        trailingParameterPadding = 0
        bytes.append(contentsOf: data)
    }

    mutating func finish() -> [UInt8] {
        bytes.withUnsafeMutableBytes { SCTPPacket.seal($0) }
        return bytes
    }
}

/// TSN arithmetic modulo 2³² (RFC 9260 §1.6, serial number arithmetic).
extension UInt32 {
    @inline(__always) func tsnLessThan(_ other: UInt32) -> Bool { self != other && other &- self < 0x8000_0000 }
    @inline(__always) func tsnAtMost(_ other: UInt32) -> Bool { self == other || tsnLessThan(other) }
}

extension UInt16 {
    @inline(__always) func ssnLessThan(_ other: UInt16) -> Bool { self != other && other &- self < 0x8000 }
}
