import ParleyWire
import Testing
@testable import ParleyRouting

/// The relay's ICE-TCP decisions: which connections it keeps, what a frame may do.
@Suite struct TCPIngressTests {
    typealias T = RouteTableTests
    let now = Instant(nanoseconds: 1_000_000_000)
    let peer = TransportAddress.v4(IPv4Address(198, 51, 100, 20), port: 51000)

    func ingress(_ adjust: (inout TCPIngress.Policy) -> Void = { _ in }) -> TCPIngress {
        var policy = TCPIngress.Policy()
        adjust(&policy)
        return TCPIngress(keyring: T.keyring, routing: T.policy(), policy: policy)
    }

    func frame(_ ingress: inout TCPIngress, _ bytes: [UInt8], from peer: TransportAddress? = nil, at instant: Instant? = nil)
        -> TCPIngress.FrameDecision {
        bytes.withUnsafeBytes { ingress.frame($0, from: peer ?? self.peer, now: instant ?? now) }
    }

    func fromWorker(_ ingress: inout TCPIngress, _ bytes: [UInt8], at instant: Instant? = nil) -> RouteTable.TransceiverDecision {
        bytes.withUnsafeBytes { ingress.fromTransceiver($0, client: peer, source: T.worker, now: instant ?? now) }
    }

    @Test func aConnectionIsRoutedLikeAUDPFlowFromItsFirstCheck() {
        var tcp = ingress()
        #expect(tcp.accept(peer: peer, now: now) == .accept)
        #expect(tcp.handshakeCount == 1)
        #expect(frame(&tcp, T.check(ufrag: T.ufrag())) == .forward(to: T.worker))
        #expect(tcp.table.pendingCount == 1 && tcp.handshakeCount == 0)
        // Pending: media does not pass; the transceiver's check and answer do; the client's answer commits.
        #expect(frame(&tcp, [0x80, 0x6F] + [UInt8](repeating: 0, count: 20)) == .drop(.pendingNotSTUN))
        #expect(fromWorker(&tcp, T.serverCheck()) == .deliver(to: peer))
        #expect(fromWorker(&tcp, T.success()) == .deliver(to: peer))
        #expect(frame(&tcp, T.success(transaction: STUNTransactionID(5, 5, 5))) == .forward(to: T.worker))
        #expect(tcp.table.committedCount == 1)
        #expect(frame(&tcp, [0x80, 0x6F] + [UInt8](repeating: 0, count: 20)) == .forward(to: T.worker))
        // Closing forgets the connection and its route.
        tcp.closed(peer: peer)
        #expect(tcp.connectionCount == 0 && tcp.table.committedCount == 0)
        #expect(fromWorker(&tcp, [0x80, 0x6F, 0, 0]) == .drop(.noRoute))
    }

    @Test func theFirstFrameMustBeACheckWhoseTokenOpens() {
        let wrongKey = RoutingKeyring(current: RoutingKey(id: 2, secret: [UInt8](repeating: 9, count: 32)))
        let refused: [[UInt8]] = [
            [22, 0xFE, 0xFD] + [UInt8](repeating: 0, count: 30),  // DTLS
            T.success(),  // an answer to nothing
            T.check(ufrag: T.ufrag(keyring: wrongKey)),  // a token this relay cannot open
            T.check(ufrag: T.ufrag(worker: .v4(IPv4Address(192, 168, 1, 1), port: 4000))),  // a worker it may not name
            Array("GET / HTTP/1.1\r\n".utf8),
        ]
        for bytes in refused {
            var tcp = ingress()
            #expect(tcp.accept(peer: peer, now: now) == .accept)
            #expect(frame(&tcp, bytes) == .close(.firstFrameRefused))
        }
        var tcp = ingress()
        #expect(frame(&tcp, T.check(ufrag: T.ufrag())) == .close(.firstFrameRefused), "a connection never accepted")
    }

    /// Routes a connection: its check, the worker's check, its answer.
    func route(_ tcp: inout TCPIngress, _ peer: TransportAddress, nonce: STUNTransactionID = STUNTransactionID(5, 5, 5)) {
        #expect(frame(&tcp, T.check(ufrag: T.ufrag()), from: peer) == .forward(to: T.worker))
        _ = T.serverCheck(transaction: nonce).withUnsafeBytes { tcp.fromTransceiver($0, client: peer, source: T.worker, now: now) }
        #expect(frame(&tcp, T.success(transaction: nonce), from: peer) == .forward(to: T.worker))
    }

    @Test func handshakesAreLimitedPerAddressAndTheOldestMakesRoom() {
        var tcp = ingress { $0.maximumHandshakesPerAddress = 2 }
        let ip = IPv4Address(198, 51, 100, 20)
        #expect(tcp.accept(peer: .v4(ip, port: 1), now: now) == .accept)
        #expect(tcp.accept(peer: .v4(ip, port: 2), now: now + .milliseconds(10)) == .accept)
        // Both younger than a second: the third is refused.
        #expect(tcp.accept(peer: .v4(ip, port: 3), now: now + .milliseconds(500)) == .refuse(.tooManyFromAddress))
        // A second on, the oldest silent one makes room.
        #expect(tcp.accept(peer: .v4(ip, port: 3), now: now + .seconds(1)) == .acceptEvicting(.v4(ip, port: 1)))
        #expect(tcp.connectionCount == 2 && tcp.handshakeCount == 2)
        // Another address has its own handshakes; IPv6 counts per /64.
        #expect(tcp.accept(peer: .v4(IPv4Address(198, 51, 100, 21), port: 1), now: now) == .accept)
        let v6a = TransportAddress.v6(IPv6Address(high: 0x2001_0db8_0000_0001, low: 1), port: 1)
        let v6b = TransportAddress.v6(IPv6Address(high: 0x2001_0db8_0000_0001, low: 2), port: 1)
        let v6c = TransportAddress.v6(IPv6Address(high: 0x2001_0db8_0000_0001, low: 3), port: 1)
        #expect(tcp.accept(peer: v6a, now: now) == .accept && tcp.accept(peer: v6b, now: now) == .accept)
        #expect(tcp.accept(peer: v6c, now: now) == .refuse(.tooManyFromAddress))
        #expect(tcp.accept(peer: v6a, now: now) == .refuse(.duplicate))
    }

    @Test func callsFromOneAddressAreNotLimitedOnlyItsHandshakesAre() {
        // An office behind one NAT address: many calls at once, each past its first check.
        var tcp = ingress { $0.maximumHandshakesPerAddress = 2 }
        let ip = IPv4Address(203, 0, 113, 9)
        for port in UInt16(1)...20 {
            let peer = TransportAddress.v4(ip, port: port)
            #expect(tcp.accept(peer: peer, now: now) == .accept)
            // Each its own call: its own token (a token's pending flows are limited, not a network's calls).
            let ufrag = T.keyring.seal(RoutingToken(keyID: T.keyring.currentKeyID, clusterID: 1, worker: T.worker,
                                                    issuedHour: 100, nonce: UInt32(port)))
            #expect(frame(&tcp, T.check(ufrag: ufrag), from: peer) == .forward(to: T.worker))
        }
        #expect(tcp.connectionCount == 20 && tcp.handshakeCount == 0)
    }

    @Test func theTotalIsKeptByClosingTheOldestHandshakeNeverACall() {
        var tcp = ingress { $0.maximumConnections = 3 }
        let a = TransportAddress.v4(IPv4Address(198, 51, 100, 1), port: 1)
        let b = TransportAddress.v4(IPv4Address(198, 51, 100, 2), port: 1)
        let c = TransportAddress.v4(IPv4Address(198, 51, 100, 3), port: 1)
        let d = TransportAddress.v4(IPv4Address(198, 51, 100, 4), port: 1)
        #expect(tcp.accept(peer: a, now: now) == .accept)
        route(&tcp, a)
        #expect(tcp.accept(peer: b, now: now) == .accept)
        #expect(tcp.accept(peer: c, now: now + .milliseconds(100)) == .accept)
        #expect(tcp.accept(peer: d, now: now + .milliseconds(500)) == .refuse(.tooManyConnections))
        // b is the oldest handshake once it has waited a second; a (routed) is never closed for room.
        #expect(tcp.accept(peer: d, now: now + .seconds(1)) == .acceptEvicting(b))
        #expect(tcp.accept(peer: b, now: now + .seconds(2)) == .acceptEvicting(c))
        #expect(tcp.connectionCount == 3 && tcp.table.committedCount == 1)
        tcp.closed(peer: d)
        tcp.closed(peer: b)
        tcp.draining = true
        #expect(tcp.accept(peer: d, now: now + .seconds(3)) == .refuse(.draining))
    }

    @Test func silentConnectionsAndExpiredRoutesAreClosed() {
        var tcp = ingress()
        let silent = TransportAddress.v4(IPv4Address(198, 51, 100, 30), port: 1)
        #expect(tcp.accept(peer: silent, now: now) == .accept)
        #expect(tcp.accept(peer: peer, now: now) == .accept)
        #expect(frame(&tcp, T.check(ufrag: T.ufrag())) == .forward(to: T.worker))
        #expect(tcp.expire(now: now + .seconds(4)).isEmpty)
        // The silent one goes at 5 s; the pending one when its flow expires unanswered (5 s too).
        let closed = tcp.expire(now: now + .seconds(5))
        #expect(Set(closed.map { "\($0.peer) \($0.reason.rawValue)" }) == ["\(silent) first_frame_timeout", "\(peer) idle"])
        #expect(tcp.connectionCount == 0 && tcp.table.pendingCount == 0)
    }

    @Test func aCommittedConnectionIdlesOutWithItsRoute() {
        var tcp = ingress()
        #expect(tcp.accept(peer: peer, now: now) == .accept)
        _ = frame(&tcp, T.check(ufrag: T.ufrag()))
        _ = fromWorker(&tcp, T.serverCheck())
        _ = frame(&tcp, T.success(transaction: STUNTransactionID(5, 5, 5)))
        #expect(tcp.table.committedCount == 1)
        #expect(tcp.expire(now: now + .seconds(59)).isEmpty)
        #expect(tcp.expire(now: now + .seconds(60)).map(\.reason) == [.idle])
    }

    @Test func theOrderOfHandshakesDoesNotGrowWithRoutedConnections() {
        // Connections routed at once never meet the limits: without pruning, each would stay in the
        // order of handshakes for the relay's lifetime.
        var tcp = ingress()
        for port in UInt16(1)...500 {
            let peer = TransportAddress.v4(IPv4Address(198, 51, 100, UInt8(truncatingIfNeeded: port % 200)), port: port)
            #expect(tcp.accept(peer: peer, now: now) == .accept)
            let ufrag = T.keyring.seal(RoutingToken(keyID: T.keyring.currentKeyID, clusterID: 1, worker: T.worker,
                                                    issuedHour: 100, nonce: UInt32(port)))
            // Past the table's pending limits a check is refused and the shell closes the connection.
            if case .close = frame(&tcp, T.check(ufrag: ufrag), from: peer) { tcp.closed(peer: peer) }
        }
        _ = tcp.expire(now: now + .seconds(1))
        #expect(tcp.handshakeOrder.isEmpty && tcp.handshakeCount == 0)
    }
}
