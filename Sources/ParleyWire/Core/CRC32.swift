/// CRC-32 (ISO-HDLC / IEEE 802.3, the one zlib computes), used by the STUN FINGERPRINT attribute.
/// No library in reach provides it without Foundation or C (swift-crypto has none), so it is a
/// table-driven implementation checked against zlib's vectors in the tests.
public enum CRC32 {
    @usableFromInline
    static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var value = UInt32(truncatingIfNeeded: index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    /// Continues a CRC over `bytes`; start with `0` and pass each result to the next call.
    @inlinable
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var value = ~crc
        table.withUnsafeBufferPointer { table in
            for byte in bytes { value = table[Int((value ^ UInt32(byte)) & 0xFF)] ^ (value >> 8) }
        }
        return ~value
    }

    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }
}
