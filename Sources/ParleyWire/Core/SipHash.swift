/// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed pseudorandom function for short inputs,
/// with a 128-bit key and a 64-bit output. It is what Linux uses for SYN cookies, the same job
/// the routing token does (a stateless, unforgeable tag checked per packet). It is written here
/// because no package in reach exposes it (the standard library's `Hasher` is SipHash-1-3 with a
/// per-process seed that cannot be set), and swift-crypto's MACs allocate per call and cost
/// about a microsecond. Checked against the reference vectors in the tests.
public struct SipHashKey: Sendable, Hashable {
    public var k0: UInt64
    public var k1: UInt64

    public init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    /// The key from 16 bytes, read as two little-endian words as the reference implementation does.
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 16, "a SipHash key has 16 bytes")
        var words: (UInt64, UInt64) = (0, 0)
        for (index, byte) in bytes.enumerated() {
            if index < 8 { words.0 |= UInt64(byte) << (8 * index) }
            else { words.1 |= UInt64(byte) << (8 * (index - 8)) }
        }
        k0 = words.0
        k1 = words.1
    }
}

public enum SipHash {
    @inlinable @inline(__always)
    static func round(_ v0: inout UInt64, _ v1: inout UInt64, _ v2: inout UInt64, _ v3: inout UInt64) {
        v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
        v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
    }

    /// SipHash-2-4 of `message` under `key`.
    @inlinable
    public static func hash(_ message: UnsafeRawBufferPointer, key: SipHashKey) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ key.k0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ key.k1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ key.k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ key.k1
        let count = message.count
        var offset = 0
        while offset + 8 <= count {
            let m = UInt64(littleEndian: message.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            v3 ^= m
            round(&v0, &v1, &v2, &v3)
            round(&v0, &v1, &v2, &v3)
            v0 ^= m
            offset += 8
        }
        var last = UInt64(truncatingIfNeeded: count) << 56
        var shift: UInt64 = 0
        while offset < count {
            last |= UInt64(message[offset]) << shift
            shift += 8
            offset += 1
        }
        v3 ^= last
        round(&v0, &v1, &v2, &v3)
        round(&v0, &v1, &v2, &v3)
        v0 ^= last
        v2 ^= 0xFF
        for _ in 0..<4 { round(&v0, &v1, &v2, &v3) }
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inlinable @inline(__always)
    func rotatedLeft(_ count: UInt64) -> UInt64 { (self << count) | (self >> (64 - count)) }
}
