import CUsrSCTP
import ParleyWire
import Testing
@testable import ParleySCTP

/// ParleySCTP against usrsctp, in memory: the two ends exchange packets through a pump that can
/// lose and reorder them, on a virtual clock for ours and usrsctp's manual timers.
@Suite(.serialized) struct AssociationTests {
    final class Link {
        let peer: UsrSCTPPeer
        let association: SCTPAssociation
        var now = Instant(nanoseconds: 1_000_000_000)
        var events: [SCTPEvent] = []
        /// Decides the fate of each packet: true drops it. `reorder` reverses each burst toward us.
        var lose: (_ toPeer: Bool, _ packet: [UInt8], _ index: Int) -> Bool = { _, _, _ in false }
        var reorder = false
        private var counter = 0

        init(configuration: SCTPConfiguration = .init()) throws {
            peer = try UsrSCTPPeer()
            var generator = SystemRandomNumberGenerator()
            association = SCTPAssociation(configuration: configuration, now: now, using: &generator)
        }

        /// Moves packets both ways until quiet for `quietSeconds` of virtual time (long enough for
        /// both stacks' retransmission timers), advancing time in 10 ms steps.
        func pump(rounds: Int = 20_000, quietSeconds: Int = 8) {
            var quiet = 0
            for _ in 0..<rounds {
                var moved = false
                var toUs = peer.takeOutput()
                if reorder, toUs.count > 1 { toUs.reverse() }
                for packet in toUs {
                    counter += 1
                    if lose(false, packet, counter) { continue }
                    packet.withUnsafeBytes { association.handle($0, now: now) }
                    moved = true
                }
                // Only packets toward us are reordered: usrsctp 0.9.5 aborts the association (an ABORT
                // with no cause) when, with loss, our bursts reach it reversed (docs/datachannels.md).
                let toPeer = association.takeOutgoing()
                for packet in toPeer {
                    counter += 1
                    if lose(true, packet, counter) { continue }
                    peer.input(packet)
                    moved = true
                }
                events += association.takeEvents()
                peer.receiveAll()
                if !moved {
                    quiet += 1
                    if quiet > quietSeconds * 100 { return }
                    now = now + .milliseconds(10)
                    usrsctp_handle_timers(10)
                    association.handleTimeout(now: now)
                } else {
                    quiet = 0
                }
            }
        }

        var messages: [(stream: UInt16, ppid: UInt32, payload: [UInt8], unordered: Bool)] {
            events.compactMap {
                if case .message(let stream, let ppid, let payload, let unordered) = $0 { return (stream, ppid, payload, unordered) }
                return nil
            }
        }

        func connectFromPeer() {
            peer.connect()
            pump()
        }
    }

    static func payload(_ count: Int, seed: UInt8 = 1) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

    @Test func associationComesUpWhenUsrsctpConnects() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            #expect(link.association.state == .established)
            #expect(link.events.first == .established)
        }
    }

    /// Two ParleySCTP associations: the initiator's side (INIT, COOKIE ECHO) against the other's.
    @Test func twoOfOursConnectAndTalk() {
        var generator = SystemRandomNumberGenerator()
        var now = Instant(nanoseconds: 0)
        let client = SCTPAssociation(now: now, using: &generator), server = SCTPAssociation(now: now, using: &generator)
        client.connect(now: now)
        var serverMessages: [[UInt8]] = []
        for _ in 0..<50 {
            for packet in client.takeOutgoing() { packet.withUnsafeBytes { server.handle($0, now: now) } }
            for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
            for case .message(_, _, let payload, _) in server.takeEvents() { serverMessages.append(payload) }
            if client.state == .established, serverMessages.isEmpty, client.bufferedAmount == 0 {
                client.send(stream: 0, protocolIdentifier: 51, payload: Self.payload(5000), unordered: false, now: now)
            }
            now = now + .milliseconds(10)
        }
        #expect(client.state == .established && server.state == .established)
        #expect(serverMessages == [Self.payload(5000)])
    }

    /// RFC 9260 §3.2: a chunk's length counts the padding of every parameter but its last. Our INIT
    /// ends with Supported Extensions (6 bytes, padded to 8): 20 + 4 + 6 = 30, as Chromium's is, with
    /// the padding still on the wire (SNAP's `a=sctp-init` carries exactly this chunk).
    @Test func theInitsLengthLeavesOutTheLastParametersPadding() {
        var generator = SystemRandomNumberGenerator()
        let now = Instant(nanoseconds: 0)
        let client = SCTPAssociation(now: now, using: &generator), server = SCTPAssociation(now: now, using: &generator)
        client.connect(now: now)
        let initiation = client.takeOutgoing()
        #expect(initiation.count == 1)
        let packet = initiation[0]
        #expect(packet[12] == 1, "an INIT")
        #expect(Int(packet[14]) << 8 | Int(packet[15]) == 30)
        #expect(packet.count == 12 + 32, "padded to 4 on the wire")
        #expect(packet.suffix(2) == [0, 0])
        // The INIT-ACK ends the same way (its cookie comes first): its length is 8 below its padded size
        // minus 2, and ours still parse each other's.
        packet.withUnsafeBytes { server.handle($0, now: now) }
        let answer = server.takeOutgoing()
        #expect(answer.count == 1)
        let length = Int(answer[0][14]) << 8 | Int(answer[0][15])
        #expect(answer[0][12] == 2 && length == answer[0].count - 12 - 2, "INIT-ACK \(length) of \(answer[0].count - 12)")
        answer[0].withUnsafeBytes { client.handle($0, now: now) }
        #expect(!client.takeOutgoing().isEmpty, "the COOKIE ECHO follows")
    }

    /// Two of ours, connected, with packets carried by hand.
    static func connectedPair(now: Instant) -> (SCTPAssociation, SCTPAssociation) {
        var generator = SystemRandomNumberGenerator()
        let client = SCTPAssociation(now: now, using: &generator), server = SCTPAssociation(now: now, using: &generator)
        client.connect(now: now)
        for _ in 0..<4 {
            for packet in client.takeOutgoing() { packet.withUnsafeBytes { server.handle($0, now: now) } }
            for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
        }
        _ = client.takeEvents(); _ = server.takeEvents()
        return (client, server)
    }

    static func firstChunkType(_ packet: [UInt8]) -> UInt8 { packet[12] }

    /// RFC 6525: a lost request is resent until answered; a repeated one is answered again but not
    /// performed twice; a second reset waits for the first's answer.
    @Test func streamResetIsResentUntilAnsweredAndPerformedOnce() {
        var now = Instant(nanoseconds: 0)
        let (client, server) = Self.connectedPair(now: now)
        client.resetStreams([4], now: now)
        client.resetStreams([6], now: now)
        let first = client.takeOutgoing()
        #expect(first.count == 1 && Self.firstChunkType(first[0]) == 130, "one request outstanding")
        // Lost. After an RTO the same request goes again.
        now = now + .seconds(2)
        client.handleTimeout(now: now)
        let resent = client.takeOutgoing()
        #expect(resent == first)
        for packet in resent + resent { packet.withUnsafeBytes { server.handle($0, now: now) } }
        #expect(server.takeEvents() == [.streamsReset([4])], "performed once")
        let answers = server.takeOutgoing()
        #expect(answers.count == 2, "each copy answered")
        for packet in answers { packet.withUnsafeBytes { client.handle($0, now: now) } }
        // The answer frees the next request: stream 6.
        let second = client.takeOutgoing()
        #expect(second.count == 1)
        for packet in second { packet.withUnsafeBytes { server.handle($0, now: now) } }
        #expect(server.takeEvents() == [.streamsReset([6])])
        for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
        now = now + .seconds(5)
        client.handleTimeout(now: now)
        #expect(client.takeOutgoing().allSatisfy { Self.firstChunkType($0) != 130 }, "nothing left to resend")
    }

    /// After a retransmission timeout only one MTU goes out (the congestion window is one MTU); the
    /// rest follows as SACKs come back, and the message arrives whole.
    @Test func retransmissionAfterTimeoutIsOnePacketThenGrowsWithAcks() {
        var now = Instant(nanoseconds: 0)
        let (client, server) = Self.connectedPair(now: now)
        client.send(stream: 1, protocolIdentifier: 53, payload: Self.payload(4000), unordered: false, now: now)
        let lost = client.takeOutgoing()
        #expect(lost.count == 4, "the initial window: 4 packets")
        now = now + .seconds(2)
        client.handleTimeout(now: now)
        let retransmitted = client.takeOutgoing()
        #expect(retransmitted.count == 1 && retransmitted[0].count <= 1152, "one MTU after the timeout")
        var toServer = retransmitted
        var messages: [[UInt8]] = []
        for _ in 0..<20 where !toServer.isEmpty {
            for packet in toServer { packet.withUnsafeBytes { server.handle($0, now: now) } }
            toServer = []
            for case .message(_, _, let payload, _) in server.takeEvents() { messages.append(payload) }
            for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
            toServer = client.takeOutgoing()
        }
        #expect(messages == [Self.payload(4000)])
    }

    /// A reset that overtakes the data sent before it waits for that data (RFC 6525 §5.2.2).
    @Test func streamResetWaitsForDataSentBeforeIt() {
        var now = Instant(nanoseconds: 0)
        let (client, server) = Self.connectedPair(now: now)
        client.send(stream: 2, protocolIdentifier: 51, payload: [7], unordered: false, now: now)
        client.resetStreams([2], now: now)
        let packets = client.takeOutgoing()
        #expect(packets.map(Self.firstChunkType) == [0, 130])
        packets[1].withUnsafeBytes { server.handle($0, now: now) }
        #expect(server.takeEvents().isEmpty, "deferred")
        for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
        now = now + .milliseconds(50)
        packets[0].withUnsafeBytes { server.handle($0, now: now) }
        #expect(server.takeEvents() == [.message(stream: 2, protocolIdentifier: 51, payload: [7], unordered: false), .streamsReset([2])])
        for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
        // Answered "performed": the client stops resending.
        now = now + .seconds(5)
        client.handleTimeout(now: now)
        #expect(client.takeOutgoing().allSatisfy { Self.firstChunkType($0) != 130 })
    }

    @Test func messagesFlowBothWaysIncludingLargeOnes() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            for size in [1, 1024, 65536, 262_144] {
                link.peer.send(Self.payload(size, seed: 3), stream: 1, ppid: 53)
                link.pump()
                link.association.send(stream: 1, protocolIdentifier: 53, payload: Self.payload(size, seed: 5), unordered: false, now: link.now)
                link.pump()
            }
            #expect(link.messages.map(\.payload.count) == [1, 1024, 65536, 262_144])
            #expect(link.messages.allSatisfy { $0.payload == Self.payload($0.payload.count, seed: 3) && $0.ppid == 53 && $0.stream == 1 })
            #expect(link.peer.received.map(\.payload.count) == [1, 1024, 65536, 262_144])
            #expect(link.peer.received.allSatisfy { $0.payload == Self.payload($0.payload.count, seed: 5) && $0.ppid == 53 })
        }
    }

    @Test func unorderedMessagesArriveFlaggedUnordered() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            link.peer.send([1, 2, 3], stream: 2, ppid: 51, unordered: true)
            link.association.send(stream: 2, protocolIdentifier: 51, payload: [4, 5], unordered: true, now: link.now)
            link.pump()
            #expect(link.messages.first.map { ($0.unordered, $0.payload) } ?? (false, []) == (true, [1, 2, 3]))
            #expect(link.peer.received.first?.unordered == true)
        }
    }

    @Test func lossAndReorderingAreRecovered() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            // Lose about one packet in eight each way (seeded) and reverse bursts toward us; 20 messages
            // of 3 KiB each way, every one delivered in order, byte for byte.
            var state: UInt64 = 0xC0FFEE
            link.lose = { _, _, _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return (state >> 33) % 8 == 0
            }
            link.reorder = true
            for index in 0..<20 {
                link.peer.send(Self.payload(3000, seed: UInt8(index)), stream: 3, ppid: 53)
                link.association.send(stream: 3, protocolIdentifier: 53, payload: Self.payload(3000, seed: UInt8(100 + index)),
                                      unordered: false, now: link.now)
            }
            link.pump(rounds: 200_000, quietSeconds: 10)
            #expect(link.messages.count == 20, "\(link.association.debugDescription) \(link.events.filter { if case .closed = $0 { true } else { false } })")
            #expect(link.messages.enumerated().allSatisfy { $0.element.payload == Self.payload(3000, seed: UInt8($0.offset)) },
                    "in order, byte for byte")
            #expect(link.peer.received.count == 20)
            #expect(link.peer.received.enumerated().allSatisfy { $0.element.payload == Self.payload(3000, seed: UInt8(100 + $0.offset)) })
        }
    }

    @Test func streamResetReachesUs() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            link.peer.send([1], stream: 4, ppid: 51)
            link.pump()
            link.peer.resetOutgoing(streams: [4])
            link.pump()
            #expect(link.events.contains(.streamsReset([4])))
            // The stream starts over at sequence 0 and still works.
            link.peer.send([2], stream: 4, ppid: 51)
            link.pump()
            #expect(link.messages.map(\.payload) == [[1], [2]])
        }
    }

    @Test func shutdownEndsBothSides() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            link.association.send(stream: 0, protocolIdentifier: 51, payload: [1, 2], unordered: false, now: link.now)
            link.association.shutdown(now: link.now)
            link.pump()
            #expect(link.peer.received.count == 1)
            #expect(link.association.state == .finished)
            #expect(link.events.contains(.closed("shutdown")))
        }
    }

    @Test func garbageAndForeignTagsAreDroppedAndCounted() throws {
        try UsrSCTP.lock.withLock {
            let link = try Link()
            link.connectFromPeer()
            [UInt8](repeating: 0xAB, count: 40).withUnsafeBytes { link.association.handle($0, now: link.now) }
            var foreign = SCTPPacketWriter(sourcePort: 5000, destinationPort: 5000, verificationTag: 0x1234_5678)
            foreign.chunk(.heartbeat) { $0.parameter(1) { $0.append([1, 2, 3, 4]) } }
            foreign.finish().withUnsafeBytes { link.association.handle($0, now: link.now) }
            #expect(link.association.drops[.malformed] == 1)
            #expect(link.association.drops[.badVerificationTag] == 1)
            #expect(link.association.state == .established)
        }
    }
}

extension AssociationTests {
    /// Idle associations check each other with heartbeats; a silent peer ends the association.
    @Test func heartbeatsKeepIdleAssociationsAndDetectAVanishedPeer() {
        var generator = SystemRandomNumberGenerator()
        var now = Instant(nanoseconds: 0)
        var configuration = SCTPConfiguration()
        configuration.maximumRetransmissions = 3
        let client = SCTPAssociation(configuration: configuration, now: now, using: &generator)
        let server = SCTPAssociation(configuration: configuration, now: now, using: &generator)
        var connected = true
        var heartbeats = 0
        func step() {
            for packet in client.takeOutgoing() where connected {
                packet.withUnsafeBytes { raw in
                    if let parsed = try? SCTPPacket.parse(raw), parsed.chunks.contains(where: { $0.type == .heartbeat }) { heartbeats += 1 }
                    server.handle(raw, now: now)
                }
            }
            for packet in server.takeOutgoing() where connected { packet.withUnsafeBytes { client.handle($0, now: now) } }
            now = now + .milliseconds(100)
            client.handleTimeout(now: now)
            server.handleTimeout(now: now)
        }
        client.connect(now: now)
        for _ in 0..<700 { step() }  // 70 s of silence after the handshake
        #expect(client.state == .established && server.state == .established)
        #expect(heartbeats >= 2, "a heartbeat about every 30 s")
        connected = false
        for _ in 0..<2000 { step() }
        #expect(client.state == .finished)
        #expect(client.takeEvents().contains(.closed("peer unreachable (heartbeats unanswered)")))
    }
}

extension AssociationTests {
    /// Two ParleySCTP ends with seeded loss (one packet in six) and reordering in both directions:
    /// 30 messages each way, of 1–5 KiB, all delivered in order, byte for byte.
    @Test func lossAndReorderingBothWaysBetweenTwoOfOurs() {
        var generator = SystemRandomNumberGenerator()
        var now = Instant(nanoseconds: 0)
        let left = SCTPAssociation(now: now, using: &generator), right = SCTPAssociation(now: now, using: &generator)
        var seed: UInt64 = 0xBADC0FFEE
        func random() -> UInt64 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return seed >> 33
        }
        var leftReceived: [[UInt8]] = [], rightReceived: [[UInt8]] = []
        func carry(_ from: SCTPAssociation, _ to: SCTPAssociation) {
            var packets = from.takeOutgoing()
            if packets.count > 1, random() % 2 == 0 { packets.shuffle() }
            for packet in packets where random() % 6 != 0 { packet.withUnsafeBytes { to.handle($0, now: now) } }
        }
        left.connect(now: now)
        var sent = false
        for _ in 0..<20_000 {
            carry(left, right)
            carry(right, left)
            for case .message(_, _, let payload, _) in left.takeEvents() { leftReceived.append(payload) }
            for case .message(_, _, let payload, _) in right.takeEvents() { rightReceived.append(payload) }
            if !sent, left.state == .established, right.state == .established {
                sent = true
                for index in 0..<30 {
                    left.send(stream: 1, protocolIdentifier: 53, payload: Self.payload(1000 + 137 * index, seed: UInt8(index)),
                              unordered: false, now: now)
                    right.send(stream: 2, protocolIdentifier: 53, payload: Self.payload(1200 + 111 * index, seed: UInt8(index)),
                               unordered: false, now: now)
                }
            }
            if leftReceived.count == 30, rightReceived.count == 30 { break }
            now = now + .milliseconds(10)
            left.handleTimeout(now: now)
            right.handleTimeout(now: now)
        }
        #expect(rightReceived == (0..<30).map { Self.payload(1000 + 137 * $0, seed: UInt8($0)) })
        #expect(leftReceived == (0..<30).map { Self.payload(1200 + 111 * $0, seed: UInt8($0)) })
    }
}
