import ParleyWire
import Testing
@testable import ParleyRelay
@testable import ParleyRouting

/// Two-stage routing, sans-IO: relay A (cluster 1) forwards a flow whose token names cluster 2 to
/// cluster 2's relay B, which routes it to its worker with B's own rules.
@Suite struct TwoStageTests {
    typealias T = RouteTableTests
    /// Cluster 2's key: relay A does not have it.
    static let clusterTwoKeys = RoutingKeyring(current: RoutingKey(id: 5, secret: (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }))
    static let relayB = TransportAddress.v4(IPv4Address(10, 2, 0, 9), port: 3479)
    static let relayA = TransportAddress.v4(IPv4Address(10, 1, 0, 9), port: 3479)
    static let workerB = TransportAddress.v4(IPv4Address(10, 0, 0, 5), port: 40000)

    static func clusterTwoUfrag(cluster: UInt16 = 2) -> String {
        clusterTwoKeys.seal(RoutingToken(keyID: 5, clusterID: cluster, worker: workerB, issuedHour: 100, nonce: 77))
    }

    static func edgePolicy() -> RouteTable.Policy {
        var policy = T.policy()
        policy.clusterID = 1
        policy.clusterRelays = [2: relayB]
        return policy
    }

    let now = Instant(nanoseconds: 1_000_000_000)

    func fromClient(_ table: inout RouteTable, _ bytes: [UInt8], _ client: TransportAddress = T.client) -> RouteTable.ClientDecision {
        bytes.withUnsafeBytes { table.fromClient($0, client: client, now: now) }
    }

    func fromRelay(_ table: inout RouteTable, _ bytes: [UInt8], source: TransportAddress = relayB) -> RouteTable.TransceiverDecision {
        bytes.withUnsafeBytes { table.fromTransceiver($0, client: T.client, source: source, now: now) }
    }

    @Test func theEdgeForwardsAnotherClustersFlowAndCommitsItOnTheClientsAnswer() {
        var edge = RouteTable(keyring: T.keyring, policy: Self.edgePolicy())
        let check = T.check(ufrag: Self.clusterTwoUfrag())
        #expect(fromClient(&edge, check) == .forward(to: Self.relayB))
        #expect(edge.pendingCount == 1)
        // B's answers come back from B's socket (the owning transceiver's check, its success).
        #expect(fromRelay(&edge, T.serverCheck()) == .deliver(to: T.client))
        #expect(fromRelay(&edge, T.success()) == .deliver(to: T.client))
        // Nobody else may answer for the flow.
        #expect(fromRelay(&edge, T.success(), source: .v4(IPv4Address(10, 3, 0, 1), port: 3479)) == .drop(.notRouteOwner))
        // The client's answer to the check commits the route to B; media then goes by lookup.
        #expect(fromClient(&edge, T.success(transaction: STUNTransactionID(5, 5, 5))) == .forward(to: Self.relayB))
        #expect(edge.committedCount == 1)
        #expect(edge.takeCommits() == [RouteTable.Commit(client: T.client, transceiver: Self.relayB)])
        let rtp: [UInt8] = [0x80, 111, 0, 1] + [UInt8](repeating: 0, count: 20)
        #expect(fromClient(&edge, rtp) == .forward(to: Self.relayB))
        #expect(fromRelay(&edge, rtp) == .deliver(to: T.client))
        // A restarted edge learns the route from its store: B is an allowed destination.
        var restarted = RouteTable(keyring: T.keyring, policy: Self.edgePolicy())
        let recovered = restarted.install(client: T.client, transceiver: Self.relayB, now: now)
        let stranger = restarted.install(client: .v4(IPv4Address(198, 51, 100, 9), port: 1),
                                         transceiver: .v4(IPv4Address(192, 0, 2, 1), port: 1), now: now)
        #expect(recovered && !stranger, "a cluster relay is an allowed destination; an address that is neither it nor a worker is not")
    }

    @Test func forwardedFlowsHaveAPendingBudgetOfTheirOwn() {
        var policy = Self.edgePolicy()
        policy.maximumForwardedPending = 2
        var edge = RouteTable(keyring: T.keyring, policy: policy)
        let clients = (1...3).map { TransportAddress.v4(IPv4Address(198, 51, UInt8($0), 1), port: 1) }
        let decisions = clients.map { fromClient(&edge, T.check(ufrag: Self.clusterTwoUfrag()), $0) }
        #expect(decisions == [.forward(to: Self.relayB), .forward(to: Self.relayB), .drop(.pendingFull)])
        #expect(edge.forwardedPendingCount == 2 && edge.pendingCount == 2)
        // Forged tokens of another cluster cannot take this cluster's own slots.
        #expect(fromClient(&edge, T.check(ufrag: T.ufrag()), .v4(IPv4Address(198, 51, 9, 1), port: 1)) == .forward(to: T.worker))
        // They give their budget back as they expire.
        edge.expire(now: now + .seconds(10))
        #expect(edge.forwardedPendingCount == 0 && edge.pendingCount == 0)
        #expect(fromClient(&edge, T.check(ufrag: Self.clusterTwoUfrag()), clients[2]) == .forward(to: Self.relayB))
    }

    @Test func unknownClustersAreDroppedAndForwardedChecksAreFew() {
        var edge = RouteTable(keyring: T.keyring, policy: Self.edgePolicy())
        #expect(fromClient(&edge, T.check(ufrag: Self.clusterTwoUfrag(cluster: 3))) == .drop(.unknownCluster))
        // The edge cannot authenticate what it forwards: a pending flow gets a few dozen checks through.
        let decisions = (0..<40).map { n in
            fromClient(&edge, T.check(ufrag: Self.clusterTwoUfrag(), transaction: STUNTransactionID(UInt32(n), 0, 1)))
        }
        #expect(decisions.prefix(32).allSatisfy { $0 == .forward(to: Self.relayB) })
        #expect(decisions.suffix(8).allSatisfy { $0 == .drop(.pendingNotSTUN) })
        // Its own cluster's tokens still open under its own key.
        #expect(fromClient(&edge, T.check(ufrag: T.ufrag()), .v4(IPv4Address(198, 51, 100, 30), port: 1)) == .forward(to: T.worker))
        // Without cluster relays, a token's cluster id is not looked at (one cluster, as before).
        var plain = RouteTable(keyring: Self.clusterTwoKeys, policy: T.policy())
        #expect(fromClient(&plain, T.check(ufrag: Self.clusterTwoUfrag(cluster: 3))) == .forward(to: Self.workerB))
    }

    /// Another region's relays behind NAT: their datagrams come from the region's egress network,
    /// any address and port; answers go to the configured load balancer, which is not a source.
    @Test func aPeerNetworkIsBelievedWhereTheConfiguredAddressIsALoadBalancer() {
        var policy = T.policy()
        policy.clusterID = 2
        policy.clusterRelays = [1: .v4(IPv4Address(198, 51, 100, 1), port: 4000)]
        policy.peerNetworks = [IPNetwork("10.1.0.0/16")!]
        var peers = PeerRouteTables(keyring: Self.clusterTwoKeys, policy: policy)
        #expect(!peers.isEmpty)
        let check = T.check(ufrag: Self.clusterTwoUfrag())
        func fromPeer(_ peer: TransportAddress) -> RouteTable.ClientDecision {
            check.withUnsafeBytes { peers.fromPeer($0, client: T.client, peer: peer, now: now) }
        }
        #expect(peers.isTrusted(.v4(IPv4Address(10, 1, 200, 3), port: 61000)))
        #expect(!peers.isTrusted(.v4(IPv4Address(10, 2, 0, 3), port: 4000)), "this cluster's own network is no peer")
        #expect(fromPeer(.v4(IPv4Address(10, 3, 0, 1), port: 4000)) == .drop(.untrustedPeer))
        #expect(fromPeer(.v4(IPv4Address(10, 1, 7, 7), port: 33333)) == .forward(to: Self.workerB))
        #expect(fromPeer(.v4(IPv4Address(10, 1, 8, 8), port: 44444)) == .forward(to: Self.workerB), "each node its own table")
        #expect(peers.pendingCount == 2)
        // Without networks, only the configured host is a peer (as before).
        var strict = policy
        strict.peerNetworks = []
        #expect(!PeerRouteTables(keyring: Self.clusterTwoKeys, policy: strict).isTrusted(.v4(IPv4Address(10, 1, 200, 3), port: 61000)))
        #expect(PeerRouteTables(keyring: Self.clusterTwoKeys, policy: strict).isTrusted(.v4(IPv4Address(198, 51, 100, 1), port: 4001)))
    }

    @Test func theOwningClustersRelayRoutesForwardedFlowsWithItsOwnRulesAndAnswersThroughThePeer() {
        var policy = T.policy()
        policy.clusterID = 2
        policy.clusterRelays = [1: Self.relayA]
        var peers = PeerRouteTables(keyring: Self.clusterTwoKeys, policy: policy)
        // Relay A's second worker sends from another port of the same host: believed.
        let socketA = TransportAddress.v4(IPv4Address(10, 1, 0, 9), port: 3480)
        let check = T.check(ufrag: Self.clusterTwoUfrag())
        func fromPeer(_ bytes: [UInt8], peer: TransportAddress = socketA) -> RouteTable.ClientDecision {
            bytes.withUnsafeBytes { peers.fromPeer($0, client: T.client, peer: peer, now: now) }
        }
        func fromWorker(_ bytes: [UInt8]) -> RouteTable.TransceiverDecision {
            bytes.withUnsafeBytes { peers.fromTransceiver($0, client: T.client, source: Self.workerB, peer: socketA, now: now) }
        }
        #expect(fromPeer(check, peer: .v4(IPv4Address(10, 9, 9, 9), port: 3479)) == .drop(.untrustedPeer))
        #expect(fromPeer(check, peer: .v4(IPv4Address(10, 1, 0, 9), port: 3479 + 64)) == .drop(.untrustedPeer),
                "the peer's host, but past its workers' ports")
        #expect(fromPeer(check, peer: .v4(IPv4Address(10, 1, 0, 9), port: 3478)) == .drop(.untrustedPeer))
        // A trusted peer's datagram that opens nothing leaves no table behind.
        #expect(fromPeer(T.check(ufrag: "not-a-token")) == .drop(.badToken))
        #expect(peers.ingressID(of: socketA) == nil)
        #expect(fromPeer(check) == .forward(to: Self.workerB))
        // The table's own ingress id, flagged apart from a relay's own workers', maps back to it.
        let ingress = peers.ingressID(of: socketA)
        #expect(ingress.map { $0 & PeerRouteTables.peerIngressFlag != 0 } == true)
        #expect(ingress.flatMap { peers.peer(ingressID: $0) } == socketA)
        #expect(peers.peer(ingressID: 0) == nil && peers.peer(ingressID: PeerRouteTables.peerIngressFlag | 63) == nil)
        #expect(peers.peer(routing: T.client) == socketA)
        #expect(peers.peer(routing: .v4(IPv4Address(198, 51, 100, 99), port: 1)) == nil)
        // Pending: B holds the same rules as for a direct client (only STUN goes back, no commit yet).
        let serverCheck = try! STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(5, 5, 5)) { writer throws(STUNBuildError) in
            try writer.appendUsername("cli1:\(Self.clusterTwoUfrag())")
            try writer.appendICEControlled(tieBreaker: 1)
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: "the-client-password-here"))
            try writer.appendFingerprint()
        }
        #expect(fromWorker(serverCheck) == .deliver(to: T.client))
        #expect(fromWorker(T.success()) == .deliver(to: T.client))
        let rtp: [UInt8] = [0x80, 111, 0, 1] + [UInt8](repeating: 0, count: 20)
        #expect(fromWorker(rtp) == .drop(.pendingNotSTUN))
        #expect(fromPeer(T.success(transaction: STUNTransactionID(5, 5, 5))) == .forward(to: Self.workerB))
        #expect(peers.committedCount == 1)
        let commits = peers.takeCommits()
        #expect(commits.count == 1 && commits[0].commit == RouteTable.Commit(client: T.client, transceiver: Self.workerB)
            && commits[0].peer == socketA)
        #expect(fromWorker(rtp) == .deliver(to: T.client))
        // One hop only: a token of yet another cluster, forwarded here, is not forwarded again.
        let other = T.check(ufrag: Self.clusterTwoKeys.seal(RoutingToken(keyID: 5, clusterID: 3, worker: Self.workerB, issuedHour: 100, nonce: 5)))
        let stranger = TransportAddress.v4(IPv4Address(198, 51, 100, 50), port: 2)
        let again = other.withUnsafeBytes { peers.fromPeer($0, client: stranger, peer: socketA, now: now) }
        #expect(again == .forward(to: Self.workerB), "cluster 2's own key opens it: it goes to its worker, never to a third relay")
        // A table that routes nothing any more is forgotten.
        peers.expire(now: now + .seconds(3600))
        #expect(peers.peer(routing: T.client) == nil && peers.committedCount == 0 && peers.pendingCount == 0)
    }
}
