import Foundation
import ParleyDTLSLibrary
import ParleyMedia
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// Whole calls between the session core and a client made of the same pieces, in memory, on a
/// virtual clock: ICE, DTLS-SRTP, echo, RTCP, lost flights, path changes, consent.
@Suite struct SessionTests {
    static let serverCertificate = try! DTLSCertificate(commonName: "parley")
    static let clientCertificate = try! DTLSCertificate(commonName: "client")

    /// A DTLS context on the library production uses (BoringSSL: DTLS 1.3 between these ends).
    static func context(_ certificate: DTLSCertificate, retransmit: Duration = .milliseconds(400),
                        library: DTLSLibrary = .boringssl) -> any DTLSContext {
        var configuration = DTLSConfiguration()
        configuration.initialRetransmitDelay = retransmit
        return try! library.makeContext(certificate: certificate, configuration: configuration)
    }

    /// Client, session and the network between them.
    final class Call {
        let client: TestClient
        let session: WebRTCSession
        let echo = EchoAgent()
        /// When set, events go to this bridge (and its agent) instead of the echo agent.
        var bridge: AgentBridge?
        var now = Instant(nanoseconds: 1_000_000_000)
        var events: [SessionEvent] = []
        /// Return true to lose a datagram (fromClient, bytes).
        var lose: (Bool, [UInt8]) -> Bool = { _, _ in false }
        var serverDatagramsTo: [TransportAddress] = []
        /// What the session sent to addresses other than the client's (a spoofing victim's, say).
        var sentElsewhere: [TransportAddress: [[UInt8]]] = [:]

        init(serverContext: any DTLSContext = SessionTests.context(SessionTests.serverCertificate),
             clientContext: any DTLSContext = SessionTests.context(SessionTests.clientCertificate),
             tamperOffer: (String) -> String = { $0 }, configure: (inout SessionParameters) -> Void = { _ in }) throws {
            client = TestClient(address: .v4(IPv4Address(192, 0, 2, 10), port: 50000), certificate: SessionTests.clientCertificate)
            let offer = try SessionDescription(parsing: tamperOffer(client.offer))
            let keyring = RoutingKeyring(current: RoutingKey(id: 1, secret: (0..<32).map { UInt8($0) }))
            let ufrag = keyring.seal(RoutingToken(keyID: 1, clusterID: 1, worker: .v4(IPv4Address(127, 0, 0, 1), port: 3478), issuedHour: 1, nonce: 7))
            let negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
                iceUfrag: ufrag, icePassword: "serverpassword1234567890", fingerprint: serverContext.certificate.fingerprint,
                candidates: [ICECandidate(foundation: "1", priority: 2_130_706_431, address: "127.0.0.1", port: 3478)],
                sessionID: 1, audioSSRC: 0xABCD_0001, cname: "parley"))
            var parameters = SessionParameters(id: "call-1", localUfrag: ufrag, localPassword: "serverpassword1234567890",
                                               negotiated: negotiated, localAudioSSRC: 0xABCD_0001, cname: "parley")
            parameters.ntpAtInstantZero = 0xE000_0000 << 32
            configure(&parameters)
            session = try WebRTCSession(parameters: parameters, dtlsContext: serverContext, now: now)
            client.clock = now
            try client.accept(answer: negotiated.answer, context: clientContext)
        }

        /// Delivers datagrams both ways until both sides are quiet.
        func deliver(fromClient initial: [[UInt8]]) {
            client.clock = now
            var toServer = initial
            repeat {
                for datagram in toServer where !lose(true, datagram) {
                    datagram.withUnsafeBytes { session.receive($0, from: PeerPath(client: client.address), now: now) }
                }
                toServer = []
                collectEvents()
                for transmit in session.takeTransmits() {
                    serverDatagramsTo.append(transmit.path.client)
                    if transmit.path.client != client.address { sentElsewhere[transmit.path.client, default: []].append(transmit.bytes) }
                    guard transmit.path.client == client.address, !lose(false, transmit.bytes) else { continue }
                    toServer += client.receive(transmit.bytes)
                }
            } while !toServer.isEmpty
        }

        func collectEvents() {
            var pending = session.takeEvents()
            while !pending.isEmpty {
                for event in pending {
                    events.append(event)
                    if let bridge { bridge.handle(event, now: now) } else { echo.handle(event, session: session, now: now) }
                }
                pending = session.takeEvents()
            }
        }

        /// Advances the virtual clock to `instant`, running the session's timers on the way.
        func advance(to instant: Instant) {
            var rounds = 0
            while let wake = [session.nextWakeup, bridge?.nextWakeup].compactMap({ $0 }).min(), wake <= instant {
                rounds += 1
                // A timer that its handler does not move would spin here: fail instead of hanging.
                guard rounds <= 100_000 else {
                    Issue.record("a wake-up at \(wake) that handleTimeout does not move")
                    break
                }
                now = max(now, wake)
                if let due = session.nextWakeup, due <= now { session.handleTimeout(now: now) }
                if let bridge, let due = bridge.nextWakeup, due <= now { bridge.tick(now: now) }
                deliver(fromClient: [])
            }
            now = instant
        }

        func advance(by duration: Duration) { advance(to: now + duration) }

        /// Delivers a datagram as if it came from `source` (a spoofed source address, say); the
        /// session's answers go wherever it sends them (recorded in `sentElsewhere`, not delivered).
        func inject(_ datagram: [UInt8], from source: TransportAddress) {
            datagram.withUnsafeBytes { session.receive($0, from: PeerPath(client: source), now: now) }
            deliver(fromClient: [])
        }

        func connect() {
            deliver(fromClient: [client.check(useCandidate: true)])
            deliver(fromClient: client.startDTLS())
        }
    }

    @Test func fullCallEchoesAudioAndReportsRTT() throws {
        let call = try Call()
        call.connect()
        #expect(call.client.successResponses.count == 1)
        #expect(call.client.mappedAddresses == [call.client.address], "XOR-MAPPED-ADDRESS is the client's address")
        #expect(call.session.state == .connected)
        #expect(call.client.isConnected)
        #expect(call.events.contains(.iceConnected(PeerPath(client: call.client.address))))
        #expect(call.events.contains(.dtlsConnected(.aeadAES128GCM)))

        // 2 seconds of 20 ms Opus frames.
        for frame in 0..<100 {
            let payload = (0..<60).map { UInt8(truncatingIfNeeded: frame &+ $0) }
            call.deliver(fromClient: [call.client.audioPacket(timestamp: UInt32(frame * 960), payload: payload)])
            call.advance(by: .milliseconds(20))
        }
        #expect(call.client.audio.count == 100)
        #expect(call.client.audio.allSatisfy { $0.ssrc == 0xABCD_0001 }, "echoed on Parley's SSRC")
        #expect(call.client.audio.enumerated().allSatisfy { index, packet in
            packet.payload == (0..<60).map { UInt8(truncatingIfNeeded: index &+ $0) } })
        let sequences = call.client.audio.map(\.sequence)
        #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "contiguous sequence numbers")
        let timestamps = call.client.audio.map(\.timestamp)
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { $1 &- $0 == 960 }, "the client's timing is kept")
        #expect(call.session.counters.rtpReceived == 100)

        // Sender reports reached the client, with a report block about its stream.
        let reports = call.client.rtcp.compactMap { packet -> (RTCPSenderInfo, [RTCPReportBlock])? in
            if case .senderReport(let info, let blocks) = packet { return (info, blocks) }
            return nil
        }
        let (info, blocks) = try #require(reports.last)
        #expect(reports.count >= 1)
        #expect(info.ssrc == 0xABCD_0001)
        #expect(info.packetCount > 0)
        let block = try #require(blocks.first)
        #expect(block.ssrc == call.client.ssrc)
        #expect(block.cumulativeLost == 0)
        #expect(block.extendedHighestSequence & 0xFFFF == UInt32((1000 + call.session.counters.rtpReceived - 1) & 0xFFFF))

        // The client answers 50 ms later with a receiver report: the session measures the RTT.
        call.advance(by: .milliseconds(30))
        let rr = call.client.receiverReport(about: RTCPReportBlock(
            ssrc: 0xABCD_0001, fractionLost: 0, cumulativeLost: 0, extendedHighestSequence: 0, jitter: 0,
            lastSenderReport: info.compactNTP, delaySinceLastSenderReport: 65536 / 100))  // held 10 ms
        call.deliver(fromClient: [rr])
        // Expected: the time since the SR's NTP timestamp, minus the client's 10 ms hold (RFC 3550 §6.4.1).
        let nowNTP = (0xE000_0000 as UInt64) << 32 &+ WebRTCSession.ntpDuration(since: .zero, until: call.now)
        let sinceReport = Double(nowNTP &- info.ntpTimestamp) / 4_294_967_296
        let expected = sinceReport - Double(65536 / 100) / 65536
        let rtt = try #require(call.session.counters.roundTripTime)
        let measured = Double(rtt.nanoseconds) / 1e9
        #expect(abs(measured - expected) < 0.001, "measured \(measured) s, expected \(expected) s")
        #expect(expected > 0.015)
    }

    @Test func clientThatInsistsOnPassiveGetsAnActiveServer() throws {
        let call = try Call(tamperOffer: { $0.replacingOccurrences(of: "a=setup:actpass", with: "a=setup:passive") })
        #expect(call.session.parameters.negotiated.localSetup == .active)
        // After the first check the session, now the DTLS client, sends its ClientHello unasked.
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        #expect(call.session.state == .connected)
        #expect(call.client.isConnected)
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 0, payload: [9, 9])])
        #expect(call.client.audio.last?.payload == [9, 9])
    }

    @Test(arguments: [DTLSLibrary.boringssl, .openssl])
    func lostDTLSFlightIsRetransmitted(library: DTLSLibrary) throws {
        let call = try Call(serverContext: Self.context(Self.serverCertificate, retransmit: .milliseconds(20), library: library),
                            clientContext: Self.context(Self.clientCertificate, library: library))
        // Lose every DTLS datagram from the server until the test says otherwise: its first flight is gone.
        call.lose = { fromClient, bytes in !fromClient && bytes.first.map { (20...63).contains($0) } == true }
        call.connect()
        #expect(call.session.state == .connecting)
        // BoringSSL's timer runs on the virtual clock; for OpenSSL's, real time has to pass too.
        if library == .openssl { Thread.sleep(forTimeInterval: 0.03) }
        call.lose = { _, _ in false }
        call.advance(by: .milliseconds(30))
        #expect(call.session.state == .connected)
        #expect(call.client.isConnected)
        #expect(call.session.counters.datagramsSent > 3)
    }

    /// DTLS 1.3 with Parley as the DTLS client (an offer that insists on `passive`): Parley is
    /// connected once the client's Finished arrives, and its own last flight waits for the peer's ACK.
    /// Lost, it is sent again by the session's timer — which has to run after the handshake.
    @Test func parleysLostLastDTLS13FlightIsResentAfterItConnected() throws {
        let call = try Call(tamperOffer: { $0.replacingOccurrences(of: "a=setup:actpass", with: "a=setup:passive") })
        // Lose the session's encrypted DTLS 1.3 records (unified header, 0b001xxxxx): its last flight.
        call.lose = { fromClient, bytes in !fromClient && bytes.first.map { (32...63).contains($0) } == true }
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        #expect(call.session.state == .connected)
        #expect(call.session.counters.dtlsVersion == "DTLS 1.3")
        #expect(call.client.dtls.state == .handshaking, "its Finished was lost")
        let wake = try #require(call.session.nextWakeup)
        #expect(wake - call.now <= .seconds(1), "DTLS's timer is in the session's wake-up: \(wake - call.now)")
        call.lose = { _, _ in false }
        call.advance(by: .seconds(1))
        #expect(call.client.dtls.state == .connected)
        #expect(call.client.dtls.version == .dtls1_3)
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 0, payload: [7, 7])])
        #expect(call.client.audio.last?.payload == [7, 7])
    }

    @Test func nominatedCheckFromANewAddressMovesTheCall() throws {
        let call = try Call()
        call.connect()
        let old = call.client.address
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 0, payload: [1, 2, 3])])
        #expect(call.client.audio.count == 1)

        // Wi-Fi to cellular: same client, new address. Media from there is refused until a check passes.
        call.client.address = .v4(IPv4Address(198, 51, 100, 7), port: 61000)
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 960, payload: [4, 5, 6])])
        #expect(call.session.counters.drops[.unvalidatedSource] == 1)
        #expect(call.client.audio.count == 1)

        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        #expect(call.events.contains(.pathChanged(from: PeerPath(client: old), to: PeerPath(client: call.client.address))))
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 1920, payload: [7, 8, 9])])
        #expect(call.client.audio.last?.payload == [7, 8, 9])
        #expect(call.serverDatagramsTo.last == call.client.address)

        // The old address loses consent once the consent timeout passes without a check from it.
        #expect(call.session.hasConsent(from: PeerPath(client: old)))
        for _ in 0..<7 {
            call.advance(by: .seconds(5))
            call.deliver(fromClient: [call.client.check(useCandidate: false)])
        }
        #expect(!call.session.hasConsent(from: PeerPath(client: old)))
        #expect(call.session.state == .connected)
    }

    /// RFC 7675 done by Parley itself: its checks every 4–6 s keep the call while the client answers
    /// them, though the client sends no checks of its own (as Pion does once media flows); when
    /// the answers stop, the call ends 30 s after the last one.
    @Test func consentHoldsWhileTheClientAnswersOurChecksAndExpiresWhenItStops() throws {
        let call = try Call()
        call.connect()
        let answeredBefore = call.session.counters.checkResponses
        call.advance(by: .seconds(120))
        #expect(call.session.state == .connected)
        let checks = call.session.counters.checkResponses - answeredBefore
        #expect((20...30).contains(checks), "120 s of consent checks 4–6 s apart: \(checks)")
        // The client stops answering: consent ends 30 s after its last answer, not before.
        // Its last answer came at most 6 s ago.
        call.client.answersChecks = false
        call.advance(by: .seconds(23))
        #expect(call.session.state == .connected)
        call.advance(by: .seconds(8))
        #expect(call.session.state == .closed(.consentExpired))
        #expect(call.events.last == .closed(.consentExpired))
        #expect(call.session.nextWakeup == nil)
    }

    @Test func noCheckMeansICETimeout() throws {
        let call = try Call()
        call.advance(by: .seconds(31))
        #expect(call.session.state == .closed(.iceTimeout))
    }

    @Test func checksWithTheWrongPasswordAreRefused() throws {
        let call = try Call()
        call.deliver(fromClient: [call.client.check(useCandidate: true, password: "not-the-server-password!")])
        #expect(call.client.errorCodes.isEmpty, "no answer: the source of an unauthenticated check may be anyone")
        #expect(call.session.takeTransmits().isEmpty)
        #expect(call.session.state == .waitingForICE)
        #expect(call.session.counters.drops[.unauthenticatedSTUN] == 1)
        // DTLS from the unauthenticated address is dropped too.
        let clientHello = call.client.startDTLS()
        call.deliver(fromClient: clientHello)
        #expect(call.session.counters.drops[.unvalidatedSource] == clientHello.count)
        #expect(call.session.state == .waitingForICE)
    }

    @Test func garbageIsDroppedAndCounted() throws {
        let call = try Call()
        call.connect()
        let garbage: [[UInt8]] = [[], [0xFF, 1, 2], [0x00, 0x01, 0x00], [0x80, 111, 0, 1], [0x80, 200, 0, 1, 2, 3, 4, 5]]
        call.deliver(fromClient: garbage)
        #expect(call.session.state == .connected)
        #expect(call.session.counters.drops[.unknownProtocol] == 2)
        #expect(call.session.counters.drops[.malformedSTUN] == 1)
        #expect(call.session.counters.drops[.srtpRejected] == 2)
    }

    @Test func wrongCertificateFailsTheCall() throws {
        let call = try Call(tamperOffer: { offer in
            offer.replacingOccurrences(of: SessionTests.clientCertificate.fingerprint.description,
                                       with: SessionTests.serverCertificate.fingerprint.description)
        })
        call.connect()
        #expect(call.session.state == .closed(.dtlsFailed(.fingerprintMismatch)))
    }

    /// The client ends SCTP (SHUTDOWN) but not the call: the session reports the data channels
    /// ended, with the reason, and audio goes on.
    @Test func dataChannelTransportEndingIsReportedAndAudioGoesOn() throws {
        let call = try Call()
        call.connect()
        call.deliver(fromClient: call.client.startSCTP(now: call.now))
        #expect(call.client.sctp?.state == .established)
        call.client.sctp?.shutdown(now: call.now)
        call.deliver(fromClient: call.client.sctpOutgoing())
        #expect(call.client.sctp?.state == .finished)
        #expect(call.events.contains(.dataChannelTransportClosed(reason: "shutdown by peer")))
        #expect(call.session.counters.dataChannelTransportClosed == "shutdown by peer")
        #expect(call.session.state == .connected)
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 960, payload: [0xF8, 0xFF, 0xFE])])
        #expect(call.client.audio.count == 1, "the echo still comes back")
    }

    @Test func hangupSendsByeAndCloseNotify() throws {
        let call = try Call()
        call.connect()
        call.session.close(.hangup, now: call.now)
        let transmits = call.session.takeTransmits()
        #expect(transmits.count == 2)
        _ = call.client.receive(transmits[0].bytes)
        #expect(call.client.rtcp.contains(.goodbye(ssrcs: [0xABCD_0001])))
        _ = call.client.receive(transmits[1].bytes)
        #expect(call.client.dtls.state == .closed)
        #expect(call.session.state == .closed(.hangup))
    }
}

extension SessionTests {
    @Test func iceRestartSwapsCredentialsAndKeepsMedia() throws {
        let call = try Call()
        call.connect()
        let oldUfrag = call.client.serverUfrag, oldPassword = call.client.serverPassword
        call.session.restartICE(localUfrag: "newServerUfrag", localPassword: "newserverpassword1234567",
                                remoteUfrag: "ncli", remotePassword: "newclientpassword1234567")
        #expect(call.session.counters.iceRestarts == 1)
        #expect(call.session.state == .connected, "media keeps flowing during the restart")
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 0, payload: [1])])
        #expect(call.client.audio.count == 1)

        // The old credentials no longer authenticate.
        let answered = call.client.successResponses.count
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        #expect(call.client.successResponses.count == answered)
        #expect(call.session.counters.drops[.unauthenticatedSTUN] == 1)

        // The new ones do.
        call.client.serverUfrag = "newServerUfrag"
        call.client.serverPassword = "newserverpassword1234567"
        let clientUfrag = call.client.ufrag
        #expect(oldUfrag != call.client.serverUfrag && oldPassword != call.client.serverPassword)
        _ = clientUfrag
        let check = try STUNWriter.build(type: .bindingRequest, transactionID: .random()) { writer throws(STUNBuildError) in
            try writer.appendUsername("newServerUfrag:ncli")
            try writer.appendUseCandidate()
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: "newserverpassword1234567"))
            try writer.appendFingerprint()
        }
        call.deliver(fromClient: [check])
        #expect(call.client.successResponses.count == answered + 1)
        #expect(call.events.contains(.iceRestarted))
        // Media still flows after the restart's check.
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 960, payload: [2])])
        #expect(call.client.audio.last?.payload == [2])
    }
}

extension SessionTests {
    /// A relay restarts (or another replica takes the flow): the same client arrives through a new
    /// hop, and the session answers through it at once, without waiting for a check.
    @Test func sameClientThroughANewRelayHopIsFollowed() throws {
        let call = try Call()
        let hopA = RelayHop(address: .v4(IPv4Address(10, 0, 0, 1), port: 40001), ingressID: 0, transport: .udp)
        let hopB = RelayHop(address: .v4(IPv4Address(10, 0, 0, 2), port: 40002), ingressID: 3, transport: .udp)
        var via = hopA
        func send(_ datagrams: [[UInt8]]) -> [Transmit] {
            for datagram in datagrams {
                datagram.withUnsafeBytes { call.session.receive($0, from: PeerPath(client: call.client.address, relay: via), now: call.now) }
            }
            call.collectEvents()
            return call.session.takeTransmits()
        }
        var replies = send([call.client.check(useCandidate: true)])
        var dtlsStarted = false
        while !replies.isEmpty || !dtlsStarted {
            var next: [[UInt8]] = []
            for reply in replies { next += call.client.receive(reply.bytes) }
            if next.isEmpty && !dtlsStarted {
                dtlsStarted = true
                next = call.client.startDTLS()
            }
            replies = send(next)
        }
        #expect(call.session.state == .connected)
        #expect(call.session.selectedPath?.relay == hopA)

        via = hopB
        // A packet that does not authenticate (bad SRTP) through the new hop moves nothing.
        var forged = call.client.audioPacket(timestamp: 0, payload: [6, 6])
        forged[forged.count - 1] ^= 0xFF
        _ = send([forged])
        #expect(call.session.selectedPath?.relay == hopA)
        #expect(call.session.counters.drops[.srtpRejected] == 1)
        let echoed = send([call.client.audioPacket(timestamp: 960, payload: [5, 5])])
        #expect(echoed.count == 1)
        #expect(echoed.first?.path.relay == hopB, "the echo goes back through the new hop")
        #expect(call.session.counters.drops[.unvalidatedSource] == nil)
    }
}
