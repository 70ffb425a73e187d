/// CRC-32C (Castagnoli), the SCTP checksum (RFC 9260 §6.8, Appendix A). No package in reach
/// provides it; table-driven, checked against the RFC 3720 §B.4 vectors in the tests.
public enum CRC32c {
    static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var value = UInt32(truncatingIfNeeded: index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0x82F6_3B78 ^ (value >> 1) : value >> 1 }
        return value
    }

    /// Continues a CRC over `bytes`; start with `0`.
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var value = ~crc
        table.withUnsafeBufferPointer { table in
            for byte in bytes { value = table[Int((value ^ UInt32(byte)) & 0xFF)] ^ (value >> 8) }
        }
        return ~value
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }
}
