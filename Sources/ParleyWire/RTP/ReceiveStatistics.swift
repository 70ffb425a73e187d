/// What a receiver tracks about one incoming RTP stream to fill its report blocks: sequence
/// extension and loss (RFC 3550 A.1, A.3) and interarrival jitter (A.8).
public struct RTPReceiveStatistics: Sendable {
    public let clockRate: UInt32
    public private(set) var ssrc: UInt32?
    public private(set) var packetsReceived: UInt64 = 0
    private var baseSequence: UInt32 = 0
    private var highestSequence: UInt16 = 0
    private var cycles: UInt32 = 0
    private var jitter: Double = 0
    private var lastTransit: Int64?
    private var expectedAtLastReport: UInt32 = 0
    private var receivedAtLastReport: UInt64 = 0

    public init(clockRate: UInt32) { self.clockRate = clockRate }

    public var extendedHighestSequence: UInt32 { cycles + UInt32(highestSequence) }

    public var expected: UInt32 { packetsReceived == 0 ? 0 : extendedHighestSequence &- baseSequence &+ 1 }

    public var cumulativeLost: Int32 { Int32(clamping: Int64(expected) - Int64(packetsReceived)) }

    /// Interarrival jitter in timestamp units.
    public var jitterInTimestampUnits: UInt32 { UInt32(jitter) }

    /// Records a packet that arrived at `arrival` (any monotonic clock, in seconds) with its header.
    public mutating func record(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, arrival: Duration) {
        if self.ssrc != ssrc {
            self = RTPReceiveStatistics(clockRate: clockRate)
            self.ssrc = ssrc
            baseSequence = UInt32(sequence)
            highestSequence = sequence
        } else {
            let delta = sequence &- highestSequence
            if delta != 0, delta < 0x8000 {
                if sequence < highestSequence { cycles &+= 0x1_0000 }
                highestSequence = sequence
            }
        }
        packetsReceived += 1
        let (seconds, attoseconds) = arrival.components
        let arrivalUnits = Int64(seconds) * Int64(clockRate) + Int64(Double(attoseconds) * 1e-18 * Double(clockRate))
        let transit = arrivalUnits - Int64(timestamp)
        if let lastTransit {
            let difference = Double(abs(transit - lastTransit))
            jitter += (difference - jitter) / 16
        }
        lastTransit = transit
    }

    /// A report block for this stream; advances the "since last report" counters.
    public mutating func makeReportBlock(lastSenderReport: UInt32, delaySinceLastSenderReport: UInt32) -> RTCPReportBlock? {
        guard let ssrc else { return nil }
        let expectedInterval = expected &- expectedAtLastReport
        let receivedInterval = packetsReceived - receivedAtLastReport
        expectedAtLastReport = expected
        receivedAtLastReport = packetsReceived
        let lostInterval = Int64(expectedInterval) - Int64(receivedInterval)
        let fraction = expectedInterval == 0 || lostInterval <= 0 ? 0 : UInt8(min(255, (lostInterval << 8) / Int64(expectedInterval)))
        return RTCPReportBlock(
            ssrc: ssrc, fractionLost: fraction, cumulativeLost: cumulativeLost,
            extendedHighestSequence: extendedHighestSequence, jitter: jitterInTimestampUnits,
            lastSenderReport: lastSenderReport, delaySinceLastSenderReport: delaySinceLastSenderReport)
    }
}
