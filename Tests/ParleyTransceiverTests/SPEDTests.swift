import ParleyDTLSLibrary
import ParleyMedia
import ParleySCTP
import ParleyTestSupport
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// SPED (DTLS inside STUN) between the session core and the WARP client, in memory, one round trip
/// at a time: the ClientHello rides the first check, the server's flight its answer, so the call is
/// up a round trip sooner; an address that has not answered our check gets no more than three
/// times what it sent; hostile SPED attributes are counted and change nothing.
@Suite struct SPEDTests {
    static let serverUfrag = "serverufrag"
    static let serverPassword = "serverpassword1234567890"

    /// A WARP client and the session answering it, SPED on or off in the answer.
    final class Call {
        let client: ClientSession
        let session: WebRTCSession
        var now = Instant(nanoseconds: 5_000_000_000)
        /// The client's address as the session sees it.
        var path = PeerPath(client: .v4(IPv4Address(127, 0, 0, 1), port: 40000))
        /// Return false to lose a datagram on its way to the client.
        var deliverToClient: ([UInt8]) -> Bool = { _ in true }
        /// Return false to lose a datagram on its way to the session.
        var deliverToServer: ([UInt8]) -> Bool = { _ in true }
        /// The client's events, in order.
        var clientEvents: [ClientSession.Event] = []
        var toClient: [[UInt8]] = []
        /// Every DTLS datagram the client embedded in a Binding message, in order.
        var embeddedByClient: [[UInt8]] = []

        /// DTLS 1.2 (OpenSSL) unless told: its ClientHello is one datagram, which the round trips and
        /// byte counts below rely on; `spedWithDTLS13` runs the same call on BoringSSL's 1.3.
        init(sped: Bool, flightCredit: Int = 4096, library: DTLSLibrary = .openssl) throws {
            client = ClientSession(dtlsContext: SessionTests.context(SessionTests.clientCertificate, library: library), warp: true)
            let serverContext = SessionTests.context(SessionTests.serverCertificate, library: library)
            var generator = SystemRandomNumberGenerator()
            let negotiated = try SessionDescription.iceLiteAnswer(
                to: SessionDescription(parsing: client.offer),
                parameters: AnswerParameters(
                    iceUfrag: SPEDTests.serverUfrag, icePassword: SPEDTests.serverPassword,
                    fingerprint: serverContext.certificate.fingerprint,
                    candidates: [ICECandidate(foundation: "1", priority: 1, address: "127.0.0.1", port: 3478)],
                    sessionID: 1, audioSSRC: 42, cname: "parley", sctpInit: SNAPInits.draw(using: &generator), sped: sped))
            var parameters = SessionParameters(id: "c", localUfrag: SPEDTests.serverUfrag, localPassword: SPEDTests.serverPassword,
                                               negotiated: negotiated, localAudioSSRC: 42, cname: "parley")
            parameters.snap = try SNAPInits(local: try #require(negotiated.localSCTPInit), remote: try #require(negotiated.remoteSCTPInit))
            parameters.negotiatedEventsChannel = client.negotiatedChannelID
            parameters.spedFlightCredit = flightCredit
            session = try WebRTCSession(parameters: parameters, dtlsContext: serverContext, now: now)
            try client.accept(answer: negotiated.answer.text, now: now)
        }

        /// One round trip: what the client has to send reaches the session, and what the session
        /// sends back reaches the client. Returns the datagrams each way.
        @discardableResult
        func roundTrip() -> (toServer: [[UInt8]], toClient: [[UInt8]]) {
            let toServer = client.takeTransmits()
            embeddedByClient += toServer.compactMap(SPEDTests.embedded)
            for datagram in toServer where deliverToServer(datagram) {
                datagram.withUnsafeBytes { session.receive($0, from: path, now: now) }
            }
            _ = session.takeEvents()
            let back = session.takeTransmits().map(\.bytes)
            toClient += back
            for datagram in back where deliverToClient(datagram) {
                datagram.withUnsafeBytes { client.receive($0, from: client.serverAddress, now: now) }
            }
            clientEvents += client.takeEvents()
            return (toServer, back)
        }

        /// Round trips until the client's data channel is open (at most ten).
        func roundTripsToOpenChannel() -> Int? {
            for trip in 1...10 {
                roundTrip()
                if client.isDataChannelOpen { return trip }
            }
            return nil
        }
    }

    /// SPED's DTLS-IN-STUN value in a STUN datagram, when it has one.
    static func embedded(_ datagram: [UInt8]) -> [UInt8]? {
        guard PacketKind.classify(datagram) == .stun, let message = try? STUNMessage.parse(datagram) else { return nil }
        return message.dtlsInSTUN.map { Array(datagram[$0]) }
    }

    static func acknowledgements(_ datagram: [UInt8]) -> [UInt32]? {
        guard PacketKind.classify(datagram) == .stun, let message = try? STUNMessage.parse(datagram),
              let range = message.dtlsInSTUNAcknowledgement else { return nil }
        return stride(from: range.lowerBound, to: range.upperBound, by: 4).map { offset in
            datagram.withUnsafeBytes { $0.uint32(at: offset) }
        }
    }

    static func crc(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { CRC32.checksum($0) } }

    /// The same calls on BoringSSL, DTLS 1.3 at both ends: the client's channel opens two round trips
    /// after the answer with SPED and without — 1.3 saves DTLS 1.2's second flight, and its
    /// post-quantum ClientHello is two datagrams (one per Binding message, the second rides the
    /// client's answer to the session's check, so the server's flight leaves a round trip later).
    /// The session connects when the client's Finished arrives, half a round trip after the client.
    @Test func spedWithDTLS13() throws {
        for sped in [true, false] {
            let call = try Call(sped: sped, library: .boringssl)
            #expect(call.roundTripsToOpenChannel() == 2, "SPED \(sped)")
            #expect(call.session.state == .connecting, "its Finished is on its way")
            let (finished, _) = call.roundTrip()
            #expect(!finished.isEmpty)
            #expect(call.session.state == .connected)
            #expect(call.session.counters.dtlsVersion == "DTLS 1.3")
            #expect(call.session.counters.dtlsLibrary == "boringssl")
            #expect(call.session.counters.dtlsStart == (sped ? "sped" : "direct"))
            #expect(call.session.counters.drops.isEmpty, "\(call.session.counters.drops)")
            if sped {
                #expect(call.session.counters.dtlsInSTUNReceived == 2, "both ClientHello datagrams rode Binding messages")
                #expect(call.session.counters.dtlsInSTUNSent >= 1)
            }
            // Data both ways over 1.3's keys.
            let id = try #require(call.client.negotiatedChannelID)
            #expect(call.client.sendDataChannelMessage(Array("ping".utf8), binary: false, now: call.now))
            #expect(call.session.sendDataChannelMessage(Array("pong".utf8), binary: false, channel: id, now: call.now))
            call.roundTrip()
            #expect(call.session.counters.dataChannelMessagesReceived == 1)
            #expect(call.clientEvents.contains { event in
                if case .dataChannelMessage(_, _, let payload) = event { return payload == Array("pong".utf8) }
                return false
            }, "\(call.clientEvents)")
        }
    }

    /// DTLS 1.3's last flight is the client's: `ClientSession` (parley load) connects on the
    /// server's Finished, and when its own Finished is lost it sends it again on DTLS's timer, after
    /// the handshake, until the session has it.
    @Test func theClientResendsALostDTLS13FinishedAfterItConnected() throws {
        let call = try Call(sped: false, library: .boringssl)
        // Lose the client's encrypted DTLS 1.3 records (unified header, 0b001xxxxx) until told.
        var losing = true
        call.deliverToServer = { datagram in !(losing && datagram.first.map { (32...63).contains($0) } == true) }
        #expect(call.roundTripsToOpenChannel() == 2)
        call.roundTrip()
        #expect(call.session.state == .connecting, "the client's Finished was lost")
        let wake = try #require(call.client.nextWakeup)
        #expect(wake - call.now <= .seconds(1), "DTLS's timer is in the client's wake-up: \(wake - call.now)")
        losing = false
        call.now = wake
        call.client.handleTimeout(now: call.now)
        call.roundTrip()
        #expect(call.session.state == .connected)
        #expect(call.session.counters.dtlsVersion == "DTLS 1.3")
    }

    /// With SNAP and a pre-negotiated channel the data channel opens two round trips after the
    /// answer with SPED, three without: the ClientHello rode the first check and the server's
    /// flight its answer.
    @Test func spedSavesICEsRoundTrip() throws {
        let with = try Call(sped: true)
        let without = try Call(sped: false)
        #expect(with.client.answeredSPED && !without.client.answeredSPED)
        #expect(with.roundTripsToOpenChannel() == 2)
        #expect(without.roundTripsToOpenChannel() == 3)
        #expect(with.session.counters.dtlsStart == "sped" && without.session.counters.dtlsStart == "direct")
        #expect(with.session.state == .connected && with.session.counters.dataChannelStart == "snap")
        #expect(with.session.counters.drops.isEmpty, "\(with.session.counters.drops)")
        #expect(without.session.counters.dtlsInSTUNReceived == 0 && without.session.counters.dtlsInSTUNSent == 0)
        // SPED's smaller DTLS MTU is for the handshake: SCTP packets of this event larger than it still go.
        let event = [UInt8](repeating: UInt8(ascii: "x"), count: 1150)
        #expect(with.client.sendDataChannelMessage(event, binary: false, now: with.now))
        with.roundTrip()
        #expect(with.session.counters.dataChannelMessagesReceived == 1, "\(with.session.counters.dataChannelDrops)")
    }

    /// The bytes: the first check carries the ClientHello (a DTLS handshake record, message type 1);
    /// its answer acknowledges exactly that datagram's CRC-32 and carries the ServerHello's datagram.
    /// Once both handshakes are done and acknowledged, Binding messages carry no SPED attributes.
    @Test func theClientHelloRidesTheFirstCheckAndTheServerHelloItsAnswer() throws {
        let call = try Call(sped: true)
        let (toServer, toClient) = call.roundTrip()
        #expect(toServer.count == 1, "nothing but the check leaves before ICE answers")
        let clientHello = try #require(Self.embedded(toServer[0]))
        #expect(clientHello[0] == 22 && clientHello[13] == 1, "a handshake record holding a ClientHello")
        // The session's own check goes first and carries them too (Chromium turns SPED off on a
        // Binding message without them), then its answer.
        let stun = try toClient.filter { PacketKind.classify($0) == .stun }.map { ($0, try STUNMessage.parse($0).type) }
        #expect(stun.map(\.1) == [.bindingRequest, .bindingSuccess])
        for (datagram, _) in stun {
            #expect(Self.acknowledgements(datagram) == [Self.crc(clientHello)])
            let serverHello = try #require(Self.embedded(datagram))
            #expect(serverHello[0] == 22 && serverHello[13] == 2, "a handshake record holding a ServerHello")
        }
        #expect(call.session.counters.dtlsInSTUNReceived == 1 && call.session.counters.dtlsInSTUNSent == 2)
        #expect(call.client.dtlsInSTUNReceived == 1 && call.client.dtlsInSTUNSent == 2)
        // The client answers the session's check, and its flight rides that answer as well as going directly.

        #expect(call.roundTripsToOpenChannel() == 1)
        // Consent checks from now on: the first answer acknowledges alone (Chromium's cue that the
        // server is done), later ones carry nothing of SPED.
        var consent: [[UInt8]] = []
        for _ in 0..<3 {
            call.now = call.now + .seconds(3)
            call.client.handleTimeout(now: call.now)
            call.session.handleTimeout(now: call.now)
            consent += call.roundTrip().toClient.filter { PacketKind.classify($0) == .stun }
        }
        #expect(try consent.filter { try STUNMessage.parse($0).type == .bindingSuccess }.count == 3)
        // Every Binding message of the session's, from the first: ACK and DATA while SPED is on, then
        // plain ones — after one ACK alone, unless the client finished first (a message of its with
        // neither attribute ends SPED at once, as Chromium's PENDING → COMPLETE does).
        let sped = try call.toClient.filter { PacketKind.classify($0) == .stun }.map { datagram -> String in
            let message = try STUNMessage.parse(datagram)
            switch (message.dtlsInSTUNAcknowledgement != nil, message.dtlsInSTUN != nil) {
            case (true, true): return "D"
            case (true, false): return "A"
            case (false, false): return "-"
            case (false, true): return "?"
            }
        }.joined()
        #expect(sped.wholeMatch(of: /D+A?-+/) != nil, "\(sped)")
        #expect(call.session.counters.drops.isEmpty, "\(call.session.counters.drops)")
    }

    /// A caller who forges a victim's source address gets at most one flight (4 KiB) plus three
    /// times its checks' bytes of DTLS-carrying STUN sent there until the address answers our
    /// check; once it does, the rest follows. With no flight credit the bound binds at once: of the
    /// session's check and answer, only one can carry the ServerHello.
    @Test(arguments: [0, 4096])
    func anUnvalidatedAddressGetsAFlightAndThreeTimesWhatItSentNoMore(flightCredit: Int) throws {
        let call = try Call(sped: true, flightCredit: flightCredit)
        let victim = TransportAddress.v4(IPv4Address(192, 0, 2, 7), port: 5000)
        call.path = PeerPath(client: victim)
        let check = call.client.takeTransmits()
        #expect(check.count == 1)
        for datagram in check { datagram.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) } }
        let sent = call.session.takeTransmits()
        #expect(sent.allSatisfy { $0.path.client == victim })
        func spedBytes(_ transmits: [Transmit]) -> Int {
            transmits.reduce(0) { total, transmit in
                total + (PacketKind.classify(transmit.bytes) == .dtls || Self.embedded(transmit.bytes) != nil ? transmit.bytes.count : 0)
            }
        }
        let carrying = sent.filter { Self.embedded($0.bytes) != nil }.count
        #expect(carrying == (flightCredit == 0 ? 1 : 2), "\(carrying) of the check and answer carry the ServerHello")
        #expect(spedBytes(sent) <= flightCredit + 3 * check[0].count, "\(spedBytes(sent)) B for a \(check[0].count) B check")
        // More checks from there (the caller repeating its forged check) earn three times their bytes, no more.
        var repeated = 0
        for round in 0..<20 {
            let forged = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(7, 7, UInt32(round))) { writer throws(STUNBuildError) in
                try writer.appendUsername("\(Self.serverUfrag):\(call.client.ufrag)")
                try writer.appendICEControlling(tieBreaker: 1)
                try writer.appendDTLSInSTUN([UInt8](repeating: 22, count: 1) + [UInt8](repeating: 0xFE, count: 60))
                try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: Self.serverPassword))
                try writer.appendFingerprint()
            }
            repeated += forged.count
            forged.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) }
        }
        let more = call.session.takeTransmits()
        #expect(more.allSatisfy { $0.path.client == victim })
        #expect(spedBytes(sent) + spedBytes(more) <= flightCredit + 3 * (check[0].count + repeated))

        // The check's own address answers our check: it is validated, and the call completes.
        for transmit in sent + more { transmit.bytes.withUnsafeBytes { call.client.receive($0, from: call.client.serverAddress, now: call.now) } }
        #expect(call.roundTripsToOpenChannel() != nil)
        #expect(call.session.state == .connected)
    }

    /// Credit is each address's own: a caller's large checks from one address earn nothing for a
    /// forged one, which gets three times its own small checks' bytes — no ServerHello for its first
    /// check — and, behind a relay, no direct DTLS before it answers (the relay would drop it).
    @Test func eachUnansweredAddressEarnsItsOwnCredit() throws {
        let call = try Call(sped: true, flightCredit: 0)
        let own = PeerPath(client: .v4(IPv4Address(192, 0, 2, 1), port: 1000))
        let forged = PeerPath(client: .v4(IPv4Address(192, 0, 2, 2), port: 2000),
                              relay: RelayHop(address: .v4(IPv4Address(10, 0, 0, 1), port: 4000), ingressID: 1, transport: .udp))
        for datagram in call.client.takeTransmits() { datagram.withUnsafeBytes { call.session.receive($0, from: own, now: call.now) } }
        #expect(call.session.takeTransmits().contains { Self.embedded($0.bytes) != nil }, "its own check earned the ServerHello")
        // The caller piles up credit on its own address with large checks (a long SOFTWARE)…
        for round in 0..<2 {
            let large = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(6, 6, UInt32(round)), capacity: 1500) { writer throws(STUNBuildError) in
                try writer.appendUsername("\(Self.serverUfrag):\(call.client.ufrag)")
                try writer.appendSoftware(String(repeating: "x", count: 760))
                try writer.appendDTLSInSTUNAcknowledgement([UInt32]())
                try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: Self.serverPassword))
                try writer.appendFingerprint()
            }
            large.withUnsafeBytes { call.session.receive($0, from: own, now: call.now) }
        }
        _ = call.session.takeTransmits()
        // …which a forged address, checking with small ones, cannot spend.
        var forgedBytes = 0, carried = 0
        for round in 0..<6 {
            let check = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(5, 5, UInt32(round))) { writer throws(STUNBuildError) in
                try writer.appendUsername("\(Self.serverUfrag):\(call.client.ufrag)")
                try writer.appendICEControlling(tieBreaker: 1)
                try writer.appendDTLSInSTUNAcknowledgement([UInt32]())
                try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: Self.serverPassword))
                try writer.appendFingerprint()
            }
            forgedBytes += check.count
            check.withUnsafeBytes { call.session.receive($0, from: forged, now: call.now) }
            let toForged = call.session.takeTransmits().filter { $0.path.client == forged.client }
            #expect(!toForged.isEmpty, "its checks are answered")
            #expect(toForged.allSatisfy { PacketKind.classify($0.bytes) != .dtls }, "no direct DTLS behind a relay")
            if round == 0 { #expect(toForged.allSatisfy { Self.embedded($0.bytes) == nil }, "one small check earns no ServerHello") }
            carried += toForged.filter { Self.embedded($0.bytes) != nil }.reduce(0) { $0 + $1.bytes.count }
            #expect(carried <= 3 * forgedBytes, "round \(round): \(carried) B for \(forgedBytes) B")
        }
    }

    /// The server flight's datagrams reach the client even when the answer carrying the first one
    /// is lost: they are retransmitted on later answers (and by DTLS) until acknowledged.
    @Test func aLostAnswerIsMadeUpByTheNextCheck() throws {
        let call = try Call(sped: true)
        var lost = 0
        call.deliverToClient = { datagram in
            // The first round's check and answer, both carrying the ServerHello, are lost.
            if lost < 2, SPEDTests.embedded(datagram) != nil { lost += 1; return false }
            return true
        }
        call.roundTrip()
        #expect(lost == 2 && !call.client.isICEConnected)
        // Time passes: the client's next check carries the ClientHello again, the session repeats its
        // own check (the lost one validated nothing).
        for _ in 0..<20 where !call.client.isDataChannelOpen {
            call.now = call.now + .milliseconds(50)
            call.client.handleTimeout(now: call.now)
            call.session.handleTimeout(now: call.now)
            call.roundTrip()
        }
        #expect(call.client.isDataChannelOpen)
        #expect(call.embeddedByClient.filter { $0[13] == 1 }.count >= 2, "the ClientHello rode two checks")
        #expect(call.session.counters.dtlsInSTUNReceived == Set(call.embeddedByClient).count, "each datagram reached DTLS once")
    }

    /// Hostile SPED attributes in authenticated checks: an ACK that is not whole CRCs or lists more
    /// than four, DATA that is no DTLS record. Each is counted as malformed_sped; the check is still
    /// answered and DTLS does not start on it.
    @Test func malformedSPEDAttributesAreCountedAndIgnored() throws {
        let call = try Call(sped: true)
        let clientUfrag = call.client.ufrag
        let key = STUNIntegrityKey(shortTermPassword: Self.serverPassword)
        func check(_ id: UInt32, _ body: (inout STUNWriter) throws(STUNBuildError) -> Void) throws -> [UInt8] {
            try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(9, 9, id)) { writer throws(STUNBuildError) in
                try writer.appendUsername("\(Self.serverUfrag):\(clientUfrag)")
                try writer.appendPriority(1)
                try writer.appendICEControlling(tieBreaker: 1)
                try body(&writer)
                try writer.appendMessageIntegrity(key: key)
                try writer.appendFingerprint()
            }
        }
        let bad = [
            try check(1) { writer throws(STUNBuildError) in try writer.append(.dtlsInSTUNAcknowledgement, value: [UInt8](repeating: 1, count: 5)) },
            try check(2) { writer throws(STUNBuildError) in try writer.append(.dtlsInSTUNAcknowledgement, value: [UInt8](repeating: 1, count: 20)) },
            try check(3) { writer throws(STUNBuildError) in try writer.appendDTLSInSTUN([0, 1, 2, 3]) },
            try check(4) { writer throws(STUNBuildError) in try writer.appendDTLSInSTUN([200] + [UInt8](repeating: 0, count: 40)) },
        ]
        for datagram in bad { datagram.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) } }
        #expect(call.session.counters.drops[.malformedSPED] == 4)
        #expect(call.session.counters.checksAnswered == 4)
        #expect(call.session.counters.dtlsStart == nil && call.session.counters.dtlsInSTUNReceived == 0)
        // The real client still gets its call (it answers the check the session sent it meanwhile).
        for transmit in call.session.takeTransmits() {
            transmit.bytes.withUnsafeBytes { call.client.receive($0, from: call.client.serverAddress, now: call.now) }
        }
        #expect(call.roundTripsToOpenChannel() != nil, "\(call.session.counters.drops) \(call.session.state)")
    }

    /// A ClientHello that fails DTLS, riding an authenticated check: the call ends there, once, and
    /// nothing after it (no answer, no check, no ICE-connected event) brings it back.
    @Test func aFailingClientHelloEndsTheCallOnce() throws {
        let call = try Call(sped: true)
        // A well-formed DTLS 1.2 ClientHello offering only TLS_NULL_WITH_NULL_NULL: no shared cipher.
        let body: [UInt8] = [0xFE, 0xFD] + [UInt8](repeating: 0x41, count: 32) + [0, 0, 0, 2, 0x00, 0x00, 1, 0]
        let length = 12 + body.count
        let handshake: [UInt8] = [1, 0, 0, UInt8(body.count), 0, 0, 0, 0, 0, 0, 0, UInt8(body.count)] + body
        let record: [UInt8] = [22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xFF)]
        let check = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(3, 3, 3)) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(Self.serverUfrag):\(call.client.ufrag)")
            try writer.appendICEControlling(tieBreaker: 1)
            try writer.appendUseCandidate()
            try writer.appendDTLSInSTUN(record + handshake)
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: Self.serverPassword))
            try writer.appendFingerprint()
        }
        check.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) }
        guard case .closed(let reason) = call.session.state else {
            Issue.record("OpenSSL took the garbage ClientHello: \(call.session.state) \(call.session.counters.dtlsInSTUNReceived) \(call.session.counters.drops) \(call.session.takeTransmits().map(\.bytes.count))")
            return
        }
        var failed = false
        if case .dtlsFailed = reason { failed = true }
        #expect(failed, "\(reason)")
        let events = call.session.takeEvents()
        #expect(events.filter { if case .closed = $0 { return true } else { return false } }.count == 1)
        #expect(!events.contains { if case .iceConnected = $0 { return true } else { return false } })
        #expect(call.session.takeTransmits().allSatisfy { (try? STUNMessage.parse($0.bytes)) == nil }, "no STUN after the end")
        // The client's real check now changes nothing either.
        for datagram in call.client.takeTransmits() { datagram.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) } }
        #expect(call.session.takeEvents().isEmpty && call.session.isClosed)
    }

    /// Random SPED attributes — ACKs of any length, DATA of any bytes, DTLS-looking or not — in
    /// authenticated checks and answers before and during the handshake never trap; the session
    /// either still connects its real client or ends with a reason (garbage a caller's own
    /// credentials vouch for may fail its DTLS, as it could without SPED).
    @Test func randomSPEDAttributesNeverTrap() throws {
        var generator = SplitMix64(seed: 0x5BED)
        let key = STUNIntegrityKey(shortTermPassword: Self.serverPassword)
        var connected = 0
        for round in 0..<150 {
            let call = try Call(sped: true)
            let clientUfrag = call.client.ufrag
            var sessionCheck: STUNTransactionID?  // the session's latest check: answers to it reach SPED's code
            for index in 0..<Int.random(in: 1...6, using: &generator) {
                var attributes: [(STUNAttributeType, [UInt8])] = []
                if Bool.random(using: &generator) {
                    let length = Int.random(in: 0...24, using: &generator)
                    attributes.append((.dtlsInSTUNAcknowledgement, (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }))
                }
                if Bool.random(using: &generator) {
                    let length = Int.random(in: 0...300, using: &generator)
                    var data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                    if !data.isEmpty, Bool.random(using: &generator) { data[0] = UInt8.random(in: 20...63, using: &generator) }
                    attributes.append((.dtlsInSTUN, data))
                }
                let type: STUNMessageType = index % 3 == 2 && sessionCheck != nil ? .bindingSuccess : .bindingRequest
                let id = type == .bindingSuccess ? sessionCheck! : STUNTransactionID(UInt32(round), 1, UInt32(index))
                let check = try STUNWriter.build(type: type, transactionID: id, capacity: 1500) { writer throws(STUNBuildError) in
                    if type == .bindingRequest {
                        try writer.appendUsername("\(Self.serverUfrag):\(clientUfrag)")
                        try writer.appendICEControlling(tieBreaker: 1)
                    }
                    for (attribute, value) in attributes { try writer.append(attribute, value: value) }
                    try writer.appendMessageIntegrity(key: type == .bindingRequest ? key : STUNIntegrityKey(shortTermPassword: call.client.password))
                    try writer.appendFingerprint()
                }
                check.withUnsafeBytes { call.session.receive($0, from: call.path, now: call.now) }
                let answer = Bool.random(using: &generator)
                for transmit in call.session.takeTransmits() {
                    if let message = try? STUNMessage.parse(transmit.bytes), message.type == .bindingRequest { sessionCheck = message.transactionID }
                    if answer { transmit.bytes.withUnsafeBytes { call.client.receive($0, from: call.client.serverAddress, now: call.now) } }
                }
            }
            for _ in 0..<10 where !call.client.isDataChannelOpen && !call.session.isClosed {
                call.now = call.now + .milliseconds(100)
                call.client.handleTimeout(now: call.now)
                call.session.handleTimeout(now: call.now)
                call.roundTrip()
            }
            if call.client.isDataChannelOpen {
                connected += 1
            } else if case .closed(let reason) = call.session.state {
                // Junk DTLS that the call's own password vouched for may fail its handshake, nothing else.
                var dtlsFailed = false
                if case .dtlsFailed = reason { dtlsFailed = true }
                #expect(dtlsFailed || reason == .dtlsTimeout, "\(reason)")
            }
        }
        #expect(connected > 75, "most calls connect despite the junk: \(connected)/150")
    }

    /// The bookkeeping alone: a flight replaces what was pending, acknowledgements remove it, the
    /// round robin visits every pending datagram, duplicates reach DTLS once, four CRCs at most are
    /// acknowledged, and a message with neither attribute ends SPED.
    @Test func theBookkeepingFollowsTheDraft() {
        var sped = DTLSInSTUN()
        #expect(sped.phase == .tentative)
        let flight: [[UInt8]] = [[22, 1], [22, 2], [22, 3]]
        sped.sent(flight: flight)
        #expect(sped.nextAttributes()?.datagram == [22, 1])
        #expect(sped.nextAttributes()?.datagram == [22, 2])
        // The peer acknowledges the second datagram: the round robin goes on with the third, then the first.
        let ack = [UInt8](bigEndian: Self.crc([22, 2]))
        let none = ack.withUnsafeBytes { sped.receive(data: nil, acknowledgement: $0) }
        #expect(none == nil && sped.phase == .active && sped.pendingCount == 2)
        #expect(sped.nextAttributes()?.datagram == [22, 3])
        #expect(sped.nextAttributes()?.datagram == [22, 1])

        // Received datagrams: acknowledged, newest four, each passed on once.
        for index in 0..<6 {
            let datagram: [UInt8] = [23, UInt8(index)]
            let passed = datagram.withUnsafeBytes { sped.receive(data: $0, acknowledgement: nil) != nil }
            #expect(passed)
        }
        #expect([UInt8]([23, 5]).withUnsafeBytes { sped.receivedDirectly($0) } == false)
        #expect([UInt8]([23, 5]).withUnsafeBytes { sped.receive(data: $0, acknowledgement: nil) } == nil)
        #expect([UInt8]([2, 5]).withUnsafeBytes { sped.receive(data: $0, acknowledgement: nil) } == nil, "not a DTLS record")
        #expect(sped.nextAttributes()?.acknowledgements == (2..<6).map { Self.crc([23, UInt8($0)]) })

        // As a DTLS 1.2 client, completion clears what is pending; the next message acknowledges
        // alone, and after it SPED is over.
        var client = sped
        client.handshakeCompleted(asClient: true)
        #expect(client.nextAttributes()?.datagram == nil && client.phase == .finished)
        #expect(client.nextAttributes() == nil)
        // As the server, our Finished stays pending until acknowledged; then the acknowledgements go
        // alone, and SPED ends with the first such message toward the call's own path.
        var server = sped
        server.handshakeCompleted(asClient: false)
        #expect(server.nextAttributes()?.datagram != nil)
        var acknowledged = server
        for datagram in [[UInt8]]([[22, 3], [22, 1]]) {
            _ = [UInt8](bigEndian: Self.crc(datagram)).withUnsafeBytes { acknowledged.receive(data: nil, acknowledgement: $0) }
        }
        #expect(acknowledged.pendingCount == 0)
        #expect(acknowledged.nextAttributes(mayFinish: false) == .init(acknowledgements: (2..<6).map { Self.crc([23, UInt8($0)]) }, datagram: nil))
        #expect(acknowledged.phase == .active, "not toward a spare path")
        #expect(acknowledged.nextAttributes(mayFinish: true)?.datagram == nil && acknowledged.phase == .finished)
        #expect(acknowledged.nextAttributes() == nil)
        // A peer that sends neither attribute is done with SPED (or never spoke it).
        _ = server.receive(data: nil, acknowledgement: nil)
        #expect(server.phase == .finished && server.nextAttributes() == nil)
    }
}

extension [UInt8] {
    init(bigEndian value: UInt32) {
        self = [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }
}
