import ParleyTestSupport
import Testing
@testable import ParleyWire

/// Values a hostile sender controls must never trap the arithmetic that reads them: RTP sequence
/// numbers and timestamps, and the times derived from reports.
@Suite struct HostileArithmeticTests {
    /// The crash that started issue 11: timestamps alternating 0 and 0xFFFFFFFF made the jitter
    /// estimate grow past 2^32 and `UInt32(jitter)` trap. Modulo 2^32 (RFC 3550 A.8) the two are
    /// one tick apart.
    @Test func alternatingExtremeTimestampsGiveATinyJitter() {
        var stream = RTPReceiveStatistics(clockRate: 48000)
        for index in 0..<10_000 {
            stream.record(sequence: UInt16(truncatingIfNeeded: index), timestamp: index.isMultiple(of: 2) ? 0 : 0xFFFF_FFFF,
                          ssrc: 7, arrival: .milliseconds(20 * Int64(index)))
            if index % 50 == 0 { _ = stream.makeReportBlock(lastSenderReport: 0, delaySinceLastSenderReport: 0) }
        }
        // Each transit differs from the last by 960 ± 1 ticks (20 ms at 48 kHz, timestamps ±1).
        let block = stream.makeReportBlock(lastSenderReport: 0, delaySinceLastSenderReport: 0)
        #expect(block?.jitter ?? .max <= 962)
        #expect(block?.cumulativeLost == 0)
        #expect(block?.fractionLost == 0)
    }

    @Test func randomTimestampsSequencesAndArrivalsKeepReportsInRange() {
        var generator = SplitMix64(seed: 11)
        var stream = RTPReceiveStatistics(clockRate: 48000)
        for _ in 0..<50_000 {
            stream.record(sequence: UInt16(truncatingIfNeeded: generator.next()), timestamp: UInt32(truncatingIfNeeded: generator.next()),
                          ssrc: 1, arrival: .nanoseconds(Int64(bitPattern: generator.next())))
            if generator.next() % 64 == 0 {
                let block = stream.makeReportBlock(lastSenderReport: 1, delaySinceLastSenderReport: 2)
                // The jitter estimate is a mean of 32-bit wrapped differences: at most 2^31.
                #expect((block?.jitter ?? 0) <= 0x8000_0000)
            }
        }
    }

    /// RFC 3550 A.1: one packet far ahead does not move the extended sequence number; two in a row
    /// mean the sender restarted, and the statistics start over from there.
    @Test func aJumpIsBelievedOnlyWhenTheNextPacketFollowsIt() {
        var stream = RTPReceiveStatistics(clockRate: 48000)
        for sequence in UInt16(100)..<110 { stream.record(sequence: sequence, timestamp: 0, ssrc: 1, arrival: .zero) }
        stream.record(sequence: 40_000, timestamp: 0, ssrc: 1, arrival: .zero)
        #expect(stream.extendedHighestSequence == 109, "a stray packet far ahead is not counted")
        #expect(stream.packetsReceived == 10)
        stream.record(sequence: 110, timestamp: 0, ssrc: 1, arrival: .zero)
        #expect(stream.cumulativeLost == 0)
        stream.record(sequence: 40_000, timestamp: 0, ssrc: 1, arrival: .zero)
        stream.record(sequence: 40_001, timestamp: 0, ssrc: 1, arrival: .zero)
        #expect(stream.extendedHighestSequence == 40_001, "confirmed by the next packet: the sender restarted")
        #expect(stream.packetsReceived == 1, "counted from the restart")
        #expect(stream.cumulativeLost == 0)
    }

    /// DLSR (RFC 3550 §6.4.1) in 1/65536 s, saturating: the multiply that trapped 39 hours after a
    /// client's last sender report.
    @Test func delaySinceLastSenderReportSaturates() {
        #expect(Duration.milliseconds(1500).ntpShortFormat == 98_304)
        #expect(Duration.seconds(-5).ntpShortFormat == 0)
        #expect(Duration.seconds(65535).ntpShortFormat == 65535 << 16)
        #expect(Duration.seconds(39 * 3600).ntpShortFormat == .max)
        #expect(Duration.seconds(Int64.max).ntpShortFormat == .max)
    }

    @Test func durationsOnAnRTPClockWrapModulo32Bits() {
        #expect(Duration.milliseconds(20).rtpTicks(clockRate: 48000) == 960)
        #expect(Duration.seconds(89_479).rtpTicks(clockRate: 48000) == UInt32(truncatingIfNeeded: Int64(89_479) * 48000))
        #expect(Duration.seconds(Int64.max).rtpTicks(clockRate: 48000) == UInt32(truncatingIfNeeded: Int64.max / 1_000_000_000 &* 48000
            &+ (Int64.max % 1_000_000_000) * 48000 / 1_000_000_000))
        #expect(Duration.nanoseconds(-20_000_000).rtpTicks(clockRate: 48000) == 0 &- 960)
    }

    @Test func saturatingConversionsFromDouble() {
        #expect(Int(saturating: Double.nan) == 0)
        #expect(Int(saturating: Double.infinity) == .max)
        #expect(Int(saturating: -Double.infinity) == .min)
        #expect(Int(saturating: 9.3e18) == .max)
        #expect(Int16(saturating: 40_000.5) == .max)
        #expect(UInt8(saturating: -3) == 0)
        #expect(Int32(saturating: -7.9) == -7)
    }
}

@Suite struct TokenBucketTests {
    @Test func aBurstThenOnePerInterval() {
        let start = Instant(nanoseconds: 5_000_000_000)
        var bucket = TokenBucket(capacity: 3, refillInterval: .milliseconds(100), now: start)
        let burst = (0..<5).map { _ in bucket.take(now: start) }
        #expect(burst == [true, true, true, false, false])
        #expect(bucket.nextToken(now: start) == start + .milliseconds(100))
        let steps = [99, 100, 150, 250].map { bucket.take(now: start + .milliseconds($0)) }
        #expect(steps == [false, true, false, true], "one per 100 ms, the partial interval carried over")
        // A long pause refills to the capacity, not beyond.
        let later = start + .seconds(3600)
        let refilled = (0..<5).map { _ in bucket.take(now: later) }
        #expect(refilled == [true, true, true, false, false])
        // A clock that goes backwards (it should not) takes nothing extra.
        let backwards = bucket.take(now: start)
        #expect(!backwards)
    }
}
