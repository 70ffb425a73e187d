import ParleyBoringDTLS
import ParleyDTLSLibrary
import ParleyMedia
import ParleyTestSupport
import ParleyWire
import Testing

/// DTLS on BoringSSL, datagrams carried by hand on a virtual clock: DTLS 1.3 between two BoringSSL
/// ends, DTLS 1.2 when either end is OpenSSL (the fallback for clients that do not offer 1.3), the
/// SRTP keys both libraries export, lost flights (1.3's last flight after the handshake too), and
/// hostile datagrams.
@Suite struct BoringDTLSTests {
    static let serverCertificate = try! DTLSCertificate(commonName: "server")
    static let clientCertificate = try! DTLSCertificate(commonName: "client")

    static func configuration(retransmit: Duration = .milliseconds(400),
                              profiles: [SRTPProfile] = [.aeadAES128GCM, .aes128CMHMACSHA1_80]) -> DTLSConfiguration {
        var configuration = DTLSConfiguration()
        configuration.initialRetransmitDelay = retransmit
        configuration.srtpProfiles = profiles
        return configuration
    }

    static func context(_ library: DTLSLibrary, _ certificate: DTLSCertificate,
                        configuration: DTLSConfiguration = configuration()) -> any DTLSContext {
        try! library.makeContext(certificate: certificate, configuration: configuration)
    }

    /// Two connections and a virtual clock far from the wall clock's (BoringSSL must take the
    /// caller's time; OpenSSL reads its own, so its timers are not driven here).
    struct Pair {
        let client: any DTLSConnection
        let server: any DTLSConnection
        var now = Instant(nanoseconds: -5_000_000_000_000)
        var datagrams = 0
        var sizes: [(fromClient: Bool, bytes: Int)] = []

        mutating func advance(_ duration: Duration) {
            now = now + duration
            client.advanceClock(to: now)
            server.advanceClock(to: now)
        }

        /// Carries datagrams both ways until neither side has anything to send; `drop` may discard some.
        mutating func pump(drop: (_ fromClient: Bool, _ index: Int) -> Bool = { _, _ in false }) {
            var progress = true
            while progress {
                progress = false
                for (fromClient, sender, receiver) in [(true, client, server), (false, server, client)] {
                    for datagram in sender.takeOutgoing() {
                        progress = true
                        datagrams += 1
                        sizes.append((fromClient, datagram.count))
                        if drop(fromClient, datagrams) { continue }
                        datagram.withUnsafeBytes { receiver.receive($0) }
                    }
                }
            }
        }
    }

    func makePair(server: DTLSLibrary = .boringssl, client: DTLSLibrary = .boringssl,
                  serverConfiguration: DTLSConfiguration = configuration(),
                  clientConfiguration: DTLSConfiguration = configuration(),
                  clientExpects: [CertificateFingerprint] = [serverCertificate.fingerprint],
                  serverExpects: [CertificateFingerprint] = [clientCertificate.fingerprint]) throws -> Pair {
        let clientConnection = try Self.context(client, Self.clientCertificate, configuration: clientConfiguration)
            .makeConnection(role: .client, remoteFingerprints: clientExpects)
        let serverConnection = try Self.context(server, Self.serverCertificate, configuration: serverConfiguration)
            .makeConnection(role: .server, remoteFingerprints: serverExpects)
        var pair = Pair(client: clientConnection, server: serverConnection)
        pair.advance(.zero)
        clientConnection.start()
        serverConnection.start()
        return pair
    }

    @Test(arguments: [
        (DTLSLibrary.boringssl, DTLSLibrary.boringssl, DTLSVersion.dtls1_3),
        (.boringssl, .openssl, .dtls1_2),  // an OpenSSL (1.2-only) client of Parley's BoringSSL server
        (.openssl, .boringssl, .dtls1_2),
    ])
    func handshakeAgreesOnTheHighestCommonVersionAndKeysMirror(server: DTLSLibrary, client: DTLSLibrary,
                                                                version: DTLSVersion) throws {
        var pair = try makePair(server: server, client: client)
        pair.pump()
        #expect(pair.client.state == .connected)
        #expect(pair.server.state == .connected)
        #expect(pair.client.version == version)
        #expect(pair.server.version == version)
        let clientKeys = try #require(pair.client.srtpKeys), serverKeys = try #require(pair.server.srtpKeys)
        #expect(clientKeys.profile == .aeadAES128GCM)
        #expect(clientKeys.localKeyAndSalt == serverKeys.remoteKeyAndSalt)
        #expect(clientKeys.remoteKeyAndSalt == serverKeys.localKeyAndSalt)
        #expect(clientKeys.localKeyAndSalt != clientKeys.remoteKeyAndSalt)
        #expect(clientKeys.localKeyAndSalt.count == 28)
    }

    /// A BoringSSL context capped at 1.2 still interoperates with a 1.3-capable client.
    @Test func aContextCappedAtDTLS12Answers12() throws {
        let server = try BoringSSLDTLSContext(certificate: Self.serverCertificate, maximumVersion: .dtls1_2)
            .makeConnection(role: .server, remoteFingerprints: [Self.clientCertificate.fingerprint])
        let client = try Self.context(.boringssl, Self.clientCertificate)
            .makeConnection(role: .client, remoteFingerprints: [Self.serverCertificate.fingerprint])
        var pair = Pair(client: client, server: server)
        pair.advance(.zero)
        client.start()
        pair.pump()
        #expect(server.version == .dtls1_2)
        #expect(client.version == .dtls1_2)
    }

    /// The server's preference decides the SRTP profile, as with OpenSSL.
    @Test func serverPreferenceDecidesTheProfile() throws {
        var pair = try makePair(serverConfiguration: Self.configuration(profiles: [.aes128CMHMACSHA1_80, .aeadAES128GCM]))
        pair.pump()
        #expect(pair.server.srtpKeys?.profile == .aes128CMHMACSHA1_80)
        #expect(pair.client.srtpKeys?.profile == .aes128CMHMACSHA1_80)
        #expect(pair.client.srtpKeys?.localKeyAndSalt.count == 30)
    }

    @Test(arguments: [DTLSLibrary.boringssl, .openssl])
    func wrongFingerprintFailsTheHandshake(client: DTLSLibrary) throws {
        var pair = try makePair(client: client,
                                serverExpects: [CertificateFingerprint(algorithm: "sha-256", digest: Array(repeating: 7, count: 32))])
        pair.pump()
        #expect(pair.server.state == .failed(.fingerprintMismatch))
        #expect(pair.server.srtpKeys == nil)
        // The server's alert closes the client (a 1.3 client had connected on the server's Finished).
        #expect(pair.client.state == .closed, "\(pair.client.state)")
    }

    @Test func anyAnnouncedFingerprintAlgorithmMatches() throws {
        var pair = try makePair(clientExpects: [
            CertificateFingerprint(algorithm: "sha-1", digest: Array(repeating: 1, count: 20)),
            Self.serverCertificate.fingerprint])
        pair.pump()
        #expect(pair.client.state == .connected)
    }

    /// The timers run on the caller's clock: a lost first server flight is resent once the virtual
    /// time passes the configured delay, not before, and never by the wall clock.
    @Test func aLostFlightIsResentOnTheCallersClock() throws {
        var pair = try makePair(serverConfiguration: Self.configuration(retransmit: .milliseconds(100)),
                                clientConfiguration: Self.configuration(retransmit: .milliseconds(100)))
        pair.pump { fromClient, _ in !fromClient }
        #expect(pair.client.state == .handshaking)
        let delay = try #require(pair.server.retransmitDelay)
        #expect(delay == .milliseconds(100), "the configured first delay, on the virtual clock: \(delay)")
        pair.advance(.milliseconds(60))
        #expect(pair.server.retransmitDelay == .milliseconds(40))
        pair.server.handleTimeout()
        #expect(pair.server.takeOutgoing().isEmpty, "nothing is resent before the timer expires")
        pair.advance(.milliseconds(45))
        pair.server.handleTimeout()
        #expect(pair.server.handshakeRetransmissions == 1)
        pair.pump()
        #expect(pair.client.state == .connected)
        #expect(pair.server.state == .connected)
    }

    /// DTLS 1.3's last flight is the client's: when its Finished is lost the client, already
    /// connected, resends it on its timer until the server's ACK (RFC 9147 §5.8), and the server
    /// connects then. A session must keep running DTLS's timer after the handshake for this.
    @Test func aLostClientFinishedIsResentAfterTheClientConnected() throws {
        var pair = try makePair()
        // Flights: client ClientHello (1), server's flight, then the client's last flight: lose it.
        var serverFlightSeen = false
        pair.pump { fromClient, _ in
            if !fromClient { serverFlightSeen = true; return false }
            return serverFlightSeen
        }
        #expect(pair.client.state == .connected)
        #expect(pair.server.state == .handshaking)
        let delay = try #require(pair.client.retransmitDelay, "the client's timer runs past its handshake")
        pair.advance(delay)
        pair.client.handleTimeout()
        pair.pump()
        #expect(pair.server.state == .connected)
        #expect(pair.server.version == .dtls1_3)
        // Once acknowledged, the client's timer stops.
        pair.advance(.seconds(2))
        pair.client.handleTimeout()
        pair.pump()
        #expect(pair.client.retransmitDelay == nil)
    }

    /// A peer that never acknowledges the client's last flight: BoringSSL gives up after its retries
    /// and would read nothing more, so the connection fails (and its timer stops) instead of
    /// looking connected while deaf.
    @Test func aLastFlightNeverAcknowledgedFailsTheConnection() throws {
        var serverFlightSeen = false
        var pair = try makePair()
        pair.pump { fromClient, _ in
            if !fromClient { serverFlightSeen = true; return false }
            return serverFlightSeen
        }
        #expect(pair.client.state == .connected)
        var firings = 0
        while let delay = pair.client.retransmitDelay, firings < 40 {
            firings += 1
            pair.advance(delay)
            pair.client.handleTimeout()
            _ = pair.client.takeOutgoing()  // lost, every time
        }
        #expect(firings > 5 && firings < 40, "\(firings)")
        guard case .failed = pair.client.state else {
            Issue.record("still \(pair.client.state) after \(firings) unacknowledged resends")
            return
        }
        #expect(pair.client.retransmitDelay == nil)
    }

    @Test func seededRoundTripSetsTheFirstDelay() throws {
        let connection = try Self.context(.boringssl, Self.clientCertificate)
            .makeConnection(role: .client, remoteFingerprints: [])
        connection.advanceClock(to: Instant(nanoseconds: 42))
        connection.seedRoundTrip(.milliseconds(30))
        connection.start()
        #expect(connection.retransmitDelay == .milliseconds(60))
        let floor = try Self.context(.boringssl, Self.clientCertificate).makeConnection(role: .client, remoteFingerprints: [])
        floor.advanceClock(to: .zero)
        floor.seedRoundTrip(.microseconds(100))
        floor.start()
        #expect(floor.retransmitDelay == .milliseconds(50))
    }

    /// Handshake datagrams respect the connection's MTU (SPED's smaller one included), also with
    /// BoringSSL's post-quantum key share in the ServerHello.
    @Test func datagramsFitTheMTU() throws {
        var configuration = Self.configuration()
        configuration.mtu = 1020
        var pair = try makePair(serverConfiguration: configuration, clientConfiguration: configuration)
        pair.pump()
        #expect(pair.server.state == .connected)
        #expect(!pair.sizes.isEmpty)
        #expect(pair.sizes.allSatisfy { $0.bytes <= 1020 }, "\(pair.sizes)")
    }

    @Test func applicationDataFlowsBothWays() throws {
        var pair = try makePair()
        pair.pump()
        let message = Array("hello over DTLS 1.3".utf8)
        #expect(message.withUnsafeBytes { pair.client.send($0) })
        pair.pump()
        #expect(pair.server.takeApplicationData() == [message])
        #expect(Array(repeating: UInt8(9), count: 1000).withUnsafeBytes { pair.server.send($0) })
        pair.pump()
        #expect(pair.client.takeApplicationData() == [Array(repeating: 9, count: 1000)])
        #expect(!Array(repeating: UInt8(1), count: 16_385).withUnsafeBytes { pair.server.send($0) })
    }

    @Test func closeNotifyReachesThePeer() throws {
        var pair = try makePair()
        pair.pump()
        pair.client.close()
        pair.pump()
        #expect(pair.server.state == .closed)
        #expect(pair.server.retransmitDelay == nil)
    }

    /// Hostile datagrams — random bytes, and DTLS-looking records of every content type with random
    /// bodies — during and after the handshake: nothing traps, the handshake completes and the
    /// connection still carries data.
    @Test(arguments: [UInt64(1), 2, 3])
    func hostileDatagramsNeitherTrapNorBreakTheConnection(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        func hostile() -> [UInt8] {
            let length = Int(random.next() % 1400) + 1
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if random.next() % 2 == 0, bytes.count >= 13 {
                bytes[0] = [20, 21, 22, 23, 25, 0x2F, 0x3F][Int(random.next() % 7)]
                bytes[1] = 0xFE
                bytes[2] = random.next() % 2 == 0 ? 0xFD : 0xFC
            }
            return bytes
        }
        var pair = try makePair()
        for _ in 0..<50 { hostile().withUnsafeBytes { pair.server.receive($0) } }
        _ = pair.server.takeOutgoing()
        let server = pair.server, client = pair.client
        pair.pump { fromClient, _ in
            // Interleave junk with the real flights, both ways.
            hostile().withUnsafeBytes { (fromClient ? server : client).receive($0) }
            return false
        }
        #expect(pair.server.state == .connected)
        #expect(pair.client.state == .connected)
        for _ in 0..<200 {
            hostile().withUnsafeBytes { pair.server.receive($0) }
            hostile().withUnsafeBytes { pair.client.receive($0) }
        }
        #expect(pair.server.state == .connected)
        #expect(pair.client.state == .connected)
        _ = pair.server.takeApplicationData()
        _ = pair.client.takeApplicationData()
        _ = pair.client.takeOutgoing()
        _ = pair.server.takeOutgoing()
        #expect([UInt8]([1, 2, 3]).withUnsafeBytes { pair.client.send($0) })
        pair.pump()
        #expect(pair.server.takeApplicationData() == [[1, 2, 3]])
    }
}
