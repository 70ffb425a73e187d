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
        #expect(tcp.accept(peer: peer, now: now) == nil)
        #expect(frame(&tcp, T.check(ufrag: T.ufrag())) == .forward(to: T.worker))
        #expect(tcp.table.pendingCount == 1)
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
            #expect(tcp.accept(peer: peer, now: now) == nil)
            #expect(frame(&tcp, bytes) == .close(.firstFrameRefused))
        }
        var tcp = ingress()
        #expect(frame(&tcp, T.check(ufrag: T.ufrag())) == .close(.firstFrameRefused), "a connection never accepted")
    }

    @Test func connectionsAreLimitedPerAddressAndInAll() {
        var tcp = ingress { $0.maximumConnectionsPerAddress = 2; $0.maximumConnections = 3 }
        let ip = IPv4Address(198, 51, 100, 20)
        #expect(tcp.accept(peer: .v4(ip, port: 1), now: now) == nil)
        #expect(tcp.accept(peer: .v4(ip, port: 2), now: now) == nil)
        #expect(tcp.accept(peer: .v4(ip, port: 3), now: now) == .tooManyFromAddress)
        // IPv6 counts per /64.
        let v6a = TransportAddress.v6(IPv6Address(high: 0x2001_0db8_0000_0001, low: 1), port: 1)
        let v6b = TransportAddress.v6(IPv6Address(high: 0x2001_0db8_0000_0001, low: 2), port: 1)
        #expect(tcp.accept(peer: v6a, now: now) == nil)
        #expect(tcp.accept(peer: v6b, now: now) == .tooManyConnections)
        tcp.closed(peer: .v4(ip, port: 1))
        #expect(tcp.accept(peer: .v4(ip, port: 3), now: now) == nil, "a closed connection frees its place")
        tcp.draining = true
        tcp.closed(peer: .v4(ip, port: 3))
        #expect(tcp.accept(peer: .v4(ip, port: 3), now: now) == .draining)
    }

    @Test func silentConnectionsAndExpiredRoutesAreClosed() {
        var tcp = ingress()
        let silent = TransportAddress.v4(IPv4Address(198, 51, 100, 30), port: 1)
        #expect(tcp.accept(peer: silent, now: now) == nil)
        #expect(tcp.accept(peer: peer, now: now) == nil)
        #expect(frame(&tcp, T.check(ufrag: T.ufrag())) == .forward(to: T.worker))
        #expect(tcp.expire(now: now + .seconds(4)).isEmpty)
        // The silent one goes at 5 s; the pending one when its flow expires unanswered (5 s too).
        let closed = tcp.expire(now: now + .seconds(5))
        #expect(Set(closed.map { "\($0.peer) \($0.reason.rawValue)" }) == ["\(silent) first_frame_timeout", "\(peer) idle"])
        #expect(tcp.connectionCount == 0 && tcp.table.pendingCount == 0)
    }

    @Test func aCommittedConnectionIdlesOutWithItsRoute() {
        var tcp = ingress()
        #expect(tcp.accept(peer: peer, now: now) == nil)
        _ = frame(&tcp, T.check(ufrag: T.ufrag()))
        _ = fromWorker(&tcp, T.serverCheck())
        _ = frame(&tcp, T.success(transaction: STUNTransactionID(5, 5, 5)))
        #expect(tcp.table.committedCount == 1)
        #expect(tcp.expire(now: now + .seconds(59)).isEmpty)
        #expect(tcp.expire(now: now + .seconds(60)).map(\.reason) == [.idle])
    }
}
