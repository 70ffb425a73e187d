import ParleyClient
import ParleyMedia
import ParleyWire
import Testing
@testable import ParleyTransceiver

/// The load generator's client against the session core, in memory: it connects, sends audio and
/// gets its frames back through the echo agent.
@Suite struct ClientSessionTests {
    @Test func loadClientCompletesAnEchoCall() throws {
        let client = ClientSession(dtlsContext: SessionTests.context(SessionTests.clientCertificate))
        let serverContext = SessionTests.context(SessionTests.serverCertificate)
        let offer = try SessionDescription(parsing: client.offer)
        let negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
            iceUfrag: "serverufrag", icePassword: "serverpassword1234567890", fingerprint: serverContext.certificate.fingerprint,
            candidates: [ICECandidate(foundation: "1", priority: 1, address: "127.0.0.1", port: 3478)],
            sessionID: 1, audioSSRC: 42, cname: "parley"))
        var now = Instant(nanoseconds: 5_000_000_000)
        let session = try WebRTCSession(
            parameters: SessionParameters(id: "c", localUfrag: "serverufrag", localPassword: "serverpassword1234567890",
                                          negotiated: negotiated, localAudioSSRC: 42, cname: "parley"),
            dtlsContext: serverContext, now: now)
        let echo = EchoAgent()
        let path = PeerPath(client: .v4(IPv4Address(127, 0, 0, 1), port: 40000))
        try client.accept(answer: negotiated.answer.text, now: now)
        #expect(client.serverAddress == .v4(IPv4Address(127, 0, 0, 1), port: 3478))

        var echoed: [[UInt8]] = []
        func exchange() {
            for _ in 0..<10 {
                let toServer = client.takeTransmits()
                for datagram in toServer { datagram.withUnsafeBytes { session.receive($0, from: path, now: now) } }
                for event in session.takeEvents() { echo.handle(event, session: session, now: now) }
                let toClient = session.takeTransmits()
                for transmit in toClient { transmit.bytes.withUnsafeBytes { client.receive($0, now: now) } }
                for case .audio(_, _, let payload) in client.takeEvents() { echoed.append(payload) }
                if toServer.isEmpty && toClient.isEmpty { return }
            }
        }
        exchange()
        #expect(client.isICEConnected)
        #expect(client.isConnected)
        #expect(session.state == .connected)
        for frame in 0..<20 {
            #expect(client.sendAudio([UInt8(frame), 1, 2, 3], timestamp: UInt32(frame) * 960))
            exchange()
            now = now + .milliseconds(20)
        }
        #expect(echoed.count == 20)
        #expect(echoed.first == [0, 1, 2, 3])

        // Consent checks keep coming every 2.5 s.
        now = now + .seconds(3)
        client.handleTimeout(now: now)
        let checks = client.takeTransmits()
        #expect(checks.count == 1)
        #expect(checks.first.map { PacketKind.classify($0) } == .stun)
    }
}
