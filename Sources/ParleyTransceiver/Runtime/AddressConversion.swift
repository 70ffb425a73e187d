import NIOCore
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

extension TransportAddress {
    /// The address of a NIO socket address; nil for Unix domain sockets.
    init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            self = .v4(IPv4Address(bits: UInt32(bigEndian: v4.address.sin_addr.s_addr)), port: UInt16(bigEndian: v4.address.sin_port))
        case .v6(let v6):
            var storage = v6.address.sin6_addr
            let bytes = withUnsafeBytes(of: &storage) { Array($0) }
            let address = IPv6Address(bytes: bytes)
            // An IPv4-mapped address (::ffff:a.b.c.d) from a dual-stack socket is the IPv4 client.
            if address.high == 0, address.low >> 32 == 0xFFFF {
                self = .v4(IPv4Address(bits: UInt32(truncatingIfNeeded: address.low)), port: UInt16(bigEndian: v6.address.sin6_port))
            } else {
                self = .v6(address, port: UInt16(bigEndian: v6.address.sin6_port))
            }
        case .unixDomainSocket:
            return nil
        }
    }

    /// The NIO socket address to send to.
    var socketAddress: SocketAddress {
        switch self {
        case .v4(let address, let port):
            var raw = sockaddr_in()
            raw.sin_family = sa_family_t(AF_INET)
            raw.sin_port = port.bigEndian
            raw.sin_addr.s_addr = address.bits.bigEndian
            return SocketAddress(raw, host: "")
        case .v6(let address, let port):
            var raw = sockaddr_in6()
            raw.sin6_family = sa_family_t(AF_INET6)
            raw.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &raw.sin6_addr) { bytes in
                for index in 0..<16 { bytes[index] = address[byte: index] }
            }
            return SocketAddress(raw, host: "")
        }
    }
}

/// Wall-clock time as a 64-bit NTP timestamp (RFC 5905: seconds since 1900, 32.32 fixed point).
func currentNTPTime() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    let seconds = UInt64(now.tv_sec) + 2_208_988_800
    let fraction = (UInt64(now.tv_nsec) << 32) / 1_000_000_000
    return seconds << 32 | fraction
}

/// The monotonic clock sessions run on.
func monotonicNow() -> Instant {
    Instant(nanoseconds: Int64(NIODeadline.now().uptimeNanoseconds))
}
