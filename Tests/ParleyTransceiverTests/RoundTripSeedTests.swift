import ParleyMedia
import ParleySCTP
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// WARP's RTO sync (draft-uberti-tsvwg-warp): the round trip Parley's own ICE checks measure seeds
/// SCTP's (and DTLS's) retransmission timers, so a first event lost on the way is sent again after
/// about three round trips (200 ms at least) rather than after SCTP's fixed first second. Karn's
/// rule: an answer to a retransmitted check measures nothing.
@Suite struct RoundTripSeedTests {
    /// A WARP call whose every leg takes `oneWay`: the session's check goes out, the answer comes
    /// back one round trip later.
    static func connect(_ call: SPEDTests.Call, oneWay: Duration) {
        for _ in 0..<10 where !call.client.isDataChannelOpen {
            call.roundTrip()
            call.now = call.now + oneWay * 2
        }
    }

    @Test func theICERoundTripSeedsSCTPsRetransmissionTimer() throws {
        let call = try SPEDTests.Call(sped: true)
        Self.connect(call, oneWay: .milliseconds(50))
        #expect(call.client.isDataChannelOpen)
        #expect(call.session.counters.iceRoundTripTime == .milliseconds(100))
        // The session's first event on oai-events is lost: SCTP sends it again after 3 × 100 ms (RFC
        // 9260's first RTO from one sample: RTT + 4 × RTT/2), not after a second.
        let id = try #require(call.client.negotiatedChannelID)
        #expect(call.session.sendDataChannelMessage(Array("{}".utf8), binary: false, channel: id, now: call.now))
        _ = call.session.takeTransmits()
        let wake = try #require(call.session.nextWakeup)
        #expect(wake - call.now == .milliseconds(300), "\(wake - call.now)")

        // Without a measured round trip (the same call, its round trip never sampled), a second.
        let unseeded = try SPEDTests.Call(sped: true)
        unseeded.roundTripsToOpenChannel().map { _ in () }
        #expect(unseeded.session.counters.iceRoundTripTime == .zero, "delivered at once: a zero round trip is no sample")
        #expect(unseeded.session.sendDataChannelMessage(Array("{}".utf8), binary: false, channel: id, now: unseeded.now))
        _ = unseeded.session.takeTransmits()
        #expect(try #require(unseeded.session.nextWakeup) - unseeded.now == .seconds(1))
    }

    /// The session's validation check is lost once and sent again with the same transaction: its
    /// answer cannot tell which sending it answers, so it seeds nothing.
    @Test func anAnswerToARetransmittedCheckMeasuresNothing() throws {
        let call = try SPEDTests.Call(sped: false)
        for datagram in call.client.takeTransmits() {
            datagram.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) }
        }
        let first = call.session.takeTransmits()
        let check = try #require(first.first { (try? STUNMessage.parse($0.bytes))?.type == .bindingRequest })
        call.now = call.now + .milliseconds(500)
        call.session.handleTimeout(now: call.now)  // the validation check again, same transaction
        let again = call.session.takeTransmits().filter { (try? STUNMessage.parse($0.bytes))?.type == .bindingRequest }
        #expect(again.map { try? STUNMessage.parse($0.bytes).transactionID } == [try STUNMessage.parse(check.bytes).transactionID])
        call.now = call.now + .milliseconds(40)
        for transmit in again { transmit.bytes.withUnsafeBytes { call.client.receive($0, from: call.client.serverAddress, now: call.now) } }
        for datagram in call.client.takeTransmits() {
            datagram.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) }
        }
        #expect(call.session.counters.checkResponses == 1)
        #expect(call.session.counters.iceRoundTripTime == nil)
    }
}
