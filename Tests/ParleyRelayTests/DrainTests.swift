import ParleyWire
import Testing
@testable import ParleyRelay
@testable import ParleyRouting

/// A draining route table: nothing new starts, what is committed goes on.
extension RouteTableTests {
    @Test func aDrainingTableKeepsCommittedRoutesBothWaysAndRefreshesTheStore() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        #expect(connect(&table, Self.client) == .forward(to: Self.worker))
        _ = table.takeCommits()
        table.draining = true
        // Media, checks and answers on the committed route, both ways, as before.
        #expect(fromClient(&table, dtls, Self.client) == .forward(to: Self.worker))
        #expect(fromTransceiver(&table, dtls, Self.client, Self.worker) == .deliver(to: Self.client))
        #expect(fromTransceiver(&table, Self.serverCheck(), Self.client, Self.worker) == .deliver(to: Self.client))
        #expect(fromClient(&table, Self.check(ufrag: Self.ufrag()), Self.client, at: now + .seconds(5)) == .forward(to: Self.worker))
        // Its store entry is still refreshed a third of the way into its lifetime, so another relay
        // can take the call over from the store if this one is stopped before the call ends.
        #expect(fromClient(&table, Self.check(ufrag: Self.ufrag()), Self.client, at: now + .seconds(11)) == .forward(to: Self.worker))
        #expect(table.takeCommits() == [RouteTable.Commit(client: Self.client, transceiver: Self.worker)])
        #expect(table.committedCount == 1)
        // Traffic keeps it; silence for the idle timeout ends it, and then the table is empty.
        #expect(table.expire(now: now + .seconds(70)) == 0)
        #expect(table.expire(now: now + .seconds(71)) == 1)
        #expect(table.committedCount == 0 && table.count == 0)
    }

    @Test func aDrainingTableRefusesEveryWayANewFlowStarts() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        // A flow pending when the drain begins (a call that had just sent its first check).
        let early = TransportAddress.v4(IPv4Address(198, 51, 100, 30), port: 4000)
        #expect(fromClient(&table, Self.check(ufrag: Self.ufrag()), early) == .forward(to: Self.worker))
        _ = fromTransceiver(&table, Self.serverCheck(), early, Self.worker)
        // A committed route, and the client's address then reused by a new call on another worker.
        #expect(connect(&table, Self.client) == .forward(to: Self.worker))
        _ = table.takeCommits()
        table.draining = true
        var drops: [RouteTable.ClientDecision: Int] = [:]

        // 1. A new call's first check: no pending flow (counted as draining, not as a bad token).
        let newcomer = TransportAddress.v4(IPv4Address(198, 51, 100, 40), port: 5000)
        drops[fromClient(&table, Self.check(ufrag: Self.ufrag()), newcomer), default: 0] += 1
        #expect(table.route(for: newcomer) == nil)
        // A forged check is still a bad token, and garbage still unknown.
        #expect(fromClient(&table, Self.check(ufrag: "xOn5"), newcomer) == .drop(.badToken))
        #expect(fromClient(&table, [0xFF, 1, 2, 3], newcomer) == .drop(.unknownProtocol))
        // 2. Media from a flow this relay does not route: no store lookup (another relay's call).
        drops[fromClient(&table, dtls, newcomer), default: 0] += 1
        #expect(fromTransceiver(&table, dtls, newcomer, Self.worker) == .drop(.draining))
        // 3. A transceiver's check toward an unknown client (how a Pion call is recovered): no pending flow.
        #expect(fromTransceiver(&table, Self.serverCheck(), newcomer, Self.worker) == .drop(.draining))
        #expect(table.route(for: newcomer) == nil)
        // 4. The pending flow answers its transceiver's check: it does not commit.
        drops[fromClient(&table, Self.success(transaction: STUNTransactionID(5, 5, 5)), early), default: 0] += 1
        #expect(table.route(for: early)?.committed == false)
        // 5. A check naming another worker for the committed address: no candidate, no move.
        let other = TransportAddress.v4(IPv4Address(10, 0, 0, 6), port: 40001)
        drops[fromClient(&table, Self.check(ufrag: Self.ufrag(worker: other), transaction: STUNTransactionID(7, 7, 7)), Self.client),
              default: 0] += 1
        #expect(fromTransceiver(&table, Self.serverCheck(), Self.client, other) == .drop(.notRouteOwner))
        #expect(table.route(for: Self.client)?.transceiver == Self.worker)
        // 6. A route the store knows: not installed.
        let installed = table.install(client: newcomer, transceiver: Self.worker, now: now)
        #expect(!installed)

        #expect(drops == [.drop(.draining): 4])
        #expect(table.committedCount == 1, "only the route committed before the drain")
        #expect(!table.hasCommits, "nothing new for the store")
        // The pending flow expires as usual, and the committed route idles out: nothing is left.
        table.expire(now: now + .seconds(61))
        #expect(table.count == 0 && table.pendingCount == 0 && table.committedCount == 0)
    }

    @Test func aTableThatStopsDrainingTakesNewFlowsAgain() {
        var table = RouteTable(keyring: Self.keyring, policy: Self.policy())
        table.draining = true
        #expect(connect(&table, Self.client) == .drop(.draining))
        table.draining = false
        #expect(connect(&table, Self.client) == .forward(to: Self.worker))
    }
}

@Suite struct RelayDrainTests {
    let start = Instant(nanoseconds: 5_000_000_000)

    @Test func theFirstSignalDrainsUntilNoRouteIsLeft() {
        var drain = RelayDrain(timeout: .seconds(3600))
        #expect(drain.tick(now: start, liveRoutes: 3) == .none, "serving: ticks do nothing")
        #expect(drain.terminationSignal(now: start) == .startDraining(.signal))
        #expect(drain.isDraining)
        // Until every worker has taken the drain in, its count could still grow: no decision on it.
        #expect(drain.tick(now: start + .milliseconds(500), liveRoutes: nil) == .none)
        #expect(drain.tick(now: start + .seconds(1), liveRoutes: 3) == .none)
        // Progress every 10 s, with what is left.
        #expect(drain.tick(now: start + .seconds(10), liveRoutes: 2) == .reportProgress(remaining: 2, elapsed: .seconds(10)))
        #expect(drain.tick(now: start + .seconds(15), liveRoutes: 2) == .none)
        #expect(drain.tick(now: start + .seconds(20), liveRoutes: 1) == .reportProgress(remaining: 1, elapsed: .seconds(20)))
        #expect(drain.tick(now: start + .seconds(21), liveRoutes: 0) == .stop(.drained))
        #expect(drain.phase == .stopped(.drained))
        #expect(drain.terminationSignal(now: start + .seconds(22)) == .none, "stopped is stopped")
    }

    @Test func anEmptyRelayStopsAtTheFirstTick() {
        var drain = RelayDrain(timeout: .seconds(3600))
        #expect(drain.terminationSignal(now: start) == .startDraining(.signal))
        #expect(drain.tick(now: start, liveRoutes: 0) == .stop(.drained))
    }

    @Test func theSecondSignalStopsAtOnce() {
        var drain = RelayDrain(timeout: .seconds(3600))
        #expect(drain.terminationSignal(now: start) == .startDraining(.signal))
        #expect(drain.tick(now: start + .seconds(1), liveRoutes: 40) == .none)
        #expect(drain.terminationSignal(now: start + .seconds(2)) == .stop(.interrupted))
        #expect(drain.tick(now: start + .seconds(3), liveRoutes: 0) == .none)
    }

    @Test func theTimeoutEndsADrainWithRoutesLeft() {
        var drain = RelayDrain(timeout: .seconds(30))
        #expect(drain.drainRequested(now: start) == .startDraining(.request))
        #expect(drain.tick(now: start + .seconds(29), liveRoutes: 5) == .reportProgress(remaining: 5, elapsed: .seconds(29)))
        #expect(drain.tick(now: start + .seconds(30), liveRoutes: 5) == .stop(.timedOut(remaining: 5)))
        // A zero timeout: the first signal stops at the first tick.
        var now = RelayDrain(timeout: .zero)
        #expect(now.terminationSignal(now: start) == .startDraining(.signal))
        #expect(now.tick(now: start, liveRoutes: nil) == .stop(.timedOut(remaining: 0)))
    }

    /// An orchestrator that asks for the drain and then sends SIGTERM (Kubernetes: a preStop hook,
    /// then the signal) does not cut the drain short; only a second signal does.
    @Test func aSignalAfterADrainRequestIsTheFirstSignal() {
        var drain = RelayDrain(timeout: .seconds(3600))
        #expect(drain.drainRequested(now: start) == .startDraining(.request))
        #expect(drain.drainRequested(now: start + .seconds(1)) == .none, "already draining")
        #expect(drain.terminationSignal(now: start + .seconds(2)) == .none)
        #expect(drain.isDraining)
        #expect(drain.terminationSignal(now: start + .seconds(3)) == .stop(.interrupted))
    }
}
