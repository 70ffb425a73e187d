import ParleyWire
import Testing
@testable import ParleyRelay
@testable import ParleyRouting
import ParleyTestSupport

@Suite struct RouteTableTests {
    static let keyring = RoutingKeyring(current: RoutingKey(id: 2, secret: (0..<32).map { UInt8($0 &* 7) }))
    static let worker = TransportAddress.v4(IPv4Address(10, 0, 0, 5), port: 40000)
    static let client = TransportAddress.v4(IPv4Address(198, 51, 100, 20), port: 51000)

    static func policy() -> RouteTable.Policy {
        var policy = RouteTable.Policy()
        policy.workerNetworks = [IPNetwork("10.0.0.0/8")!]
        policy.maximumPending = 100
        policy.maximumRoutes = 1000
        return policy
    }

    static func ufrag(worker: TransportAddress = worker, keyring: RoutingKeyring = keyring) -> String {
        keyring.seal(RoutingToken(keyID: keyring.currentKeyID, clusterID: 1, worker: worker, issuedHour: 100, nonce: 99))
    }

    static func check(ufrag: String, transaction: STUNTransactionID = STUNTransactionID(1, 2, 3)) -> [UInt8] {
        try! STUNWriter.build(type: .bindingRequest, transactionID: transaction) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(ufrag):cli1")
            try writer.appendUseCandidate()
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: "whatever-the-relay-cannot-check"))
            try writer.appendFingerprint()
        }
    }

    static func success(transaction: STUNTransactionID = STUNTransactionID(1, 2, 3)) -> [UInt8] {
        try! STUNWriter.build(type: .bindingSuccess, transactionID: transaction) { writer throws(STUNBuildError) in
            try writer.appendXORMappedAddress(client)
            try writer.appendFingerprint()
        }
    }

    /// The transceiver's own check toward the client ("<client ufrag>:<token>": no token before the colon).
    static func serverCheck(transaction: STUNTransactionID = STUNTransactionID(5, 5, 5)) -> [UInt8] {
        try! STUNWriter.build(type: .bindingRequest, transactionID: transaction) { writer throws(STUNBuildError) in
            try writer.appendUsername("cli1:\(ufrag())")
            try writer.appendICEControlled(tieBreaker: 1)
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: "the-client-password-here"))
            try writer.appendFingerprint()
        }
    }

    let dtls: [UInt8] = [22, 0xfe, 0xfd] + [UInt8](repeating: 0, count: 30)

    /// A client's whole first exchange: its check, the transceiver's answer and check, its answer.
    func connect(_ table: inout RouteTable, _ client: TransportAddress, ufrag: String = RouteTableTests.ufrag(),
                 worker: TransportAddress = RouteTableTests.worker, serverCheck: STUNTransactionID = STUNTransactionID(5, 5, 5))
        -> RouteTable.ClientDecision {
        // The transceiver answers and checks only what reached it.
        let first = fromClient(&table, Self.check(ufrag: ufrag), client)
        guard first == .forward(to: worker) else { return first }
        _ = fromTransceiver(&table, Self.serverCheck(transaction: serverCheck), client, worker)
        _ = fromTransceiver(&table, Self.success(), client, worker)
        return fromClient(&table, Self.success(transaction: serverCheck), client)
    }
    let now = Instant(nanoseconds: 1_000_000_000)

    func fromClient(_ table: inout RouteTable, _ bytes: [UInt8], _ client: TransportAddress, at instant: Instant? = nil)
        -> RouteTable.ClientDecision {
        bytes.withUnsafeBytes { table.fromClient($0, client: client, now: instant ?? now) }
    }

    func fromTransceiver(_ table: inout RouteTable, _ bytes: [UInt8], _ client: TransportAddress, _ source: TransportAddress)
        -> RouteTable.TransceiverDecision {
        bytes.withUnsafeBytes { table.fromTransceiver($0, client: client, source: source, now: now) }
    }

    @Test func aCheckWithAValidTokenIsForwardedAndCommittedWhenTheClientAnswersTheTransceiver() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let check = Self.check(ufrag: Self.ufrag())
        #expect(fromClient(&table, check, Self.client) == .forward(to: Self.worker))
        #expect(table.pendingCount == 1 && table.committedCount == 0)
        // The transceiver checks the address first, then answers: both reach the client, and
        // neither commits (a check's source address can be spoofed).
        #expect(fromTransceiver(&table, Self.serverCheck(), Self.client, Self.worker) == .deliver(to: Self.client))
        #expect(fromTransceiver(&table, Self.success(), Self.client, Self.worker) == .deliver(to: Self.client))
        #expect(table.pendingCount == 1 && table.committedCount == 0)
        // Nothing else goes either way before the client answers, but for the client's first few
        // DTLS datagrams toward the transceiver (which holds them until the client answers).
        #expect((0..<6).map { _ in fromClient(&table, dtls, Self.client) }
            == Array(repeating: .forward(to: Self.worker), count: 4) + Array(repeating: .drop(.pendingNotSTUN), count: 2))
        #expect(fromClient(&table, [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], Self.client) == .drop(.pendingNotSTUN))
        #expect(fromTransceiver(&table, dtls, Self.client, Self.worker) == .drop(.pendingNotSTUN))
        // An answer to some other transaction is no proof.
        #expect(fromClient(&table, Self.success(transaction: STUNTransactionID(5, 5, 6)), Self.client) == .drop(.unmatchedAnswer))
        // The client's answer to the transceiver's check commits the route.
        #expect(fromClient(&table, Self.success(transaction: STUNTransactionID(5, 5, 5)), Self.client) == .forward(to: Self.worker))
        #expect(table.pendingCount == 0 && table.committedCount == 1)
        let commits = table.takeCommits()
        #expect(commits == [RouteTable.Commit(client: Self.client, transceiver: Self.worker)])
        // From now on, anything goes both ways by lookup.
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: Self.worker))
        #expect(fromTransceiver(&table, dtls, Self.client, Self.worker) == .deliver(to: Self.client))
    }

    @Test func aNewKeyringOpensNewFlowsWhileCommittedRoutesOfARetiredKeyGoOn() {
        var policy = Self.policy()
        policy.storeLifetime = .seconds(30)
        var table = RouteTable(keyring: Self.keyring, policy: policy)
        let oldUfrag = Self.ufrag()
        #expect(connect(&table, Self.client) == .forward(to: Self.worker))
        _ = table.takeCommits()
        let next = RoutingKey(id: 3, secret: (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 11) })
        // Both keys (the new one sealing), then the new one alone: the old key retired.
        table.replaceKeyring(RoutingKeyring(current: next, others: [Self.keyring.key(id: 2)!]))
        #expect(table.keyring.currentKeyID == 3)
        table.replaceKeyring(RoutingKeyring(current: next))
        // The committed call: media both ways, its consent checks (old token) reach the owner and
        // refresh the stored route once a third of its lifetime has passed.
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: Self.worker))
        #expect(fromTransceiver(&table, dtls, Self.client, Self.worker) == .deliver(to: Self.client))
        let later = now + .seconds(11)
        #expect(fromClient(&table, Self.check(ufrag: oldUfrag, transaction: STUNTransactionID(9, 9, 9)), Self.client, at: later)
            == .forward(to: Self.worker))
        #expect(table.takeCommits() == [RouteTable.Commit(client: Self.client, transceiver: Self.worker)])
        // A new flow under the retired key is refused; one under the new key opens.
        let newcomer = TransportAddress.v4(IPv4Address(198, 51, 100, 21), port: 51001)
        #expect(fromClient(&table, Self.check(ufrag: oldUfrag), newcomer) == .drop(.badToken))
        let newUfrag = Self.ufrag(keyring: RoutingKeyring(current: next))
        #expect(fromClient(&table, Self.check(ufrag: newUfrag), newcomer) == .forward(to: Self.worker))
    }

    @Test func forgedMalformedAndForeignTokensAreDropped() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let stranger = RoutingKeyring(current: RoutingKey(id: 2, secret: (0..<32).map { UInt8(255 - $0) }))
        for ufrag in ["xOn5", String(repeating: "A", count: 32), Self.ufrag(keyring: stranger)] {
            #expect(fromClient(&table, Self.check(ufrag: ufrag), Self.client) == .drop(.badToken))
        }
        var forged = Array(Self.ufrag().utf8)
        forged[10] = forged[10] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(fromClient(&table, Self.check(ufrag: String(decoding: forged, as: UTF8.self)), Self.client) == .drop(.badToken))
        // Not STUN at all, from an unknown client: the route store may know it.
        #expect(fromClient(&table, dtls, Self.client) == .unknown)
        #expect(table.count == 0)
    }

    @Test func tokensNamingAddressesOutsideTheWorkerNetworksAreRefused() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let metadata = TransportAddress.v4(IPv4Address(169, 254, 169, 254), port: 80)
        #expect(fromClient(&table, Self.check(ufrag: Self.ufrag(worker: metadata)), Self.client) == .drop(.workerNotAllowed))
        let installed = table.install(client: Self.client, transceiver: metadata, now: now)
        #expect(!installed)
    }

    @Test func aPendingFlowThatNeverGetsItsAnswerExpires() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        _ = Self.check(ufrag: Self.ufrag()).withUnsafeBytes { table.fromClient($0, client: Self.client, now: now) }
        let early = table.expire(now: now + .seconds(4))
        let late = table.expire(now: now + .seconds(5))
        #expect(early == 0 && late == 1)
        #expect(table.count == 0 && table.pendingCount == 0)
        // A success response for another transaction does not commit.
        _ = Self.check(ufrag: Self.ufrag()).withUnsafeBytes { table.fromClient($0, client: Self.client, now: now) }
        #expect(fromTransceiver(&table, Self.success(transaction: STUNTransactionID(9, 9, 9)), Self.client, Self.worker) == .drop(.pendingNotSTUN))
        #expect(table.committedCount == 0)
    }

    @Test func committedRoutesExpireWhenIdle() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let installed = table.install(client: Self.client, transceiver: Self.worker, now: now)
        #expect(installed)
        _ = dtls.withUnsafeBytes { table.fromClient($0, client: Self.client, now: now + .seconds(50)) }
        let kept = table.expire(now: now + .seconds(100))
        #expect(kept == 0, "traffic at 50 s keeps it")
        let gone = table.expire(now: now + .seconds(111))
        #expect(gone == 1)
        #expect(table.committedCount == 0)
    }

    @Test func reflectionAttemptsAreDropped() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let installed = table.install(client: Self.client, transceiver: Self.worker, now: now)
        #expect(installed)
        let otherWorker = TransportAddress.v4(IPv4Address(10, 0, 0, 6), port: 40000)
        // Another transceiver (or anyone) naming our client: not its route.
        #expect(fromTransceiver(&table, dtls, Self.client, otherWorker) == .drop(.notRouteOwner))
        // A client nobody routed: nothing to deliver to.
        let victim = TransportAddress.v4(IPv4Address(203, 0, 113, 9), port: 53)
        #expect(fromTransceiver(&table, dtls, victim, Self.worker) == .unknown)
    }

    @Test func floodsOfRandomUfragsAndSourcesKeepMemoryBounded() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        var generator = SplitMix64(seed: 1)
        var outcomes: [RouteTable.ClientDecision: Int] = [:]
        // 20,000 checks with random ufrags from random addresses: none opens.
        for _ in 0..<20_000 {
            let ufrag = ICECredentials.randomString(length: 32, using: &generator)
            let source = TransportAddress.v4(IPv4Address(bits: UInt32(truncatingIfNeeded: generator.next())), port: 1000)
            let decision = Self.check(ufrag: ufrag).withUnsafeBytes { table.fromClient($0, client: source, now: now) }
            outcomes[decision, default: 0] += 1
        }
        #expect(outcomes == [.drop(.badToken): 20_000])
        #expect(table.count == 0)
        // One valid token replayed from 5,000 random sources: it gets a few pending slots, not all.
        let check = Self.check(ufrag: Self.ufrag())
        for _ in 0..<5_000 {
            let source = TransportAddress.v4(IPv4Address(bits: UInt32(truncatingIfNeeded: generator.next())), port: 2000)
            _ = check.withUnsafeBytes { table.fromClient($0, client: source, now: now) }
        }
        #expect(table.pendingCount == RouteTable.maximumPendingPerToken)
        // Many different valid tokens from random sources: pending flows stop at the table's limit.
        for nonce in 0..<5_000 {
            let ufrag = Self.keyring.seal(RoutingToken(keyID: 2, clusterID: 1, worker: Self.worker, issuedHour: 100,
                                                       nonce: UInt32(1000 + nonce)))
            let source = TransportAddress.v4(IPv4Address(bits: UInt32(truncatingIfNeeded: generator.next())), port: 3000)
            _ = fromClient(&table, Self.check(ufrag: ufrag), source)
        }
        #expect(table.pendingCount == Self.policy().maximumPending)
        #expect(table.count == Self.policy().maximumPending)
        table.expire(now: now + .seconds(6))
        #expect(table.count == 0 && table.pendingCount == 0)
    }
}


extension RouteTableTests {
    @Test func consentChecksRefreshTheStoredRoute() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let installed = table.install(client: Self.client, transceiver: Self.worker, now: now)
        #expect(installed)
        let check = Self.check(ufrag: Self.ufrag())
        _ = fromClient(&table, check, Self.client, at: now + .seconds(5))
        let early = table.takeCommits()
        #expect(early.isEmpty, "fresh enough")
        _ = fromClient(&table, dtls, Self.client, at: now + .seconds(11))
        let media = table.takeCommits()
        #expect(media.isEmpty, "only checks refresh")
        _ = fromClient(&table, check, Self.client, at: now + .seconds(11))
        let refreshed = table.takeCommits()
        #expect(refreshed == [RouteTable.Commit(client: Self.client, transceiver: Self.worker)])
    }
}

extension RouteTableTests {
    /// The client's address now belongs to a new call on another worker (a reused NAT port): the
    /// route moves when that worker answers, and not before.
    @Test func aValidCheckNamingAnotherWorkerMovesTheRouteOnItsAnswer() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let installed = table.install(client: Self.client, transceiver: Self.worker, now: now)
        #expect(installed)
        let other = TransportAddress.v4(IPv4Address(10, 0, 0, 6), port: 40001)
        let transaction = STUNTransactionID(7, 7, 7)
        let check = Self.check(ufrag: Self.ufrag(worker: other), transaction: transaction)
        #expect(fromClient(&table, check, Self.client) == .forward(to: other))
        // Until the client answers the new worker's check, media still goes to the old one; the new
        // one may send nothing but its answer and its check.
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: Self.worker))
        #expect(fromTransceiver(&table, dtls, Self.client, other) == .drop(.notRouteOwner))
        #expect(fromTransceiver(&table, Self.serverCheck(), Self.client, other) == .deliver(to: Self.client))
        #expect(fromTransceiver(&table, Self.success(transaction: transaction), Self.client, other) == .deliver(to: Self.client))
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: Self.worker))
        #expect(fromClient(&table, Self.success(transaction: STUNTransactionID(5, 5, 5)), Self.client) == .forward(to: other))
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: other))
        #expect(fromTransceiver(&table, dtls, Self.client, Self.worker) == .drop(.notRouteOwner))
        #expect(table.committedCount == 1, "the route changed hands; it is still one route")
        let commits = table.takeCommits()
        #expect(commits == [RouteTable.Commit(client: Self.client, transceiver: other)])
    }

    @Test func answersToEarlierRetransmittedChecksStillPass() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let first = STUNTransactionID(1, 1, 1), second = STUNTransactionID(2, 2, 2)
        _ = fromClient(&table, Self.check(ufrag: Self.ufrag(), transaction: first), Self.client)
        _ = fromClient(&table, Self.check(ufrag: Self.ufrag(), transaction: second), Self.client)
        #expect(fromTransceiver(&table, Self.success(transaction: first), Self.client, Self.worker) == .deliver(to: Self.client))
        let ours = STUNTransactionID(3, 3, 3), retry = STUNTransactionID(4, 4, 4)
        _ = fromTransceiver(&table, Self.serverCheck(transaction: ours), Self.client, Self.worker)
        _ = fromTransceiver(&table, Self.serverCheck(transaction: retry), Self.client, Self.worker)
        #expect(fromClient(&table, Self.success(transaction: ours), Self.client) == .forward(to: Self.worker))
        #expect(table.committedCount == 1 && table.pendingCount == 0)
    }

    /// A client of one session spoofs its checks from a victim's address: the transceiver answers and
    /// checks the victim, who never answers: no route, and nothing but STUN — SPED's DTLS riding it
    /// included — up to one flight plus three times what the client sent.
    @Test func aSpoofedSourceNeverCommits() throws {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let victim = TransportAddress.v4(IPv4Address(203, 0, 113, 50), port: 5060)
        let check = Self.check(ufrag: Self.ufrag())
        #expect(fromClient(&table, check, victim) == .forward(to: Self.worker))
        #expect(fromTransceiver(&table, Self.serverCheck(), victim, Self.worker) == .deliver(to: victim))
        #expect(fromTransceiver(&table, Self.success(), victim, Self.worker) == .deliver(to: victim))
        #expect(fromTransceiver(&table, dtls, victim, Self.worker) == .drop(.pendingNotSTUN))
        var broken = Self.serverCheck()
        broken += [UInt8](repeating: 0, count: 400)  // its length field no longer matches: not STUN
        #expect(fromTransceiver(&table, broken, victim, Self.worker) == .drop(.pendingNotSTUN))
        // An answer carrying a DTLS datagram (SPED), again and again: delivered up to the allowance.
        let sped = try STUNWriter.build(type: .bindingSuccess, transactionID: STUNTransactionID(1, 2, 3)) { writer throws(STUNBuildError) in
            try writer.appendXORMappedAddress(victim)
            try writer.appendDTLSInSTUN([22, 0xFE, 0xFD] + [UInt8](repeating: 0, count: 1000))
            try writer.appendFingerprint()
        }
        var delivered = Self.serverCheck().count + Self.success().count
        for _ in 0..<10 where fromTransceiver(&table, sped, victim, Self.worker) == .deliver(to: victim) { delivered += sped.count }
        #expect(delivered > RouteTable.pendingFlightAllowance, "a flight's worth rides STUN, and more for the check")
        #expect(delivered <= RouteTable.pendingFlightAllowance + 3 * check.count)
        #expect(fromTransceiver(&table, sped, victim, Self.worker) == .drop(.pendingAllowance))
        // Everything counts: once spent, plain-sized answers stop too.
        for _ in 0..<64 where fromTransceiver(&table, Self.success(), victim, Self.worker) == .deliver(to: victim) { delivered += Self.success().count }
        #expect(delivered <= RouteTable.pendingFlightAllowance + 3 * check.count)
        #expect(fromTransceiver(&table, Self.success(), victim, Self.worker) == .drop(.pendingAllowance))
        // A datagram beyond any path's MTU is never a pending flow's.
        let oversized = try STUNWriter.build(type: .bindingSuccess, transactionID: STUNTransactionID(1, 2, 3), capacity: 2048) { writer throws(STUNBuildError) in
            try writer.appendDTLSInSTUN([UInt8](repeating: 22, count: 1600))
        }
        #expect(fromTransceiver(&table, oversized, victim, Self.worker) == .drop(.pendingNotSTUN))
        #expect(table.committedCount == 0 && !table.hasCommits)
        table.expire(now: now + .seconds(5))
        #expect(table.count == 0)
    }

    /// SPED's first check carries the ClientHello: ~1 KB opens a pending flow like a plain check, and
    /// its bytes earn the flow's allowance. A transceiver's check that opens a flow (no client bytes
    /// yet) may only be plain-sized; a candidate worker named on a committed route gets its own
    /// allowance from the checks that named it, not the route's.
    @Test func largeSTUNOpensAndIsBoundedOnEveryPath() throws {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let big = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(8, 8, 8), capacity: 1500) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(Self.ufrag()):cli1")
            try writer.appendDTLSInSTUN([22, 0xFE, 0xFD] + [UInt8](repeating: 1, count: 1000))
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: "whatever-the-relay-cannot-check"))
            try writer.appendFingerprint()
        }
        #expect(big.count > 1000)
        #expect(fromClient(&table, big, Self.client) == .forward(to: Self.worker))
        #expect(table.pendingCount == 1)
        func answer(_ id: STUNTransactionID, size: Int) throws -> [UInt8] {
            try STUNWriter.build(type: .bindingSuccess, transactionID: id, capacity: 1500) { writer throws(STUNBuildError) in
                try writer.appendDTLSInSTUN([UInt8](repeating: 22, count: size))
            }
        }
        var delivered = 0
        let large = try answer(STUNTransactionID(8, 8, 8), size: 1000)
        for _ in 0..<32 where fromTransceiver(&table, large, Self.client, Self.worker) == .deliver(to: Self.client) { delivered += large.count }
        #expect(delivered <= RouteTable.pendingFlightAllowance + 3 * big.count && delivered > RouteTable.pendingFlightAllowance)

        // A transceiver's check toward an unknown client opens a flow only at plain size.
        let unknown = TransportAddress.v4(IPv4Address(198, 51, 100, 9), port: 7000)
        var serverCheck = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(6, 6, 6), capacity: 1500) { writer throws(STUNBuildError) in
            try writer.appendUsername("cli1:\(Self.ufrag())")
            try writer.appendDTLSInSTUN([UInt8](repeating: 22, count: 600))
            try writer.appendFingerprint()
        }
        #expect(fromTransceiver(&table, serverCheck, unknown, Self.worker) == .unknown, "left to the route store")
        serverCheck = Self.serverCheck()
        #expect(fromTransceiver(&table, serverCheck, unknown, Self.worker) == .deliver(to: unknown))

        // A committed client's check naming another worker: that candidate may answer it with large
        // STUN only within what the check earned.
        var committed = RouteTable(keyring: Self.keyring, policy: Self.policy())
        let installed = committed.install(client: Self.client, transceiver: Self.worker, now: now)
        #expect(installed)
        let other = TransportAddress.v4(IPv4Address(10, 0, 0, 6), port: 40001)
        let naming = Self.check(ufrag: Self.ufrag(worker: other), transaction: STUNTransactionID(4, 4, 4))
        #expect(fromClient(&committed, naming, Self.client) == .forward(to: other))
        var candidateDelivered = 0
        let candidateAnswer = try answer(STUNTransactionID(4, 4, 4), size: 1000)
        for _ in 0..<32 where fromTransceiver(&committed, candidateAnswer, Self.client, other) == .deliver(to: Self.client) {
            candidateDelivered += candidateAnswer.count
        }
        #expect(candidateDelivered <= RouteTable.pendingFlightAllowance + 3 * naming.count && candidateDelivered > 0)
        #expect(fromTransceiver(&committed, try answer(STUNTransactionID(4, 4, 4), size: 1000), Self.client, other) == .drop(.pendingAllowance))
    }

    /// ~512 old tokens replayed from one host used to fill a worker's pending table: one network gets
    /// its share, and everyone else keeps connecting.
    @Test func oneNetworkCannotTakeThePendingTable() {
        var policy = Self.policy()
        policy.maximumPending = 4096
        var table = RouteTable(keyring: Self.keyring, policy: policy)
        // A neighbour in the same /24 whose check its transceiver answered.
        let neighbour = TransportAddress.v4(IPv4Address(192, 0, 2, 250), port: 9999)
        _ = fromClient(&table, Self.check(ufrag: Self.ufrag()), neighbour)
        _ = fromTransceiver(&table, Self.serverCheck(), neighbour, Self.worker)
        var accepted = 0
        for nonce in 0..<512 {
            let ufrag = Self.keyring.seal(RoutingToken(keyID: 2, clusterID: 1, worker: Self.worker, issuedHour: 100,
                                                       nonce: UInt32(5000 + nonce)))
            let source = TransportAddress.v4(IPv4Address(192, 0, 2, UInt8(truncatingIfNeeded: nonce)), port: UInt16(10_000 + nonce))
            // Over two seconds: flows left unanswered for a second make room for new ones.
            let at = now + .milliseconds(Int64(nonce) * 4)
            if fromClient(&table, Self.check(ufrag: ufrag), source, at: at) != .drop(.pendingFull) { accepted += 1 }
        }
        // The network's 64 slots, each given to a newcomer once its holder went a second unanswered:
        // about 64 flows a second reach the transceiver, whatever the rate of the flood (here 250/s).
        #expect(table.pendingCount == policy.maximumPendingPerNetwork)
        #expect((2 * 63)...(3 * 63) ~= accepted, "\(accepted) of 512 in 2 s")
        #expect(table.route(for: neighbour) != nil, "a flow its transceiver answered is never the one that goes")
        #expect(fromClient(&table, Self.success(transaction: STUNTransactionID(5, 5, 5)), neighbour) == .forward(to: Self.worker))
        #expect(connect(&table, Self.client) == .forward(to: Self.worker), "a legitimate call elsewhere still connects")
        #expect(table.committedCount == 2)
    }

    /// One session that really owns many ports (so it can answer from each) still commits only a few routes.
    @Test func aSessionCommitsABoundedNumberOfRoutes() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        var outcomes: [RouteTable.ClientDecision: Int] = [:]
        for port in 0..<20 {
            let source = TransportAddress.v4(IPv4Address(198, 51, 100, 20), port: UInt16(40_000 + port))
            outcomes[connect(&table, source), default: 0] += 1
        }
        let limit = Self.policy().maximumRoutesPerSession
        // Past the limit the answers are dropped, and those flows, left pending, soon use up the
        // session's pending share too.
        #expect(outcomes == [.forward(to: Self.worker): limit, .drop(.sessionRoutesFull): RouteTable.maximumPendingPerToken,
                             .drop(.pendingFull): 20 - limit - RouteTable.maximumPendingPerToken])
        #expect(table.committedCount == limit)
        #expect(table.takeCommits().count == limit, "and so a bounded number of store writes")
        // Routes idle out; then the session may commit again.
        table.expire(now: now + .seconds(61))
        #expect(connect(&table, Self.client) == .forward(to: Self.worker))
    }

    /// After a restart without a route store, a transceiver's consent check toward a client the relay
    /// does not know opens a pending route; the client's answer commits it. Clients that send no
    /// checks of their own come back this way.
    @Test func aTransceiversCheckRecoversAClientThatSendsNoChecks() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        #expect(fromTransceiver(&table, dtls, Self.client, Self.worker) == .unknown, "media alone opens nothing")
        let outsider = TransportAddress.v4(IPv4Address(192, 168, 1, 1), port: 40000)
        #expect(fromTransceiver(&table, Self.serverCheck(), Self.client, outsider) == .unknown)
        #expect(fromTransceiver(&table, Self.serverCheck(), Self.client, Self.worker) == .deliver(to: Self.client))
        #expect(table.pendingCount == 1)
        #expect(fromClient(&table, [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], Self.client) == .drop(.pendingNotSTUN))
        // Even a compromised transceiver gets only a few checks through to an address that does not answer.
        let sent = (0..<20).map { fromTransceiver(&table, Self.serverCheck(transaction: STUNTransactionID(6, 6, UInt32($0))), Self.client, Self.worker) }
        #expect(sent.filter { $0 == .deliver(to: Self.client) }.count == Int(RouteTable.maximumChecksWhilePending) - 1)
        let last = STUNTransactionID(6, 6, UInt32(RouteTable.maximumChecksWhilePending) - 2)
        #expect(fromClient(&table, Self.success(transaction: last), Self.client) == .forward(to: Self.worker))
        #expect(table.committedCount == 1)
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: Self.worker))
    }
}
