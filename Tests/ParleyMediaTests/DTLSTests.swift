import Foundation
import ParleyWire
import Testing
@testable import ParleyMedia

/// Two DTLS endpoints in one process, datagrams carried by hand: the handshake, fingerprint checks,
/// SRTP key export, lost flights and application data, with real OpenSSL on both sides.
@Suite struct DTLSTests {
    static let serverCertificate = try! DTLSCertificate(commonName: "server")
    static let clientCertificate = try! DTLSCertificate(commonName: "client")

    static func context(_ certificate: DTLSCertificate, retransmit: Duration = .milliseconds(400),
                        profiles: [SRTPProfile] = [.aeadAES128GCM, .aes128CMHMACSHA1_80]) -> OpenSSLDTLSContext {
        var configuration = DTLSConfiguration()
        configuration.initialRetransmitDelay = retransmit
        configuration.srtpProfiles = profiles
        return try! OpenSSLDTLSContext(certificate: certificate, configuration: configuration)
    }

    struct Pair {
        let client: any DTLSConnection
        let server: any DTLSConnection
        var datagrams = 0

        /// Carries datagrams both ways until neither side has anything to send; `drop` may discard some.
        mutating func pump(drop: (_ fromClient: Bool, _ index: Int) -> Bool = { _, _ in false }) {
            var progress = true
            while progress {
                progress = false
                for (fromClient, sender, receiver) in [(true, client, server), (false, server, client)] {
                    for datagram in sender.takeOutgoing() {
                        progress = true
                        datagrams += 1
                        if drop(fromClient, datagrams) { continue }
                        datagram.withUnsafeBytes { receiver.receive($0) }
                    }
                }
            }
        }
    }

    func makePair(serverContext: OpenSSLDTLSContext = context(serverCertificate),
                  clientContext: OpenSSLDTLSContext = context(clientCertificate),
                  clientExpects: [CertificateFingerprint] = [serverCertificate.fingerprint],
                  serverExpects: [CertificateFingerprint] = [clientCertificate.fingerprint]) throws -> Pair {
        let client = try OpenSSLDTLSConnection(context: clientContext, role: .client, remoteFingerprints: clientExpects)
        let server = try OpenSSLDTLSConnection(context: serverContext, role: .server, remoteFingerprints: serverExpects)
        client.start()
        server.start()
        return Pair(client: client, server: server)
    }

    /// WARP's RTO sync: a round trip measured by ICE replaces the fixed first retransmission delay
    /// (400 ms here) with twice the round trip for the flights sent after it, within 50 ms–3 s.
    @Test func aSeededRoundTripSetsTheFirstRetransmissionDelay() throws {
        // Each read right after its own start (OpenSSL's timers run on the wall clock).
        func firstDelay(seed: Duration?) throws -> Duration {
            let connection = try OpenSSLDTLSConnection(context: Self.context(Self.clientCertificate), role: .client, remoteFingerprints: [])
            if let seed { connection.seedRoundTrip(seed) }
            connection.start()
            return try #require(connection.retransmitDelay)
        }
        let plain = try firstDelay(seed: nil), seeded = try firstDelay(seed: .milliseconds(30))
        let tiny = try firstDelay(seed: .microseconds(100))
        #expect(plain > .milliseconds(100) && plain <= .milliseconds(400), "\(plain)")
        #expect(seeded <= .milliseconds(60), "\(seeded)")
        #expect(tiny > .milliseconds(25) && tiny <= .milliseconds(50), "the 50 ms floor: \(tiny)")
    }

    @Test func certificateFingerprintIsSHA256OfItsDER() {
        let fingerprint = Self.serverCertificate.fingerprint
        #expect(fingerprint.algorithm == "sha-256")
        #expect(fingerprint.digest.count == 32)
        #expect(fingerprint != Self.clientCertificate.fingerprint)
    }

    @Test func handshakeCompletesAndKeysMirror() throws {
        var pair = try makePair()
        pair.pump()
        #expect(pair.client.state == .connected)
        #expect(pair.server.state == .connected)
        let client = try #require(pair.client.srtpKeys), server = try #require(pair.server.srtpKeys)
        #expect(client.profile == .aeadAES128GCM, "the server's first profile wins")
        #expect(client.localKeyAndSalt == server.remoteKeyAndSalt)
        #expect(client.remoteKeyAndSalt == server.localKeyAndSalt)
        #expect(client.localKeyAndSalt.count == 16 + 12)
        #expect(client.localKeyAndSalt != client.remoteKeyAndSalt)
    }

    @Test func serverPreferenceDecidesTheProfile() throws {
        var pair = try makePair(serverContext: Self.context(Self.serverCertificate, profiles: [.aes128CMHMACSHA1_80]))
        pair.pump()
        #expect(pair.server.srtpKeys?.profile == .aes128CMHMACSHA1_80)
        #expect(pair.client.srtpKeys?.localKeyAndSalt.count == 16 + 14)
    }

    @Test func wrongFingerprintFailsTheHandshake() throws {
        let wrong = CertificateFingerprint(algorithm: "sha-256", digest: Array(repeating: 7, count: 32))
        var pair = try makePair(serverExpects: [wrong])
        pair.pump()
        #expect(pair.server.state == .failed(.fingerprintMismatch))
        #expect(pair.server.srtpKeys == nil)
        #expect(pair.client.state != .connected || pair.client.takeOutgoing().isEmpty)
    }

    @Test func anyAnnouncedFingerprintAlgorithmMatches() throws {
        // aiortc announces sha-256, sha-384 and sha-512; one matching is enough, the others can be anything.
        let sha384 = CertificateFingerprint(algorithm: "sha-384", digest: DTLSCertificate.digest(
            ofDER: Self.clientCertificate.certificateDER, algorithm: "sha-384")!)
        var pair = try makePair(serverExpects: [
            CertificateFingerprint(algorithm: "sha-256", digest: Array(repeating: 1, count: 32)), sha384])
        pair.pump()
        #expect(pair.server.state == .connected)
    }

    @Test func lostFlightIsRetransmittedOnTimeout() throws {
        var pair = try makePair(serverContext: Self.context(Self.serverCertificate, retransmit: .milliseconds(50)),
                                clientContext: Self.context(Self.clientCertificate, retransmit: .milliseconds(50)))
        // Lose the server's first flight (ServerHello … CertificateRequest, ServerHelloDone).
        pair.pump { fromClient, _ in !fromClient }
        #expect(pair.client.state == .handshaking)
        let delay = try #require(pair.server.retransmitDelay)
        #expect(delay <= .milliseconds(50), "the configured schedule, not OpenSSL's 1 s default")
        #expect(pair.server.takeOutgoing().isEmpty, "nothing is resent before the timer expires")
        pair.server.handleTimeout()
        #expect(pair.server.handshakeRetransmissions == 0)
        Thread.sleep(forTimeInterval: 0.06)
        pair.server.handleTimeout()
        #expect(pair.server.handshakeRetransmissions == 1)
        pair.pump()
        #expect(pair.client.state == .connected)
        #expect(pair.server.state == .connected)
    }

    @Test func applicationDataFlowsBothWays() throws {
        var pair = try makePair()
        pair.pump()
        let message = Array("hello over DTLS".utf8)
        #expect(message.withUnsafeBytes { pair.client.send($0) })
        pair.pump()
        #expect(pair.server.takeApplicationData() == [message])
        #expect(Array(repeating: UInt8(9), count: 1000).withUnsafeBytes { pair.server.send($0) })
        pair.pump()
        #expect(pair.client.takeApplicationData() == [Array(repeating: 9, count: 1000)])
    }

    @Test func garbageDuringHandshakeDoesNotBreakIt() throws {
        var pair = try makePair()
        [UInt8](repeating: 0x16, count: 40).withUnsafeBytes { pair.server.receive($0) }
        pair.pump()
        #expect(pair.server.state == .connected)
        [UInt8](repeating: 0x17, count: 60).withUnsafeBytes { pair.server.receive($0) }
        #expect(pair.server.state == .connected)
    }

    @Test func closeNotifyReachesThePeer() throws {
        var pair = try makePair()
        pair.pump()
        pair.client.close()
        pair.pump()
        #expect(pair.server.state == .closed)
    }
}

@Suite struct SRTPTests {
    static let key = (0..<28).map { UInt8($0) }

    /// A 172-byte RTP packet: version 2, PT 111, the given sequence number, SSRC 0x01020304.
    func rtpPacket(sequence: UInt16) -> [UInt8] {
        [0x80, 111, UInt8(sequence >> 8), UInt8(sequence & 0xFF), 0, 0, 0x03, 0xC0, 1, 2, 3, 4]
            + (0..<160).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    }

    @Test(arguments: [SRTPProfile.aeadAES128GCM, .aes128CMHMACSHA1_80])
    func protectThenUnprotectRestoresThePacket(profile: SRTPProfile) throws {
        let keyAndSalt = Array(Self.key.prefix(profile.keyLength + profile.saltLength))
        let sender = try SRTPContext(profile: profile, keyAndSalt: keyAndSalt, direction: .outbound)
        let receiver = try SRTPContext(profile: profile, keyAndSalt: keyAndSalt, direction: .inbound)
        let packet = rtpPacket(sequence: 1)
        var buffer = packet + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
        let protected = try buffer.withUnsafeMutableBytes { try sender.protectRTP($0, length: packet.count) }
        #expect(protected > packet.count)
        #expect(Array(buffer[12..<packet.count]) != Array(packet[12...]), "the payload is encrypted")
        var again = Array(buffer[0..<protected])
        let restored = try buffer.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: protected) }
        #expect(Array(buffer[0..<restored]) == packet)

        // The same protected packet again is a replay.
        #expect(throws: SRTPError.self) { try again.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: protected) } }
    }

    @Test func tamperedPacketsAreRejected() throws {
        let sender = try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: Self.key, direction: .outbound)
        let receiver = try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: Self.key, direction: .inbound)
        let packet = rtpPacket(sequence: 7)
        var buffer = packet + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
        let length = try buffer.withUnsafeMutableBytes { try sender.protectRTP($0, length: packet.count) }
        buffer[40] ^= 1
        #expect(throws: SRTPError.self) { try buffer.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: length) } }
    }

    @Test func rtcpRoundTrips() throws {
        let sender = try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: Self.key, direction: .outbound)
        let receiver = try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: Self.key, direction: .inbound)
        // An empty receiver report from SSRC 0x01020304.
        let report: [UInt8] = [0x80, 201, 0, 1, 1, 2, 3, 4]
        var buffer = report + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
        let length = try buffer.withUnsafeMutableBytes { try sender.protectRTCP($0, length: report.count) }
        let restored = try buffer.withUnsafeMutableBytes { try receiver.unprotectRTCP($0, length: length) }
        #expect(Array(buffer[0..<restored]) == report)
    }

    @Test func keysFromADTLSHandshakeInteroperate() throws {
        var pair = try DTLSTests().makePair()
        pair.pump()
        let client = try #require(pair.client.srtpKeys), server = try #require(pair.server.srtpKeys)
        let sender = try SRTPContext(profile: client.profile, keyAndSalt: client.localKeyAndSalt, direction: .outbound)
        let receiver = try SRTPContext(profile: server.profile, keyAndSalt: server.remoteKeyAndSalt, direction: .inbound)
        let packet = rtpPacket(sequence: 100)
        var buffer = packet + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
        let length = try buffer.withUnsafeMutableBytes { try sender.protectRTP($0, length: packet.count) }
        let restored = try buffer.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: length) }
        #expect(Array(buffer[0..<restored]) == packet)
    }
}
