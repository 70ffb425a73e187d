import Foundation
import ParleyMedia
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// Parley checks an address itself before anything but STUN goes there (RFC 8445 §19.2's return
/// routability, RFC 7675 consent): a check authenticated with a session's password proves only
/// that its sender knows the password, not that it lives at the source address.
@Suite struct PathValidationTests {
    typealias Call = SessionTests.Call
    static let victim = TransportAddress.v4(IPv4Address(203, 0, 113, 99), port: 4444)

    /// The checks full agents answer: USERNAME "<client ufrag>:<our ufrag>", PRIORITY, ICE-CONTROLLED
    /// (a lite agent is controlled), no USE-CANDIDATE, MESSAGE-INTEGRITY with the client's
    /// password, FINGERPRINT last.
    @Test func ourChecksHaveTheShapeFullAgentsAnswer() throws {
        let call = try Call()
        call.connect()
        let check = try #require(call.client.serverChecks.first)
        let message = try STUNMessage.parse(check)
        #expect(message.type == .bindingRequest)
        let username = try #require(message.username)
        #expect(Array(check[username]) == Array("\(call.client.ufrag):\(call.client.serverUfrag)".utf8))
        #expect(message.priority == WebRTCSession.checkPriority)
        #expect(message.iceControlled != nil)
        #expect(message.iceControlling == nil)
        #expect(!message.useCandidate)
        #expect(message.hasValidMessageIntegrity(in: check, key: STUNIntegrityKey(shortTermPassword: call.client.password)))
        #expect(!message.hasValidMessageIntegrity(in: check, key: STUNIntegrityKey(shortTermPassword: call.client.serverPassword)))
        #expect(message.hasValidFingerprint(in: check))
        // The validation check and, once it is answered, one more at once (a full agent nominates a
        // succeeded pair when it receives a check on it).
        #expect(call.session.counters.checkResponses == 2)
        #expect(call.client.serverChecks.count == 2)
    }

    /// A client that authenticates but never answers (its checks are spoofed, or it is broken) is
    /// never connected: no DTLS flight goes out, and the call ends with its own reason.
    @Test func anAddressThatNeverAnswersGetsNoDTLSAndTheCallEnds() throws {
        let call = try Call()
        call.client.answersChecks = false
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        #expect(call.session.state == .waitingForICE)
        #expect(call.session.selectedPath == nil)
        let clientHello = call.client.startDTLS()  // two datagrams with DTLS 1.3's post-quantum key share
        call.deliver(fromClient: clientHello)
        #expect(call.client.dtls.state == .handshaking, "no ServerHello toward an unvalidated address")
        // The validation check is retransmitted with a doubling timeout, a few times, then given up.
        call.advance(by: .seconds(10))
        #expect(call.client.serverChecks.count == 5)
        #expect(call.session.counters.drops[.unvalidatedSource] == clientHello.count, "the held ClientHello expired unanswered")
        call.advance(by: .seconds(21))
        #expect(call.session.state == .closed(.pathUnverified))
    }

    /// The client's ClientHello can overtake its answer to our check: it waits for the answer.
    @Test func aClientHelloAheadOfTheAnswerIsHeldUntilTheAddressAnswers() throws {
        let call = try Call()
        var heldAnswers: [[UInt8]] = []
        call.lose = { fromClient, bytes in
            guard fromClient, let message = try? STUNMessage.parse(bytes), message.type == .bindingSuccess else { return false }
            heldAnswers.append(bytes)
            return true
        }
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        call.deliver(fromClient: call.client.startDTLS())
        #expect(call.session.state == .waitingForICE)
        #expect(call.client.dtls.state == .handshaking)
        call.lose = { _, _ in false }
        call.deliver(fromClient: heldAnswers)
        #expect(call.session.state == .connected)
        #expect(call.client.isConnected)
        #expect(call.session.counters.drops[.unvalidatedSource] == nil)
    }

    /// The attack docs/relay.md used to list as a known limit: a client with a call of its own spoofs
    /// an authenticated, nominating check from a victim's address. The path does not move, media
    /// keeps flowing to the real client, and the victim gets only a couple of small STUN messages
    /// (the answer to "its" check and our checks), never media or DTLS.
    @Test func aSpoofedNominatingCheckFromAVictimMovesNothing() throws {
        let call = try Call()
        call.connect()
        let real = try #require(call.session.selectedPath)
        for _ in 0..<3 { call.inject(call.client.check(useCandidate: true), from: Self.victim) }
        #expect(call.session.selectedPath == real)
        #expect(!call.session.hasConsent(from: PeerPath(client: Self.victim)))
        call.deliver(fromClient: [call.client.audioPacket(timestamp: 960, payload: [1, 2, 3])])
        #expect(call.client.audio.last?.payload == [1, 2, 3], "the echo still reaches the real client")
        call.advance(by: .seconds(10))
        let toVictim = call.sentElsewhere[Self.victim] ?? []
        #expect(toVictim.allSatisfy { PacketKind.classify($0) == .stun }, "only STUN toward an unvalidated address")
        #expect(toVictim.allSatisfy { $0.count <= 120 }, "small messages, no amplification")
        let requests = toVictim.filter { (try? STUNMessage.parse($0))?.type == .bindingRequest }
        #expect(requests.count == 5, "one validation, retransmitted four times")
        #expect(call.session.state == .connected)
    }

    /// A genuine check captured and replayed from other addresses (so it authenticates) gets no
    /// answer and starts no check: its transaction id was first seen from the client.
    @Test func replayedChecksReflectNothing() throws {
        let call = try Call()
        let check = call.client.check(useCandidate: true)
        call.deliver(fromClient: [check])
        call.deliver(fromClient: call.client.startDTLS())
        #expect(call.session.state == .connected)
        for port in UInt16(1)...20 { call.inject(check, from: .v4(IPv4Address(203, 0, 113, 7), port: port)) }
        #expect(call.sentElsewhere.isEmpty)
        #expect(call.session.counters.drops[.replayedCheck] == 20)
        // The client's own retransmission of it is still answered.
        let answered = call.client.successResponses.count
        call.deliver(fromClient: [check])
        #expect(call.client.successResponses.count == answered + 1)
    }

    /// An answer counts only from the address the check went to, for a check still outstanding, and
    /// with the client's password.
    @Test func answersFromElsewhereOrForgedDoNotValidate() throws {
        let call = try Call()
        call.client.answersChecks = false
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        let check = try #require(call.client.serverChecks.last)
        let request = try STUNMessage.parse(check)
        call.client.answersChecks = true
        let answer = try #require(check.withUnsafeBytes { call.client.answer(request, $0) })
        // The right answer from another address (spoofing a response is no easier than a request).
        call.inject(answer, from: Self.victim)
        #expect(call.session.counters.drops[.unmatchedResponse] == 1)
        // An answer to a transaction we never sent.
        var forgedID = answer
        forgedID[8] ^= 0x01
        call.deliver(fromClient: [forgedID])
        #expect(call.session.state == .waitingForICE)
        // Signed with the wrong password.
        let wrongKey = try STUNWriter.build(type: .bindingSuccess, transactionID: request.transactionID) { writer throws(STUNBuildError) in
            try writer.appendXORMappedAddress(call.client.address)
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: call.client.serverPassword))
            try writer.appendFingerprint()
        }
        call.deliver(fromClient: [wrongKey])
        #expect(call.session.state == .waitingForICE)
        #expect(call.session.selectedPath == nil)
        // The real answer from the real address.
        call.deliver(fromClient: [answer])
        #expect(call.session.selectedPath == PeerPath(client: call.client.address))
        #expect(call.session.state == .connecting)
    }

    /// Spoofed checks from many addresses reflect at most a bounded number of small requests.
    @Test func spoofedChecksFromManyAddressesAreBoundedPerSession() throws {
        let call = try Call()
        call.connect()
        for index in 0..<200 {
            call.inject(call.client.check(useCandidate: false), from: .v4(IPv4Address(bits: 0xC633_6400 | UInt32(index)), port: 9))
            // The same spoofed source again and again: it gets a few answers, not one per check.
            for _ in 0..<5 { call.inject(call.client.check(useCandidate: false), from: .v4(IPv4Address(bits: 0xC633_6400), port: 9)) }
        }
        call.advance(by: .seconds(20))
        // Everything sent to the 200 spoofed addresses over 20 s: answers and checks, retransmissions included.
        let sent = call.sentElsewhere.values.joined()
        let requests = sent.filter { (try? STUNMessage.parse($0))?.type == .bindingRequest }
        #expect(sent.allSatisfy { $0.count <= 120 })
        // The burst of 8 new addresses, then one a second, each checked at most five times and answered at most eight times.
        #expect(requests.count <= (8 + 20) * 5, "\(requests.count) checks")
        #expect(sent.count - requests.count <= (8 + 20) * 8, "\(sent.count - requests.count) answers")
        #expect(call.sentElsewhere.count <= 8 + 20, "\(call.sentElsewhere.count) addresses got anything")
        #expect(call.session.selectedPath == PeerPath(client: call.client.address))
        #expect(call.session.state == .connected)
    }

    /// Moving to a path validated a while ago: its consent runs from its own last answer, so it is
    /// checked at once, not 4–6 s later (when it might have run out).
    @Test func switchingToAnOlderValidatedPathChecksItAtOnce() throws {
        let call = try Call()
        call.connect()
        let first = call.client.address, second = TransportAddress.v4(IPv4Address(198, 51, 100, 8), port: 62000)
        call.client.address = second
        call.deliver(fromClient: [call.client.check(useCandidate: false)])
        #expect(call.session.hasConsent(from: PeerPath(client: second)))
        #expect(call.session.selectedPath?.client == first, "validated, not nominated: the first path stays")
        call.client.address = first
        call.advance(by: .seconds(25))
        call.client.address = second
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        #expect(call.session.selectedPath?.client == second)
        call.advance(by: .seconds(15))
        #expect(call.session.state == .connected, "the new path's consent was refreshed at once")
    }

    /// A path whose validation lapsed (validated once, then unused past the consent timeout while the
    /// client kept checking it) is validated again when the client needs it: handover keeps working.
    @Test func aLapsedPathIsValidatedAgain() throws {
        let call = try Call()
        call.connect()
        let first = call.client.address, second = TransportAddress.v4(IPv4Address(198, 51, 100, 9), port: 62001)
        call.client.address = second
        call.deliver(fromClient: [call.client.check(useCandidate: false)])
        call.client.address = first
        for _ in 0..<24 {
            call.advance(by: .milliseconds(2500))
            call.inject(call.client.check(useCandidate: false), from: second)  // pings on the spare path
        }
        #expect(!call.session.hasConsent(from: PeerPath(client: second)), "60 s without an answer from there")
        // Wi-Fi goes: the client is reachable only on the spare path now, and nominates it.
        call.client.address = second
        call.deliver(fromClient: [call.client.check(useCandidate: true)])
        // Validated again by the next (or a triggered) check of ours, within a retransmission.
        call.advance(by: .seconds(1))
        #expect(call.session.selectedPath?.client == second)
        call.advance(by: .seconds(40))
        #expect(call.session.state == .connected)
    }

    /// A client that keeps sending checks but stops answering ours loses consent all the same: its
    /// checks do not renew it (only answers do), whatever their rate.
    @Test func checksWithoutAnswersDoNotKeepConsent() throws {
        let call = try Call()
        call.connect()
        call.client.answersChecks = false
        for _ in 0..<400 {
            call.advance(by: .milliseconds(100))
            call.deliver(fromClient: [call.client.check(useCandidate: true)])
            if call.session.isClosed { break }
        }
        #expect(call.session.state == .closed(.consentExpired))
    }

    /// A check with an unknown comprehension-required attribute gets a 420, but only through the same
    /// gate as any answer: spoofed from many addresses, it reflects no more than other checks.
    @Test func unknownAttributeAnswersAreGatedToo() throws {
        let call = try Call()
        call.connect()
        for index in 0..<200 {
            let check = try STUNWriter.build(type: .bindingRequest, transactionID: .random()) { writer throws(STUNBuildError) in
                try writer.appendUsername("\(call.client.serverUfrag):\(call.client.ufrag)")
                try writer.append(STUNAttributeType(rawValue: 0x0077), value: [1, 2, 3, 4])
                try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: call.client.serverPassword))
                try writer.appendFingerprint()
            }
            call.inject(check, from: .v4(IPv4Address(bits: 0xC633_6500 | UInt32(index)), port: 9))
        }
        #expect(call.sentElsewhere.count <= 8, "\(call.sentElsewhere.count) addresses got an answer")
        #expect(call.session.counters.drops[.checkRefused, default: 0] >= 190)
    }

    /// A 403 to our consent check revokes consent at once (RFC 7675 §5.2).
    @Test func aForbiddenAnswerRevokesConsent() throws {
        let call = try Call()
        call.connect()
        call.client.answersChecks = false
        call.advance(by: .seconds(7))
        let check = try #require(call.client.serverChecks.last)
        let request = try STUNMessage.parse(check)
        let forbidden = try STUNWriter.build(type: .bindingError, transactionID: request.transactionID) { writer throws(STUNBuildError) in
            try writer.appendErrorCode(403, reason: "Forbidden")
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: call.client.password))
            try writer.appendFingerprint()
        }
        call.deliver(fromClient: [forbidden])
        #expect(call.session.state == .closed(.consentRevoked))
    }
}
