/// What a receiver tracks about one incoming RTP stream to fill its report blocks: sequence
/// extension and loss (RFC 3550 A.1, A.3) and interarrival jitter (A.8).
///
/// Every value here comes from the sender, who may be hostile: sequence numbers and timestamps are
/// compared modulo 2^16 and 2^32 as the RFC does, and nothing can overflow or trap whatever they
/// are (a sender alternating timestamps 0 and 0xFFFFFFFF sees a jitter of 1, not of 2^32).
public struct RTPReceiveStatistics: Sendable {
    public let clockRate: UInt32
    public private(set) var ssrc: UInt32?
    public private(set) var packetsReceived: UInt64 = 0
    private var baseSequence: UInt32 = 0
    private var highestSequence: UInt16 = 0
    private var cycles: UInt32 = 0
    /// A.1's `bad_seq`: after a jump too large to be loss, the sequence number that would confirm it
    /// (the sender restarted), so one stray packet cannot move the extended sequence.
    private var resyncSequence: UInt32?
    /// Jitter scaled by 16, as in A.8 (integer arithmetic, no rounding drift). Bounded by 16 · 2^31.
    private var scaledJitter: UInt64 = 0
    private var lastTransit: UInt32?
    private var expectedAtLastReport: UInt32 = 0
    private var receivedAtLastReport: UInt64 = 0

    /// A.1's limits: a forward jump below `maximumDropout` is loss; within `maximumMisorder` behind
    /// the highest, a late or duplicate packet; anything else starts a resynchronisation.
    static let maximumDropout: UInt16 = 3000
    static let maximumMisorder: UInt16 = 100

    public init(clockRate: UInt32) { self.clockRate = clockRate }

    public var extendedHighestSequence: UInt32 { cycles &+ UInt32(highestSequence) }

    /// Packets expected so far (A.3), modulo 2^32 like the extended sequence numbers it comes from.
    public var expected: UInt32 { packetsReceived == 0 ? 0 : extendedHighestSequence &- baseSequence &+ 1 }

    /// Expected minus received; negative with duplicates. Clamped (the report block keeps 24 bits of it).
    public var cumulativeLost: Int32 {
        Int32(clamping: Int64(expected) - Int64(clamping: packetsReceived))
    }

    /// Interarrival jitter in timestamp units.
    public var jitterInTimestampUnits: UInt32 { UInt32(clamping: scaledJitter >> 4) }

    /// Records a packet that arrived at `arrival` (any monotonic clock) with its header.
    public mutating func record(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, arrival: Duration) {
        if self.ssrc != ssrc {
            self = RTPReceiveStatistics(clockRate: clockRate)
            self.ssrc = ssrc
            restart(at: sequence)
        } else if !updateSequence(sequence) {
            return
        }
        packetsReceived &+= 1
        // A.8: transit times in timestamp units; only their differences matter, taken modulo 2^32.
        let transit = arrival.rtpTicks(clockRate: clockRate) &- timestamp
        if let lastTransit {
            let difference = UInt64(Int32(bitPattern: transit &- lastTransit).magnitude)
            scaledJitter = scaledJitter + difference - ((scaledJitter + 8) >> 4)
        }
        lastTransit = transit
    }

    /// A.1's `update_seq`: false when the packet should not count (a jump not yet confirmed).
    private mutating func updateSequence(_ sequence: UInt16) -> Bool {
        let delta = sequence &- highestSequence
        if delta < Self.maximumDropout {
            // In order, possibly with a gap.
            if sequence < highestSequence { cycles &+= 0x1_0000 }
            highestSequence = sequence
        } else if delta <= UInt16.max - Self.maximumMisorder {
            // A large jump: believe it only when the next packet follows it (the sender restarted).
            if resyncSequence == UInt32(sequence) {
                restart(at: sequence)
            } else {
                resyncSequence = UInt32(sequence &+ 1)
                return false
            }
        }
        // Otherwise a duplicate or a reordered packet: it counts, the highest stays.
        return true
    }

    private mutating func restart(at sequence: UInt16) {
        baseSequence = UInt32(sequence)
        highestSequence = sequence
        cycles = 0
        resyncSequence = nil
        packetsReceived = 0
        expectedAtLastReport = 0
        receivedAtLastReport = 0
    }

    /// A report block for this stream; advances the "since last report" counters.
    public mutating func makeReportBlock(lastSenderReport: UInt32, delaySinceLastSenderReport: UInt32) -> RTCPReportBlock? {
        guard let ssrc else { return nil }
        // A.3: the fraction lost over the interval; duplicates can make it negative, which reports 0.
        let expectedInterval = Int64(expected &- expectedAtLastReport)
        let receivedInterval = Int64(clamping: packetsReceived &- receivedAtLastReport)
        expectedAtLastReport = expected
        receivedAtLastReport = packetsReceived
        let lostInterval = expectedInterval - receivedInterval
        let fraction = expectedInterval == 0 || lostInterval <= 0
            ? 0 : UInt8(clamping: (lostInterval << 8) / expectedInterval)
        return RTCPReportBlock(
            ssrc: ssrc, fractionLost: fraction, cumulativeLost: cumulativeLost,
            extendedHighestSequence: extendedHighestSequence, jitter: jitterInTimestampUnits,
            lastSenderReport: lastSenderReport, delaySinceLastSenderReport: delaySinceLastSenderReport)
    }
}
