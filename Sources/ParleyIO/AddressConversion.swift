// The edge between Parley's sans-IO cores and SwiftNIO: address conversion, clocks, thread placement.
import NIOCore
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

extension TransportAddress {
    /// The address of a NIO socket address; nil for Unix domain sockets.
    public init?(_ address: SocketAddress) {
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
    public var socketAddress: SocketAddress {
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
public func currentNTPTime() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    let seconds = UInt64(now.tv_sec) + 2_208_988_800
    let fraction = (UInt64(now.tv_nsec) << 32) / 1_000_000_000
    return seconds << 32 | fraction
}

/// The monotonic clock sessions run on.
public func monotonicNow() -> Instant {
    Instant(nanoseconds: Int64(NIODeadline.now().uptimeNanoseconds))
}

/// Pins the calling thread to one CPU (the kernel keeps it there; cache and interrupt locality for
/// a worker's socket). Returns false where the kernel refuses.
@discardableResult
public func pinCurrentThread(toCPU cpu: Int) -> Bool {
    var set = cpu_set_t()
    let bitsPerWord = MemoryLayout<UInt>.size * 8
    guard cpu >= 0, cpu < MemoryLayout<cpu_set_t>.size * 8 else { return false }
    withUnsafeMutableBytes(of: &set) { bytes in
        let words = bytes.bindMemory(to: UInt.self)
        words[cpu / bitsPerWord] |= 1 << UInt(cpu % bitsPerWord)
    }
    // sched_setaffinity is a GNU extension Glibc's module map does not export; look it up.
    typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") else { return false }
    let setAffinity = unsafeBitCast(symbol, to: SetAffinity.self)
    return withUnsafeBytes(of: &set) { setAffinity(0, MemoryLayout<cpu_set_t>.size, $0.baseAddress!) } == 0
}

/// The CPUs this process may run on (its affinity mask: a container's or a pod's CPU set), in
/// order; nil when the mask cannot be read.
public func allowedCPUs() -> [Int]? {
    var set = cpu_set_t()
    typealias GetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_getaffinity") else { return nil }
    let getAffinity = unsafeBitCast(symbol, to: GetAffinity.self)
    guard withUnsafeMutableBytes(of: &set, { getAffinity(0, MemoryLayout<cpu_set_t>.size, $0.baseAddress!) }) == 0 else { return nil }
    let bitsPerWord = MemoryLayout<UInt>.size * 8
    return withUnsafeBytes(of: &set) { bytes in
        let words = bytes.bindMemory(to: UInt.self)
        return (0..<(words.count * bitsPerWord)).filter { words[$0 / bitsPerWord] & (1 << UInt($0 % bitsPerWord)) != 0 }
    }
}

/// Pins the current thread to the `index`-th CPU this process may use (round-robin): in a
/// container, one of its own CPUs, not the machine's CPU `index`.
@discardableResult
public func pinCurrentThread(toAllowedCPU index: Int) -> Bool {
    guard let allowed = allowedCPUs(), !allowed.isEmpty else { return pinCurrentThread(toCPU: index) }
    return pinCurrentThread(toCPU: allowed[index % allowed.count])
}

/// Pins each event loop of `loops` to its own CPU, round-robin over the machine's cores.
public func pinEventLoops(_ loops: [EventLoop], cores: Int) async {
    for (index, loop) in loops.enumerated() {
        _ = try? await loop.submit { pinCurrentThread(toCPU: index % max(1, cores)) }.get()
    }
}
