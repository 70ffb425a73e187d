import Testing
@testable import ParleyWire
import ParleyTestSupport

/// The path of a session's first packet, with every piece real: a token ufrag in a real Chrome
/// offer's answer, a client check that carries it, the relay's decode, the transceiver's verify.
@Suite struct EndToEndTests {
    @Test func tokenUfragTravelsFromAnswerThroughAStunCheckToTheRelay() throws {
        let keyring = RoutingKeyring(current: RoutingKey(id: 3, secret: (0..<32).map { UInt8($0 ^ 0x5A) }))
        var generator = SplitMix64(seed: 99)
        let token = RoutingToken.random(keyID: 3, clusterID: 12, worker: .v4(IPv4Address(10, 0, 0, 9), port: 41000), issuedHour: 100,
                                        using: &generator)
        let serverUfrag = keyring.seal(token)
        let serverPassword = "k2rv8XdQyJ0Bbq1nWm4Hs7Zt"

        // The transceiver answers a real Chrome offer with the token as its ufrag.
        let offer = try SessionDescription(parsing: Fixtures.offer("chrome"))
        let negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
            iceUfrag: serverUfrag, icePassword: serverPassword,
            fingerprint: CertificateFingerprint(algorithm: "sha-256", digest: Array(repeating: 0xAB, count: 32)),
            candidates: [ICECandidate(foundation: "relay", priority: 2_130_706_431, address: "127.0.0.1", port: 3478)],
            sessionID: 1, audioSSRC: 1, cname: "parley"))
        let answer = try SessionDescription(parsing: negotiated.answer.text)
        let advertisedUfrag = try #require(answer.iceCredentials(for: answer.media[0])?.ufrag)
        #expect(advertisedUfrag == serverUfrag)

        // The client (controlling) sends a check: USERNAME = serverUfrag:clientUfrag, keyed with our password.
        let check = try STUNWriter.build(type: .bindingRequest, transactionID: .random()) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(advertisedUfrag):\(negotiated.remoteUfrag)")
            try writer.appendPriority(1_845_501_695)
            try writer.appendICEControlling(tieBreaker: 0xDEAD_BEEF)
            try writer.appendUseCandidate()
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: serverPassword))
            try writer.appendFingerprint()
        }

        // The relay: classify, parse, cut the USERNAME at ':', open the token — no password needed.
        try check.withUnsafeBytes { datagram in
            #expect(PacketKind.classify(datagram) == .stun)
            let message = try STUNMessage.parse(datagram)
            let ufrag = try #require(message.usernameRecipientPart(in: datagram))
            let routed = try keyring.open(UnsafeRawBufferPointer(rebasing: datagram[ufrag]))
            #expect(routed == token)
            #expect(routed.worker == .v4(IPv4Address(10, 0, 0, 9), port: 41000))

            // The transceiver: the same check authenticates with the session's password.
            #expect(message.hasValidMessageIntegrity(in: datagram, key: STUNIntegrityKey(shortTermPassword: serverPassword)))
            #expect(message.hasValidFingerprint(in: datagram))
            #expect(message.useCandidate)
        }

        // Through the tunnel: header + the check, byte for byte.
        let header = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: 1,
                                  client: .v4(IPv4Address(192, 0, 2, 10), port: 50000))
        let tunneled = header.bytes + check
        let (decoded, length) = try TunnelHeader.decode(tunneled)
        #expect(decoded.client == header.client)
        #expect(Array(tunneled[length...]) == check)
    }
}
