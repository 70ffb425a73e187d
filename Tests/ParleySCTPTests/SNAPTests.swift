import ParleyWire
import Testing
@testable import ParleySCTP

/// SNAP (draft-hancke-tsvwg-snap): INIT chunks exchanged out of band, associations that start
/// ESTABLISHED from them and carry data with no handshake on the wire.
@Suite struct SNAPTests {
    /// Chromium 156's `a=sctp-init` in ../shared/fixtures/offers/chrome-warp.sdp, decoded.
    static let chromium: [UInt8] = [
        0x01, 0x00, 0x00, 0x1e, 0xee, 0xd0, 0x54, 0xc5, 0x00, 0x50, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
        0x86, 0x0e, 0xe1, 0x0c, 0xc0, 0x00, 0x00, 0x04, 0x80, 0x08, 0x00, 0x06, 0x82, 0xc0,
    ]

    /// An association started out of band from a fresh peer INIT (whose identity is returned), its
    /// `established` event taken.
    static func establishedServer(now: Instant, using generator: inout SystemRandomNumberGenerator) throws
        -> (SCTPAssociation, SCTPInitiationIdentity) {
        let a = SCTPInitiationIdentity(using: &generator), b = SCTPInitiationIdentity(using: &generator)
        let server = SCTPAssociation(now: now, identity: b, using: &generator)
        server.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: a)), now: now)
        _ = server.takeEvents()
        return (server, a)
    }

    @Test func parleysInitChunkIsExactlyWhatConnectSends() {
        let identity = SCTPInitiationIdentity(tag: 0x0102_0304, initialTSN: 0xA0B0_C0D0)!
        let chunk = SCTPAssociation.initiationChunk(identity: identity)
        #expect(chunk == [0x01, 0x00, 0x00, 0x1e, 0x01, 0x02, 0x03, 0x04, 0x00, 0x10, 0x00, 0x00, 0x04, 0x00, 0x04, 0x00,
                          0xa0, 0xb0, 0xc0, 0xd0, 0xc0, 0x00, 0x00, 0x04, 0x80, 0x08, 0x00, 0x06, 0x82, 0xc0],
                "tag, 1 MiB window, 1024 streams each way, TSN, FORWARD-TSN, RE-CONFIG: Chromium's layout, 30 bytes")
        var generator = SystemRandomNumberGenerator()
        let association = SCTPAssociation(now: Instant(nanoseconds: 0), identity: identity, using: &generator)
        association.connect(now: Instant(nanoseconds: 0))
        let packet = association.takeOutgoing()[0]
        #expect(Array(packet[12..<(12 + 30)]) == chunk)
        #expect(association.localTag == identity.tag)
    }

    @Test func chromiumsInitDecodes() throws {
        let peer = try SCTPOutOfBandInit(decoding: Self.chromium)
        #expect(peer.initiation.initiateTag == 0xeed0_54c5 && peer.initiation.advertisedReceiverWindow == 5_242_880)
        #expect(peer.initiation.outboundStreams == 65535 && peer.initiation.inboundStreams == 65535)
        #expect(peer.initiation.initialTSN == 0x860e_e10c && peer.initiation.forwardTSNSupported)
        #expect(peer.identity == SCTPInitiationIdentity(tag: 0xeed0_54c5, initialTSN: 0x860e_e10c))
        // Padded to four bytes, as an encoder might: the length field still says 30, and the chunk is that.
        #expect(try SCTPOutOfBandInit(decoding: Self.chromium + [0, 0]).chunk == Self.chromium)
        #expect(throws: SCTPParseError.self) { try SCTPOutOfBandInit(decoding: Self.chromium + [0, 1]) }
        #expect(throws: SCTPParseError.self) { try SCTPOutOfBandInit(decoding: Self.chromium + [0, 0, 0, 0]) }
    }

    @Test func anythingButOneValidInitIsRefused() {
        func refused(_ bytes: [UInt8]) -> Bool { (try? SCTPOutOfBandInit(decoding: bytes)) == nil }
        var initAck = Self.chromium
        initAck[0] = 2
        #expect(refused(initAck))
        #expect(refused(Array(Self.chromium.prefix(19))))
        #expect(refused([]))
        var zeroTag = Self.chromium
        zeroTag[4...7] = [0, 0, 0, 0]
        #expect(refused(zeroTag))
        var zeroStreams = Self.chromium
        zeroStreams[12...13] = [0, 0]
        #expect(refused(zeroStreams))
        var shortLength = Self.chromium
        shortLength[3] = 0x1c
        #expect(refused(shortLength))
        // A state cookie belongs in an INIT ACK, never in an INIT.
        var withCookie = Array(Self.chromium.prefix(20)) + [0x00, 0x07, 0x00, 0x08, 1, 2, 3, 4]
        withCookie[3] = UInt8(withCookie.count)
        #expect(refused(withCookie))
        // A parameter running past the chunk, and a chunk over the bound.
        var overrun = Self.chromium
        overrun[27] = 0x40
        #expect(refused(overrun))
        var long = Array(Self.chromium.prefix(20)) + [0x80, 0x09, 0x08, 0x00] + [UInt8](repeating: 0, count: 2044)
        long[2] = UInt8(long.count >> 8)
        long[3] = UInt8(long.count & 0xFF)
        #expect(refused(long))
    }

    /// Two of ours, each started from the other's INIT: established at once, no packet before the
    /// first DATA, and messages both ways (their tags and TSNs are what the INITs said).
    @Test func associationsStartedOutOfBandCarryDataWithNoHandshake() throws {
        var generator = SystemRandomNumberGenerator()
        var now = Instant(nanoseconds: 0)
        let a = SCTPInitiationIdentity(using: &generator), b = SCTPInitiationIdentity(using: &generator)
        let initA = try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: a))
        let initB = try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: b))
        let client = SCTPAssociation(now: now, identity: a, using: &generator)
        let server = SCTPAssociation(now: now, identity: b, using: &generator)
        #expect(client.startOutOfBand(peer: initB, now: now) && server.startOutOfBand(peer: initA, now: now))
        #expect(client.state == .established && server.state == .established)
        #expect(client.takeEvents() == [.established] && server.takeEvents() == [.established])
        #expect(client.takeOutgoing().isEmpty && server.takeOutgoing().isEmpty, "no INIT, no COOKIE: nothing on the wire")
        #expect(!client.startOutOfBand(peer: initB, now: now), "once only")
        #expect(client.peerTag == b.tag && server.peerTag == a.tag)

        client.send(stream: 1, protocolIdentifier: 51, payload: Array("hello".utf8), unordered: false, now: now)
        server.send(stream: 1, protocolIdentifier: 53, payload: [1, 2, 3], unordered: false, now: now)
        for _ in 0..<6 {
            for packet in client.takeOutgoing() {
                #expect(packet[4..<8] == [UInt8(b.tag >> 24), UInt8(b.tag >> 16 & 0xFF), UInt8(b.tag >> 8 & 0xFF), UInt8(b.tag & 0xFF)])
                packet.withUnsafeBytes { server.handle($0, now: now) }
            }
            for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
            now = now + .milliseconds(250)
            client.handleTimeout(now: now)
            server.handleTimeout(now: now)
        }
        #expect(server.takeEvents().contains(.message(stream: 1, protocolIdentifier: 51, payload: Array("hello".utf8), unordered: false)))
        #expect(client.takeEvents().contains(.message(stream: 1, protocolIdentifier: 53, payload: [1, 2, 3], unordered: false)))
        #expect(client.drops.isEmpty && server.drops.isEmpty, "\(client.drops) \(server.drops)")
    }

    /// WARP's RTO sync on the association alone: a seeded round trip sets the first RTO (3 × RTT)
    /// and survives establishment; a seed while DATA is outstanding leaves the retransmission's
    /// timer alone; once SCTP has measured a round trip itself, seeds change nothing.
    @Test func aSeededRoundTripSetsTheRTOUntilSCTPMeasuresItsOwn() throws {
        var generator = SystemRandomNumberGenerator()
        var now = Instant(nanoseconds: 0)
        let a = SCTPInitiationIdentity(using: &generator), b = SCTPInitiationIdentity(using: &generator)
        let client = SCTPAssociation(now: now, identity: a, using: &generator)
        let server = SCTPAssociation(now: now, identity: b, using: &generator)
        client.seedRoundTrip(.milliseconds(100))
        #expect(client.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: b)), now: now))
        #expect(server.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: a)), now: now))
        func retransmissionIn(_ association: SCTPAssociation) -> Duration? {
            // The heartbeat is 30 s away: the first wake-up is the T3 timer.
            association.nextWakeup.map { $0 - now }
        }
        client.send(stream: 1, protocolIdentifier: 51, payload: [1], unordered: false, now: now)
        _ = client.takeOutgoing()  // lost
        #expect(retransmissionIn(client) == .milliseconds(300), "3 × RTT, kept through establishment")
        // A seed while that DATA is outstanding leaves its running timer as it is.
        client.seedRoundTrip(.milliseconds(400))
        #expect(retransmissionIn(client) == .milliseconds(300))
        // SCTP's own sample: DATA sent once and acknowledged 20 ms later.
        now = now + .milliseconds(300)
        client.handleTimeout(now: now)  // the retransmission (no sample from it: Karn)
        for packet in client.takeOutgoing() { packet.withUnsafeBytes { server.handle($0, now: now) } }
        for _ in 0..<3 {
            now = now + .milliseconds(250)
            server.handleTimeout(now: now)
            for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
        }
        client.send(stream: 1, protocolIdentifier: 51, payload: [2], unordered: false, now: now)
        let second = client.takeOutgoing()
        now = now + .milliseconds(20)
        for packet in second { packet.withUnsafeBytes { server.handle($0, now: now) } }
        for _ in 0..<3 {
            now = now + .milliseconds(250)
            server.handleTimeout(now: now)
            for packet in server.takeOutgoing() { packet.withUnsafeBytes { client.handle($0, now: now) } }
        }
        // From now on ICE's round trips are ignored (nothing is in flight: only SCTP's own sample
        // stops this seed): the next DATA's timer is SCTP's own RTO, not 3 × 900 ms.
        client.seedRoundTrip(.milliseconds(900))
        client.send(stream: 1, protocolIdentifier: 51, payload: [3], unordered: false, now: now)
        _ = client.takeOutgoing()
        let own = try #require(retransmissionIn(client))
        #expect(own < .milliseconds(900), "\(own)")
    }

    /// A packet not carrying the tag Parley's INIT gave out is dropped and counted, SNAP or not.
    @Test func aPacketWithAnotherTagIsDropped() throws {
        var generator = SystemRandomNumberGenerator()
        let now = Instant(nanoseconds: 0)
        let (server, a) = try Self.establishedServer(now: now, using: &generator)
        let stranger = SCTPAssociation(now: now, identity: a, using: &generator)
        let other = SCTPInitiationIdentity(using: &generator)
        stranger.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: other)), now: now)
        stranger.send(stream: 1, protocolIdentifier: 51, payload: [1], unordered: false, now: now)
        for packet in stranger.takeOutgoing() { packet.withUnsafeBytes { server.handle($0, now: now) } }
        #expect(server.takeEvents().isEmpty)
        #expect(server.drops.values.reduce(0, +) == 1, "\(server.drops)")
    }

    /// A pre-negotiated channel (`negotiated: true, id: N`) on SNAP associations: opened as soon as
    /// the association is (before, it waits), messages both ways, no DCEP on the wire.
    @Test func aNegotiatedChannelOpensWithTheAssociationAndCarriesMessagesWithoutDCEP() throws {
        var generator = SystemRandomNumberGenerator()
        let now = Instant(nanoseconds: 0)
        let a = SCTPInitiationIdentity(using: &generator), b = SCTPInitiationIdentity(using: &generator)
        let client = DataChannels(association: SCTPAssociation(now: now, identity: a, using: &generator), dtlsServer: false)
        let server = DataChannels(association: SCTPAssociation(now: now, identity: b, using: &generator), dtlsServer: true)
        // Added before the association is up: it waits.
        #expect(server.addNegotiated(id: 0, label: "oai-events"))
        #expect(server.takeEvents().isEmpty)
        #expect(!server.addNegotiated(id: 0, label: "again"), "a stream already taken")
        #expect(!server.addNegotiated(id: 1024, label: "x"), "beyond the streams")
        server.association.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: a)), now: now)
        server.handleTimeout(now: now)
        #expect(server.takeEvents().map { if case .opened(let channel) = $0 { channel.label } else { "" } } == ["oai-events"])
        // Added once the association is up: opened at once.
        client.association.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: SCTPAssociation.initiationChunk(identity: b)), now: now)
        client.handleTimeout(now: now)
        #expect(client.addNegotiated(id: 0, label: "oai-events"))
        #expect(client.takeEvents().count == 1)

        try client.send(Array(#"{"type":"hello"}"#.utf8), binary: false, channel: 0, now: now)
        try server.send([9, 8, 7], binary: true, channel: 0, now: now)
        for _ in 0..<4 {
            for packet in client.takeOutgoing() + server.takeOutgoing() {
                let toServer = packet[4..<8] == server.association.localTag.bigEndianBytes[...]
                packet.withUnsafeBytes { (toServer ? server : client).handle($0, now: now) }
            }
        }
        #expect(server.takeEvents() == [.message(channel: 0, label: "oai-events", binary: false, payload: Array(#"{"type":"hello"}"#.utf8))])
        #expect(client.takeEvents() == [.message(channel: 0, label: "oai-events", binary: true, payload: [9, 8, 7])])
    }

    /// An INIT carries vtag 0, so nothing may ride behind it (RFC 9260 §6.10): such a packet is
    /// dropped whole, even by an association that is up.
    @Test func anInitWithChunksBehindItIsDroppedWhole() throws {
        var generator = SystemRandomNumberGenerator()
        let now = Instant(nanoseconds: 0)
        let (server, a) = try Self.establishedServer(now: now, using: &generator)
        var writer = SCTPPacketWriter(sourcePort: 5000, destinationPort: 5000, verificationTag: 0)
        let initChunk = SCTPAssociation.initiationChunk(identity: a)
        writer.chunk(.initiation) { $0.append(Array(initChunk[4...])) }
        writer.chunk(.abort)
        writer.finish().withUnsafeBytes { server.handle($0, now: now) }
        #expect(server.state == .established, "the ABORT behind the INIT was not obeyed")
        #expect(server.drops[.malformed] == 1)
        #expect(server.takeOutgoing().isEmpty)
    }

    /// Parley opens channels only on streams the peer's INIT says it receives on.
    @Test func channelsStayWithinThePeersInboundStreams() throws {
        var generator = SystemRandomNumberGenerator()
        let now = Instant(nanoseconds: 0)
        var small = Self.chromium
        small[14...15] = [0, 4]  // the peer receives on four streams
        let server = DataChannels(association: SCTPAssociation(now: now, using: &generator), dtlsServer: true)
        server.association.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: small), now: now)
        server.handleTimeout(now: now)
        #expect(server.association.outboundStreams == 4)
        #expect(server.open(label: "a", now: now) == 1 && server.open(label: "b", now: now) == 3)
        #expect(server.open(label: "c", now: now) == nil)
        #expect(!server.addNegotiated(id: 4, label: "d") && server.addNegotiated(id: 2, label: "e"))
    }

    /// With SCTP's own handshake the peer's streams are known only once it is up: a negotiated
    /// channel added before, beyond them, is dropped (counted) instead of reported open.
    @Test func aNegotiatedChannelBeyondThePeersStreamsNeverOpens() throws {
        var generator = SystemRandomNumberGenerator()
        let now = Instant(nanoseconds: 0)
        var small = Self.chromium
        small[14...15] = [0, 4]
        let server = DataChannels(association: SCTPAssociation(now: now, using: &generator), dtlsServer: true)
        #expect(server.addNegotiated(id: 6, label: "far") && server.addNegotiated(id: 0, label: "near"))
        #expect(server.openChannels.isEmpty, "not open before the association is")
        server.association.startOutOfBand(peer: try SCTPOutOfBandInit(decoding: small), now: now)
        server.handleTimeout(now: now)
        #expect(server.takeEvents().map { if case .opened(let channel) = $0 { channel.label } else { "" } } == ["near"])
        #expect(server.openChannels.keys.sorted() == [0] && server.drops[.unknownChannel] == 1)
    }
}

private extension UInt32 {
    var bigEndianBytes: [UInt8] { [UInt8(self >> 24), UInt8(self >> 16 & 0xFF), UInt8(self >> 8 & 0xFF), UInt8(self & 0xFF)] }
}
