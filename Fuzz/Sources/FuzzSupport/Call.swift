import ParleyBoringDTLS
import ParleyMedia
@_spi(Fuzzing) import ParleySession
import ParleySCTP
import ParleyWire

/// A whole call between Parley's session and its client, in memory on a virtual clock, connected
/// through ICE (both sides' checks), DTLS and SCTP with the `oai-events` channel open: what the
/// stateful harnesses start from before they feed the fuzzer's bytes, encrypted with the call's own
/// keys, to one side or the other.
public final class Call {
    static let serverCertificate = try! DTLSCertificate(commonName: "parley")
    static let clientCertificate = try! DTLSCertificate(commonName: "client")
    /// DTLS 1.2 on OpenSSL, and DTLS 1.3 on BoringSSL (what production runs with Chromium).
    static let serverContexts: [any DTLSContext] = [
        try! OpenSSLDTLSContext(certificate: serverCertificate), try! BoringSSLDTLSContext(certificate: serverCertificate)]
    static let clientContexts: [any DTLSContext] = [
        try! OpenSSLDTLSContext(certificate: clientCertificate), try! BoringSSLDTLSContext(certificate: clientCertificate)]
    public static let clientAddress = TransportAddress.v4(IPv4Address(127, 0, 0, 1), port: 50000)
    public static let serverAddress = TransportAddress.v4(IPv4Address(127, 0, 0, 1), port: 3478)
    public static let serverPassword = "fuzzserverpassword123456"

    public let server: WebRTCSession
    public let client: ClientSession
    public let serverUfrag: String
    public var now = Instant(nanoseconds: 1_000_000_000)
    private let echo: EchoAgent?
    private let bridge: AgentBridge?

    /// With `parrot`, the server's audio goes through the agent bridge (jitter buffer, Opus decode
    /// and encode, the parrot's VAD) instead of the echo agent. With `warp`, the client offers
    /// WARP (SNAP's INIT, SPED, `oai-events` negotiated on stream 0) and the session takes it up.
    /// With `dtls13`, both ends run BoringSSL and agree on DTLS 1.3; else OpenSSL's DTLS 1.2.
    public init(parrot: Bool = false, warp: Bool = false, dtls13: Bool = false) {
        let serverContext = Self.serverContexts[dtls13 ? 1 : 0]
        client = ClientSession(dtlsContext: Self.clientContexts[dtls13 ? 1 : 0], warp: warp)
        var generator = SystemRandomNumberGenerator()
        let offer = try! SessionDescription(parsing: client.offer)
        let keyring = RoutingKeyring(current: RoutingKey(id: 1, secret: (0..<32).map { UInt8($0) }))
        serverUfrag = keyring.seal(RoutingToken(keyID: 1, clusterID: 1, worker: Self.serverAddress, issuedHour: 1, nonce: 7))
        let negotiated = try! SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
            iceUfrag: serverUfrag, icePassword: Self.serverPassword, fingerprint: serverContext.certificate.fingerprint,
            candidates: [ICECandidate(foundation: "1", priority: 2_130_706_431, address: "127.0.0.1", port: 3478)],
            sessionID: 1, audioSSRC: 0xABCD_0001, cname: "parley", sctpInit: warp ? SNAPInits.draw(using: &generator) : nil))
        var parameters = SessionParameters(id: "fuzz", localUfrag: serverUfrag, localPassword: Self.serverPassword,
                                           negotiated: negotiated, localAudioSSRC: 0xABCD_0001, cname: "parley")
        if warp, let local = negotiated.localSCTPInit, let remote = negotiated.remoteSCTPInit {
            parameters.snap = try! SNAPInits(local: local, remote: remote)
            parameters.negotiatedEventsChannel = client.negotiatedChannelID
        }
        server = try! WebRTCSession(parameters: parameters, dtlsContext: serverContext, now: now)
        if parrot {
            bridge = try! AgentBridge(agent: ParrotAgent(), session: server, now: now)
            echo = nil
        } else {
            bridge = nil
            echo = EchoAgent()
        }
        try! client.accept(answer: negotiated.answer.text, now: now)
        for _ in 0..<20 where !client.isDataChannelOpen {
            exchange()
            advance(by: .milliseconds(50))
        }
    }

    public var isUsable: Bool { client.isDataChannelOpen && !server.isClosed }

    /// Other addresses the client has (a second interface, a NAT rebinding): what the session sends
    /// to one reaches the client, and the client's immediate answers come back from there.
    public static let otherAddresses: [TransportAddress] = [
        .v4(IPv4Address(127, 0, 0, 2), port: 50001), .v4(IPv4Address(127, 0, 0, 3), port: 50002),
        .v6(IPv6Address("::1")!, port: 50003),
    ]

    /// Delivers datagrams both ways (a bounded number of rounds) and lets the agent act on events.
    public func exchange(rounds: Int = 8) {
        for _ in 0..<rounds {
            let toServer = client.takeTransmits()
            for datagram in toServer { deliverToServer(datagram) }
            let toClient = server.takeTransmits()
            for transmit in toClient {
                deliverToClient(transmit.bytes)
                if transmit.path.client != Self.clientAddress {
                    for answer in client.takeTransmits() { deliverToServer(answer, from: transmit.path.client) }
                }
            }
            _ = client.takeEvents()
            if toServer.isEmpty && toClient.isEmpty { return }
        }
    }

    /// The latest Binding request the client sent (for replays).
    public private(set) var lastClientCheck: [UInt8]?

    public func deliverToServer(_ datagram: [UInt8], from source: TransportAddress = Call.clientAddress) {
        if source == Self.clientAddress, let message = try? STUNMessage.parse(datagram), message.type == .bindingRequest {
            lastClientCheck = datagram
        }
        datagram.withUnsafeBytes { server.receive($0, from: PeerPath(client: source), now: now) }
        serveEvents()
    }

    public func deliverToServer(_ datagram: UnsafeRawBufferPointer, from source: TransportAddress = Call.clientAddress) {
        server.receive(datagram, from: PeerPath(client: source), now: now)
        serveEvents()
    }

    public func deliverToClient(_ datagram: [UInt8]) {
        if let message = try? STUNMessage.parse(datagram), message.type == .bindingRequest { lastServerCheck = message.transactionID }
        datagram.withUnsafeBytes { client.receive($0, from: Self.serverAddress, now: now) }
    }

    /// The transaction of the latest check the session sent (a harness may answer it itself).
    public private(set) var lastServerCheck: STUNTransactionID?

    /// Moves the clock, running both sides' timers on the way.
    public func advance(by duration: Duration) {
        let end = now + duration
        for _ in 0..<64 {
            let wakes = [server.nextWakeup, client.nextWakeup, bridge?.nextWakeup].compactMap { $0 }
            guard let wake = wakes.min(), wake <= end else { break }
            now = max(now, wake)
            if let due = server.nextWakeup, due <= now { server.handleTimeout(now: now) }
            if let due = client.nextWakeup, due <= now { client.handleTimeout(now: now) }
            if let bridge, let due = bridge.nextWakeup, due <= now { bridge.tick(now: now) }
            serveEvents()
            exchange()
        }
        now = max(now, end)
    }

    private func serveEvents() {
        for event in server.takeEvents() {
            echo?.handle(event, session: server, now: now)
            bridge?.handle(event, now: now)
        }
    }

    // MARK: Sealing the fuzzer's bytes as one side would send them

    /// SRTP (or SRTCP) of `plaintext` under `keys`' local key, from a fresh context: the fuzzer
    /// chooses every header field, sequence numbers included, and gets a packet that authenticates.
    public static func protect(_ plaintext: UnsafeRawBufferPointer, rtcp: Bool, keys: SRTPKeyMaterial?) -> [UInt8]? {
        guard let keys, plaintext.count <= 1500,
              let context = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.localKeyAndSalt, direction: .outbound)
        else { return nil }
        var buffer = [UInt8](repeating: 0, count: plaintext.count + SRTPContext.maximumOverhead)
        let length = buffer.withUnsafeMutableBytes { raw -> Int? in
            if let base = plaintext.baseAddress, !plaintext.isEmpty { raw.baseAddress!.copyMemory(from: base, byteCount: plaintext.count) }
            return rtcp ? try? context.protectRTCP(raw, length: plaintext.count) : try? context.protectRTP(raw, length: plaintext.count)
        }
        return length.map { Array(buffer[0..<$0]) }
    }

    /// An SCTP packet with the fuzzer's chunks, addressed to the receiving association (its
    /// verification tag, a correct CRC-32C), so it reaches chunk processing.
    public static func sctpPacket(_ chunks: UnsafeRawBufferPointer, tag: UInt32) -> [UInt8] {
        var packet: [UInt8] = [0x13, 0x88, 0x13, 0x88, UInt8(truncatingIfNeeded: tag >> 24), UInt8(truncatingIfNeeded: tag >> 16),
                               UInt8(truncatingIfNeeded: tag >> 8), UInt8(truncatingIfNeeded: tag), 0, 0, 0, 0]
        packet += Array(chunks.prefix(1100))
        packet.withUnsafeMutableBytes { SCTPPacket.seal($0) }
        return packet
    }

    /// A Binding request with the fuzzer's attributes (type, length, value triples) between a
    /// correct USERNAME and a correct MESSAGE-INTEGRITY and FINGERPRINT.
    public static func check(username: String, password: String, transaction: STUNTransactionID,
                             attributes: UnsafeRawBufferPointer, type: STUNMessageType = .bindingRequest) -> [UInt8]? {
        try? STUNWriter.build(type: type, transactionID: transaction) { writer throws(STUNBuildError) in
            try writer.appendUsername(username)
            var offset = 0
            while attributes.count - offset >= 4 {
                let attribute = attributes.uint16(at: offset), length = min(Int(attributes.uint16(at: offset + 2)), attributes.count - offset - 4)
                let value = UnsafeRawBufferPointer(rebasing: attributes[(offset + 4)..<(offset + 4 + length)])
                // What the writer refuses (integrity first, and the like) is skipped.
                try? writer.append(STUNAttributeType(rawValue: attribute), value: value)
                offset += 4 + length
            }
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: password))
            try writer.appendFingerprint()
        }
    }
}
