/// A point on a monotonic clock, in nanoseconds from an arbitrary origin. Sans-IO cores take it as
/// input instead of reading a clock, so tests drive them with virtual time.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)

    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: Instant, rhs: Duration) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    public static func - (lhs: Instant, rhs: Instant) -> Duration { .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds) }

    public var description: String { "\(Double(nanoseconds) / 1e9)s" }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled &+ attoseconds / 1_000_000_000
    }
}

extension Duration {
    /// The duration on an RTP clock of `clockRate` Hz, modulo 2^32 (what RTP timestamps count):
    /// exact for any duration, never overflowing.
    public func rtpTicks(clockRate: UInt32) -> UInt32 {
        let nanoseconds = self.nanoseconds
        let seconds = nanoseconds / 1_000_000_000, remainder = nanoseconds % 1_000_000_000
        // |remainder| < 10^9 and the rate < 2^32: the product stays below 2^63.
        return UInt32(truncatingIfNeeded: seconds &* Int64(clockRate) &+ remainder * Int64(clockRate) / 1_000_000_000)
    }

    /// The duration in NTP short format (1/65536 s, RFC 3550 §6.4.1's DLSR), saturating: 0 for
    /// negative durations and 0xFFFFFFFF from about 18.2 hours on.
    public var ntpShortFormat: UInt32 {
        let nanoseconds = self.nanoseconds
        guard nanoseconds > 0 else { return 0 }
        let seconds = nanoseconds / 1_000_000_000, remainder = nanoseconds % 1_000_000_000
        guard seconds < 65536 else { return .max }
        return UInt32(truncatingIfNeeded: seconds << 16 | remainder * 65536 / 1_000_000_000)
    }
}
