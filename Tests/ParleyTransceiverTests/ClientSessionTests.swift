import ParleyClient
import ParleyMedia
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// The load generator's client against the session core, in memory: it connects, sends audio and
/// gets its frames back through the echo agent.
@Suite struct ClientSessionTests {
    /// Carries datagrams both ways (the server's events through the echo agent) until quiet, at
    /// most ten rounds; returns the client's events.
    static func exchange(_ client: ClientSession, _ session: WebRTCSession, echo: EchoAgent, path: PeerPath,
                         now: Instant) -> [ClientSession.Event] {
        var events: [ClientSession.Event] = []
        for _ in 0..<10 {
            let toServer = client.takeTransmits()
            for datagram in toServer { datagram.withUnsafeBytes { session.receive($0, from: path, now: now) } }
            for event in session.takeEvents() { echo.handle(event, session: session, now: now) }
            let toClient = session.takeTransmits()
            for transmit in toClient { transmit.bytes.withUnsafeBytes { client.receive($0, from: client.serverAddress, now: now) } }
            events += client.takeEvents()
            if toServer.isEmpty && toClient.isEmpty { break }
        }
        return events
    }

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
        var clientEvents: [ClientSession.Event] = []
        func exchange() {
            for event in Self.exchange(client, session, echo: echo, path: path, now: now) {
                if case .audio(_, _, let payload) = event { echoed.append(payload) } else { clientEvents.append(event) }
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

        // The client opened oai-events once SCTP was up; the echo agent returns its messages.
        #expect(clientEvents.contains(.dataChannelOpen(label: "oai-events")))
        #expect(client.isDataChannelOpen)
        let event = Array(#"{"type":"parley.load.ping","sent_ns":12345}"#.utf8)
        #expect(client.sendDataChannelMessage(event, binary: false, now: now))
        exchange()
        #expect(clientEvents.contains(.dataChannelMessage(label: "oai-events", binary: false, payload: event)))

        // Consent checks keep coming every 2.5 s.
        now = now + .seconds(3)
        client.handleTimeout(now: now)
        let checks = client.takeTransmits()
        #expect(checks.count == 1)
        #expect(checks.first.map { PacketKind.classify($0) } == .stun)
    }

    /// `parley load --warp` against the session core: the offer carries the client's INIT, the
    /// answer Parley's, `oai-events` is negotiated on stream 0 — both ends start SCTP with DTLS,
    /// neither sends an INIT (the other would count it as unexpected) nor a DCEP OPEN, and the
    /// channel echoes.
    @Test func aWarpClientNeedsNoSCTPOrDCEPHandshake() throws {
        let client = ClientSession(dtlsContext: SessionTests.context(SessionTests.clientCertificate), warp: true)
        #expect(client.offer.contains("a=sctp-init:") && client.negotiatedChannelID == 0)
        let serverContext = SessionTests.context(SessionTests.serverCertificate)
        var generator = SystemRandomNumberGenerator()
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: client.offer), parameters: AnswerParameters(
            iceUfrag: "serverufrag", icePassword: "serverpassword1234567890", fingerprint: serverContext.certificate.fingerprint,
            candidates: [ICECandidate(foundation: "1", priority: 1, address: "127.0.0.1", port: 3478)],
            sessionID: 1, audioSSRC: 42, cname: "parley", sctpInit: SNAPInits.draw(using: &generator)))
        var parameters = SessionParameters(id: "c", localUfrag: "serverufrag", localPassword: "serverpassword1234567890",
                                           negotiated: negotiated, localAudioSSRC: 42, cname: "parley")
        parameters.snap = try SNAPInits(local: try #require(negotiated.localSCTPInit), remote: try #require(negotiated.remoteSCTPInit))
        parameters.negotiatedEventsChannel = client.negotiatedChannelID
        let now = Instant(nanoseconds: 5_000_000_000)
        let session = try WebRTCSession(parameters: parameters, dtlsContext: serverContext, now: now)
        let echo = EchoAgent()
        let path = PeerPath(client: .v4(IPv4Address(127, 0, 0, 1), port: 40000))
        try client.accept(answer: negotiated.answer.text, now: now)
        #expect(client.answeredSNAP)

        var clientEvents: [ClientSession.Event] = []
        func exchange() { clientEvents += Self.exchange(client, session, echo: echo, path: path, now: now) }
        exchange()
        #expect(session.state == .connected && client.isConnected)
        #expect(session.counters.dataChannelStart == "snap")
        #expect(clientEvents.contains(.dataChannelOpen(label: "oai-events")) && client.isDataChannelOpen)
        let event = Array(#"{"type":"hello"}"#.utf8)
        #expect(client.sendDataChannelMessage(event, binary: false, now: now))
        exchange()
        #expect(clientEvents.contains(.dataChannelMessage(label: "oai-events", binary: false, payload: event)))
        #expect(session.counters.dataChannelDrops.isEmpty, "\(session.counters.dataChannelDrops)")
    }

    /// Full-ICE servers (Pion) check the client too and nominate only once answered: the client
    /// answers a check with the right USERNAME and its own password's integrity, and nothing else.
    @Test func clientAnswersTheServersChecksAndOnlyValidOnes() throws {
        let client = ClientSession(dtlsContext: SessionTests.context(SessionTests.clientCertificate), dataChannelLabel: nil)
        #expect(!client.offer.contains("m=application"))
        let serverContext = SessionTests.context(SessionTests.serverCertificate)
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: client.offer), parameters: AnswerParameters(
            iceUfrag: "serverufrag", icePassword: "serverpassword1234567890", fingerprint: serverContext.certificate.fingerprint,
            candidates: [ICECandidate(foundation: "1", priority: 1, address: "127.0.0.1", port: 3478)],
            sessionID: 1, audioSSRC: 42, cname: "parley"))
        let now = Instant(nanoseconds: 1_000_000_000)
        try client.accept(answer: negotiated.answer.text, now: now)
        _ = client.takeTransmits()
        let server = TransportAddress.v4(IPv4Address(127, 0, 0, 1), port: 3478)

        func check(username: String, password: String) throws -> [UInt8] {
            try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 2, 3)) { writer throws(STUNBuildError) in
                try writer.appendUsername(username)
                try writer.appendICEControlled(tieBreaker: 7)
                try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: password))
                try writer.appendFingerprint()
            }
        }
        let good = try check(username: "\(client.ufrag):serverufrag", password: client.password)
        // The same check from anywhere but the server's address is not the call's: no answer.
        good.withUnsafeBytes { client.receive($0, from: .v4(IPv4Address(10, 0, 0, 9), port: 3478), now: now) }
        #expect(client.takeTransmits().isEmpty)
        good.withUnsafeBytes { client.receive($0, from: server, now: now) }
        let answers = client.takeTransmits()
        #expect(answers.count == 1)
        let response = try #require(answers.first)
        try response.withUnsafeBytes { bytes in
            let message = try STUNMessage.parse(bytes)
            #expect(message.type == .bindingSuccess)
            #expect(message.transactionID == STUNTransactionID(1, 2, 3))
            #expect(message.xorMappedAddress == server)
            #expect(message.hasValidMessageIntegrity(in: bytes, key: STUNIntegrityKey(shortTermPassword: client.password)))
        }
        #expect(client.checksAnswered == 1)

        for forged in [try check(username: "\(client.ufrag):serverufrag", password: "not-the-password-at-all"),
                       try check(username: "someoneelse:serverufrag", password: client.password)] {
            forged.withUnsafeBytes { client.receive($0, from: server, now: now) }
        }
        // Without a source address there is nothing to put in XOR-MAPPED-ADDRESS: no answer.
        good.withUnsafeBytes { client.receive($0, now: now) }
        #expect(client.takeTransmits().isEmpty)
        #expect(client.checksAnswered == 1)
    }
}
