import Testing
import ParleySignaling
import ParleyWire

@Suite struct ForwardedRequestTests {
    static let ring = RoutingKeyring(current: RoutingKey(id: 3, secret: (0..<32).map { UInt8($0 &* 7) }))
    static let forwards = ForwardedRequest(keyring: ring)
    static let client = TransportAddress.v4(IPv4Address(192, 0, 2, 2), port: 50000)
    static let now: Int64 = 1_800_000_000

    static func seal(_ credential: Credential, method: String = "PATCH", target: String = "/v1/realtime/calls/rtc_x") -> String {
        forwards.seal(credential: credential, method: method, target: target, client: client, region: "a", unixSeconds: now).text
    }

    @Test func theOwnerLearnsTheCredentialClientAndRegionOfThisRequestOnly() throws {
        let claims = try Self.forwards.open(Self.seal(.apiKey(id: "key_1")), method: "PATCH", target: "/v1/realtime/calls/rtc_x",
                                            unixSeconds: Self.now + 5)
        #expect(claims.credential == .apiKey(id: "key_1"))
        #expect(claims.client == "192.0.2.2:50000" && claims.region == "a")
        // The nonce travels sealed: the owner learns it only by opening the seal with the key.
        let (text, nonce) = Self.forwards.seal(credential: .anonymous, method: "GET", target: "/x", client: Self.client, region: nil,
                                               unixSeconds: Self.now)
        #expect(nonce.count == 32 && !text.contains(nonce))
        #expect(try Self.forwards.open(text, method: "GET", target: "/x", unixSeconds: Self.now).nonce == nonce)
        #expect(throws: SignalingError.invalidForward) {
            try Self.forwards.open(Self.seal(.apiKey(id: "key_1")), method: "DELETE", target: "/v1/realtime/calls/rtc_x", unixSeconds: Self.now)
        }
        #expect(throws: SignalingError.invalidForward) {
            try Self.forwards.open(Self.seal(.apiKey(id: "key_1")), method: "PATCH", target: "/v1/realtime/calls/rtc_y", unixSeconds: Self.now)
        }
    }

    @Test func aClientSecretsOwnershipSurvivesTheForward() throws {
        let secret = ClientSecretClaims(id: "cs_0123456789abcdef", owner: "key_1", createdAt: Self.now, expiresAt: Self.now + 600,
                                        session: .object([:]))
        let claims = try Self.forwards.open(Self.seal(.clientSecret(secret)), method: "PATCH", target: "/v1/realtime/calls/rtc_x",
                                            unixSeconds: Self.now)
        let owner = Credential.clientSecret(secret).owner
        #expect(claims.credential?.mayAccess(owner) == true)
        #expect(claims.credential?.isAPIKey == false, "a client secret stays one: no sideband through a forward")
        #expect(claims.credential?.mayAccess(Credential.apiKey(id: "key_1").owner) == false)
        #expect(try Self.forwards.open(Self.seal(.anonymous), method: "PATCH", target: "/v1/realtime/calls/rtc_x",
                                       unixSeconds: Self.now).credential == .anonymous)
    }

    @Test func staleForgedOrForeignForwardsAreRefused() {
        let sealed = Self.seal(.apiKey(id: "key_1"))
        func open(_ text: String, at time: Int64 = Self.now, with forwards: ForwardedRequest = Self.forwards) -> Bool {
            (try? forwards.open(text, method: "PATCH", target: "/v1/realtime/calls/rtc_x", unixSeconds: time)) != nil
        }
        #expect(open(sealed))
        #expect(open(sealed, at: Self.now + ForwardedRequest.lifetime + 30), "a forwarder's clock a little behind")
        #expect(!open(sealed, at: Self.now + ForwardedRequest.lifetime + 61), "expired")
        #expect(!open(sealed, with: ForwardedRequest(keyring: RoutingKeyring(current: RoutingKey(id: 3, secret: [UInt8](repeating: 1, count: 32))))))
        // A ring without the sealing key id (another cluster's, or one rotated past it) opens nothing.
        #expect(!open(sealed, with: ForwardedRequest(keyring: RoutingKeyring(current: RoutingKey(id: 4, secret: (0..<32).map { UInt8($0 &* 7) })))))
        var flipped = Array(sealed.utf8)
        flipped[20] = flipped[20] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(!open(String(decoding: flipped, as: UTF8.self)))
        for junk in ["1", "fw_", "fw_!!!!", String(repeating: "fw_A", count: 2000), "ek_" + sealed.dropFirst(3)] {
            #expect(!open(junk), "\(junk.prefix(12))")
        }
    }
}
