import ParleyWire
import Testing
@testable import ParleyClient

/// The load generator's receive-side figures: loss from sequence gaps across the 16-bit wrap,
/// RFC 3550 jitter, and the send time an echoed event carries.
@Suite struct LoadStatisticsTests {
    @Test func lossCountsGapsAcrossTheSequenceWrapAndIgnoresReordering() {
        var stream = EchoStreamStatistics()
        let sequence: [UInt16] = [65530, 65531, 65533, 65532, 65534, 65535, 0, 1, 3, 4]  // 2 lost, 65532 late
        for (index, number) in sequence.enumerated() {
            stream.record(sequenceNumber: number, timestamp: UInt32(index) * 960,
                          arrival: Instant(nanoseconds: Int64(index) * 20_000_000))
        }
        #expect(stream.received == 10)
        #expect(stream.lost == 1)
    }

    @Test func jitterIsZeroForASteadyStreamAndFollowsRFC3550ForAnUnevenOne() {
        var steady = EchoStreamStatistics()
        for index in 0..<100 {
            steady.record(sequenceNumber: UInt16(index), timestamp: 5000 + UInt32(index) * 960,
                          arrival: Instant(nanoseconds: 7_000_000_000 + Int64(index) * 20_000_000))
        }
        #expect(steady.jitterMilliseconds == 0)

        // Every other packet 1 ms late: each transit differs from the last by 1 ms, and the
        // estimate J += (|D| - J) / 16 converges to 1 ms.
        var uneven = EchoStreamStatistics()
        for index in 0..<400 {
            let late: Int64 = index.isMultiple(of: 2) ? 0 : 1_000_000
            uneven.record(sequenceNumber: UInt16(index), timestamp: UInt32(index) * 960,
                          arrival: Instant(nanoseconds: Int64(index) * 20_000_000 + late))
        }
        #expect(abs(uneven.jitterMilliseconds - 1.0) < 0.05)
        #expect(uneven.lost == 0)
    }

    @Test func sendTimeIsReadBackFromAnEchoedEvent() {
        #expect(LoadGenerator.sentNanoseconds(inEvent: Array(#"{"type":"parley.load.ping","sent_ns":987654321}"#.utf8)) == 987_654_321)
        #expect(LoadGenerator.sentNanoseconds(inEvent: Array(#"{"type":"other"}"#.utf8)) == nil)
        #expect(LoadGenerator.sentNanoseconds(inEvent: Array(#"{"sent_ns":}"#.utf8)) == nil)
    }
}
