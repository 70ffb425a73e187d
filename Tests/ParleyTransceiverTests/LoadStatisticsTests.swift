import ParleyWire
import Testing
@testable import ParleyClient

/// The load generator's receive-side figures (RTPReceiveStatistics, as it uses them): loss from
/// sequence gaps across the 16-bit wrap, RFC 3550 jitter, and the send time an echoed event carries.
@Suite struct LoadStatisticsTests {
    @Test func lossCountsGapsAcrossTheSequenceWrapAndIgnoresReordering() {
        var stream = RTPReceiveStatistics(clockRate: 48000)
        let sequence: [UInt16] = [65530, 65531, 65533, 65532, 65534, 65535, 0, 1, 3, 4]  // 2 lost, 65532 late
        for (index, number) in sequence.enumerated() {
            stream.record(sequence: number, timestamp: UInt32(index) * 960, ssrc: 1,
                          arrival: .nanoseconds(Int64(index) * 20_000_000))
        }
        #expect(stream.packetsReceived == 10)
        #expect(stream.cumulativeLost == 1)
    }

    @Test func jitterIsZeroForASteadyStreamAndFollowsRFC3550ForAnUnevenOne() {
        var steady = RTPReceiveStatistics(clockRate: 48000)
        for index in 0..<100 {
            steady.record(sequence: UInt16(index), timestamp: 5000 + UInt32(index) * 960, ssrc: 1,
                          arrival: .nanoseconds(7_000_000_000 + Int64(index) * 20_000_000))
        }
        #expect(steady.jitterInTimestampUnits == 0)

        // Every other packet 1 ms late: each transit differs from the last by 1 ms, and the
        // estimate J += (|D| - J) / 16 converges to 1 ms.
        var uneven = RTPReceiveStatistics(clockRate: 48000)
        for index in 0..<400 {
            let late: Int64 = index.isMultiple(of: 2) ? 0 : 1_000_000
            uneven.record(sequence: UInt16(index), timestamp: UInt32(index) * 960, ssrc: 1,
                          arrival: .nanoseconds(Int64(index) * 20_000_000 + late))
        }
        #expect(abs(Double(uneven.jitterInTimestampUnits) / 48 - 1.0) < 0.05, "48 units of the 48 kHz clock")
        #expect(uneven.cumulativeLost == 0)
    }

    @Test func sendTimeIsReadBackFromAnEchoedEvent() {
        #expect(LoadGenerator.sentNanoseconds(inEvent: Array(#"{"type":"parley.load.ping","sent_ns":987654321}"#.utf8)) == 987_654_321)
        #expect(LoadGenerator.sentNanoseconds(inEvent: Array(#"{"type":"other"}"#.utf8)) == nil)
        #expect(LoadGenerator.sentNanoseconds(inEvent: Array(#"{"sent_ns":}"#.utf8)) == nil)
    }
}
