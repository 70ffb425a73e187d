import ParleyTestSupport
import ParleyWire
import Testing

@testable import ParleySignaling

private func at(_ seconds: Double) -> Instant { Instant(nanoseconds: Int64(seconds * 1e9)) }
private func v4(_ text: String) -> TransportAddress { .v4(IPv4Address(text)!, port: 40_000) }
private func v6(_ text: String) -> TransportAddress { .v6(IPv6Address(text)!, port: 40_000) }

@Suite struct SessionConfigurationTests {
    private let agents: Set<String> = ["echo", "parrot", "default"]

    @Test func sessionsAreJSONObjectsWithAStringAgent() throws {
        #expect(try SessionConfiguration(parsing: Array(#"{"agent":"parrot","voice":"x"}"#.utf8)).agent == "parrot")
        #expect(try SessionConfiguration(parsing: Array(#"{"type":"realtime"}"#.utf8)).agent == nil)
        for bad in [#"[1]"#, #""s""#, "{", #"{"agent":3}"#, #"{"type":"transcription"}"#, ""] {
            #expect(throws: SignalingError.self) { try SessionConfiguration(parsing: Array(bad.utf8)) }
        }
        let large = "{\"x\":\"" + String(repeating: "a", count: SessionConfiguration.maximumBytes) + "\"}"
        #expect(throws: SignalingError.self) { try SessionConfiguration(parsing: Array(large.utf8)) }
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: SignalingError.self) { try SessionConfiguration(parsing: Array(("{\"x\":" + deep + "}").utf8)) }
    }

    @Test func anAPIKeyChoosesAnyKnownAgent() throws {
        let requested = try SessionConfiguration(validating: ["agent": .string("parrot")])
        #expect(try SessionConfiguration.resolve(requested: requested, credential: .apiKey(id: "key_1"), agents: agents) == requested)
        #expect(try SessionConfiguration.resolve(requested: nil, credential: .apiKey(id: "key_1"), agents: agents).agent == nil)
        let unknown = try SessionConfiguration(validating: ["agent": .string("gpt")])
        #expect(throws: SignalingError.self) { try SessionConfiguration.resolve(requested: unknown, credential: .apiKey(id: "k"), agents: agents) }
    }

    @Test func aClientSecretsSessionIsFixed() throws {
        let secret = Credential.clientSecret(ClientSecretClaims(
            id: "cs_1", owner: "key_1", createdAt: 0, expiresAt: 600,
            session: .object(["agent": .string("parrot"), "instructions": .string("be brief")])))
        let fixed = try SessionConfiguration.resolve(requested: nil, credential: secret, agents: agents)
        #expect(fixed.agent == "parrot" && fixed.fields["instructions"] == .string("be brief"))
        let same = try SessionConfiguration(validating: ["agent": .string("parrot")])
        #expect(try SessionConfiguration.resolve(requested: same, credential: secret, agents: agents) == fixed)
        let other = try SessionConfiguration(validating: ["agent": .string("echo")])
        #expect(throws: SignalingError.self) { try SessionConfiguration.resolve(requested: other, credential: secret, agents: agents) }
        do {
            _ = try SessionConfiguration.resolve(requested: other, credential: secret, agents: agents)
        } catch {
            #expect(error.statusCode == 403 && error.code == "session_not_allowed")
        }
        // The refusal names the field, never the sealed value the browser must not read.
        let probe = try SessionConfiguration(validating: ["instructions": .string("x")])
        do {
            _ = try SessionConfiguration.resolve(requested: probe, credential: secret, agents: agents)
            Issue.record("an offer changed a fixed field")
        } catch {
            #expect(error.message.contains("session.instructions") && !error.message.contains("be brief"), "\(error.message)")
        }
        let added = try SessionConfiguration(validating: ["voice": .string("alloy")])
        #expect(throws: SignalingError.self) { try SessionConfiguration.resolve(requested: added, credential: secret, agents: agents) }
        // A secret with no agent fixes the default agent: the offer cannot pick one.
        let plain = Credential.clientSecret(ClientSecretClaims(id: "cs_2", owner: "key_1", createdAt: 0, expiresAt: 600, session: .object([:])))
        #expect(throws: SignalingError.self) { try SessionConfiguration.resolve(requested: same, credential: plain, agents: agents) }
    }

    @Test func updatesMergeButNeverChangeTheAgent() throws {
        let session = try SessionConfiguration(validating: ["agent": .string("parrot"), "a": .number(1)])
        let merged = try session.merging(SessionConfiguration(validating: ["b": .bool(true), "a": .number(2)]))
        #expect(merged.fields == ["agent": .string("parrot"), "a": .number(2), "b": .bool(true)])
        #expect(throws: SignalingError.self) { try session.merging(SessionConfiguration(validating: ["agent": .string("echo")])) }
    }
}

@Suite struct AdmissionTests {
    @Test func anAddressGetsItsBurstThenItsRateWithRetryAfter() throws {
        var limits = AdmissionLimits()
        limits.callBurstPerAddress = 3
        limits.callsPerSecondPerAddress = 2
        var admission = Admission(limits: limits)
        for _ in 0..<3 { try admission.admit(address: v4("198.51.100.7"), now: at(10)) }
        do {
            try admission.admit(address: v4("198.51.100.7"), now: at(10))
            Issue.record("the fourth attempt in a burst of three must be refused")
        } catch {
            #expect(error.statusCode == 429 && error.retryAfterSeconds == 1)
            #expect(error.message.contains("198.51.100.7"))
        }
        // Other addresses are not affected; the port does not make another client.
        try admission.admit(address: v4("198.51.100.8"), now: at(10))
        #expect(throws: SignalingError.self) { try admission.admit(address: .v4(IPv4Address("198.51.100.7")!, port: 1), now: at(10)) }
        // Half a second later one token is back.
        try admission.admit(address: v4("198.51.100.7"), now: at(10.5))
        #expect(throws: SignalingError.self) { try admission.admit(address: v4("198.51.100.7"), now: at(10.5)) }
    }

    @Test func ipv6ClientsCountPerSlash64() throws {
        var limits = AdmissionLimits()
        limits.callBurstPerAddress = 2
        var admission = Admission(limits: limits)
        try admission.admit(address: v6("2001:db8:1:2::1"), now: at(0))
        try admission.admit(address: v6("2001:db8:1:2:ffff::9"), now: at(0))
        #expect(throws: SignalingError.self) { try admission.admit(address: v6("2001:db8:1:2::77"), now: at(0)) }
        try admission.admit(address: v6("2001:db8:1:3::1"), now: at(0))
    }

    @Test func theAddressTableForgetsSettledClientsAndRefusesWhenAllAreBusy() throws {
        var limits = AdmissionLimits()
        limits.maximumTrackedAddresses = 4
        limits.callBurstPerAddress = 2
        limits.callsPerSecondPerAddress = 1
        var admission = Admission(limits: limits)
        for host in 1...4 { try admission.admit(address: v4("10.0.0.\(host)"), now: at(0)) }
        #expect(throws: SignalingError.self) { try admission.admit(address: v4("10.0.0.5"), now: at(0.5)) }
        // A second on, every bucket is full again: they are forgotten, and new clients fit.
        try admission.admit(address: v4("10.0.0.5"), now: at(1.0))
        try admission.admit(address: v4("10.0.0.6"), now: at(1.0))
    }

    @Test func liveCallsPerKeyAndInAllAreCappedAndReleased() throws {
        var limits = AdmissionLimits()
        limits.maximumCallsPerKey = 2
        limits.maximumSessions = 3
        var admission = Admission(limits: limits)
        try admission.reserveCall(keyID: "key_a", now: at(0))
        try admission.reserveCall(keyID: "key_a", now: at(0))
        do {
            try admission.reserveCall(keyID: "key_a", now: at(0))
            Issue.record("a third live call for a key with a limit of two")
        } catch {
            #expect(error.statusCode == 429)
        }
        try admission.reserveCall(keyID: "key_b", now: at(0))
        #expect(throws: SignalingError.atCapacity) { try admission.reserveCall(keyID: "key_c", now: at(0)) }
        admission.release(keyID: "key_a")
        #expect(admission.liveCalls == 2 && admission.liveCalls(keyID: "key_a") == 1)
        try admission.reserveCall(keyID: "key_c", now: at(0))
        admission.release(keyID: "nobody")
        #expect(admission.liveCalls == 3)
    }

    @Test func anonymousCallsHaveNoPerKeyLimitsOnlyTheSessionCap() throws {
        var limits = AdmissionLimits()
        limits.maximumCallsPerKey = 2
        limits.callBurstPerKey = 1
        limits.maximumSessions = 5
        var admission = Admission(limits: limits)
        for _ in 0..<5 { try admission.reserveCall(keyID: CallOwner.anonymousKeyID, now: at(0)) }
        #expect(throws: SignalingError.atCapacity) { try admission.reserveCall(keyID: CallOwner.anonymousKeyID, now: at(0)) }
        admission.release(keyID: CallOwner.anonymousKeyID)
        #expect(admission.liveCalls == 4)
    }

    @Test func connectionsPerAddressAreCappedExceptFromTrustedProxies() {
        var count = ConnectionCount(maximumPerAddress: 2, exempt: [IPNetwork("10.0.0.0/8")!])
        let host = TransportAddress.v4(IPv4Address(198, 51, 100, 7), port: 1000)
        let samePort = TransportAddress.v4(IPv4Address(198, 51, 100, 7), port: 2000)
        var opened = [count.open(host), count.open(samePort), count.open(host)]
        #expect(opened == [true, true, false], "a third connection from one address")
        let other = count.open(.v4(IPv4Address(198, 51, 100, 8), port: 1))
        #expect(other, "another address has its own share")
        count.close(samePort)
        let again = count.open(host)
        #expect(again)
        // IPv6 per /64.
        opened = ["2001:db8::1", "2001:db8::2", "2001:db8::3"].map { count.open(.v6(IPv6Address($0)!, port: 1)) }
        #expect(opened == [true, true, false])
        // A load balancer's connections all carry its address: not counted.
        let proxy = TransportAddress.v4(IPv4Address(10, 1, 2, 3), port: 1)
        opened = (0..<100).map { _ in count.open(proxy) }
        #expect(opened.allSatisfy { $0 })
        count.close(.v4(IPv4Address(203, 0, 113, 1), port: 1))  // never opened: nothing happens
        #expect(count.addresses == 3)
    }

    @Test func aKeysRateIsLimitedToo() throws {
        var limits = AdmissionLimits()
        limits.callBurstPerKey = 2
        limits.callsPerSecondPerKey = 10
        var admission = Admission(limits: limits)
        try admission.reserveCall(keyID: "key_a", now: at(0))
        try admission.reserveCall(keyID: "key_a", now: at(0))
        do {
            try admission.reserveCall(keyID: "key_a", now: at(0))
            Issue.record("past the key's burst")
        } catch {
            #expect(error.statusCode == 429 && error.retryAfterSeconds == 1)
        }
        try admission.reserveCall(keyID: "key_a", now: at(0.1))
        #expect(admission.liveCalls == 3)
    }

    @Test func drainingRefusesEveryNewCall() throws {
        var admission = Admission(limits: AdmissionLimits())
        try admission.reserveCall(keyID: "key_a", now: at(0))
        admission.startDraining()
        #expect(throws: SignalingError.draining) { try admission.reserveCall(keyID: "key_a", now: at(0)) }
        admission.release(keyID: "key_a")
        #expect(admission.liveCalls == 0)
    }
}

@Suite struct ClientAddressTests {
    private let resolver = ClientAddressResolver(trustedProxies: [IPNetwork("10.0.0.0/8")!, IPNetwork("fd00::/8")!])

    @Test func anUntrustedPeerIsTheClientWhateverItClaims() {
        #expect(resolver.resolve(peer: v4("203.0.113.9"), forwardedFor: ["198.51.100.1"]) == v4("203.0.113.9"))
    }

    @Test func behindTrustedProxiesTheRightmostUntrustedEntry() {
        let peer = v4("10.1.2.3")
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.1"]) == .v4(IPv4Address("198.51.100.1")!, port: 0))
        // A client's own X-Forwarded-For comes first; the proxies' additions are the rightmost.
        #expect(resolver.resolve(peer: peer, forwardedFor: ["6.6.6.6, 198.51.100.1, 10.9.9.9"]) == .v4(IPv4Address("198.51.100.1")!, port: 0))
        #expect(resolver.resolve(peer: peer, forwardedFor: ["6.6.6.6", "198.51.100.1:4711"]) == .v4(IPv4Address("198.51.100.1")!, port: 0))
        #expect(resolver.resolve(peer: peer, forwardedFor: ["[2001:db8::5]:80"]) == .v6(IPv6Address("2001:db8::5")!, port: 0))
        #expect(resolver.resolve(peer: v6("fd00::1"), forwardedFor: ["2001:db8::7"]) == .v6(IPv6Address("2001:db8::7")!, port: 0))
        // Garbage stops the walk at the last hop that was believable.
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.1, unknown, 10.9.9.9"]) == .v4(IPv4Address("10.9.9.9")!, port: 0))
        #expect(resolver.resolve(peer: peer, forwardedFor: []) == peer)
    }
}

@Suite struct SidebandTests {
    @Test func commandsDecodeAndBadOnesSayWhy() throws {
        #expect(try SidebandCommand(decoding: Array(#"{"type":"call.send","event":{"type":"hi"}}"#.utf8))
                == .send(label: "oai-events", binary: false, payload: Array(#"{"type":"hi"}"#.utf8)))
        #expect(try SidebandCommand(decoding: Array(#"{"type":"call.send","label":"x","data":"AAE=","binary":true}"#.utf8))
                == .send(label: "x", binary: true, payload: [0, 1]))
        #expect(try SidebandCommand(decoding: Array(#"{"type":"call.hangup"}"#.utf8)) == .hangUp(reason: "hung up by the app's server"))
        #expect(try SidebandCommand(decoding: Array(#"{"type":"session.update","session":{"voice":"v"}}"#.utf8))
                == .updateSession(try SessionConfiguration(validating: ["voice": .string("v")])))
        for bad in ["", "[]", #"{"type":"nope"}"#, #"{"type":"call.send"}"#, #"{"type":"session.update","session":1}"#,
                    #"{"type":"call.send","data":"%%","binary":true}"#] {
            #expect(throws: SignalingError.self) { try SidebandCommand(decoding: Array(bad.utf8)) }
        }
    }

    @Test func eventsCarryTheTextAndItsJSON() throws {
        let text = SidebandEvent.clientMessage(label: "oai-events", binary: false, payload: Array(#"{"type":"x"}"#.utf8)).text
        let value = try #require(JSONValue(parsing: Array(text.utf8)))
        #expect(value["type"] == .string("call.client_message"))
        #expect(value["data"] == .string(#"{"type":"x"}"#))
        #expect(value["event"] == .object(["type": .string("x")]))
        let state = try #require(JSONValue(parsing: Array(SidebandEvent.state(callID: "rtc_1", state: "ended", reason: "hangup").text.utf8)))
        #expect(state == .object(["type": .string("call.state"), "call_id": .string("rtc_1"), "state": .string("ended"), "reason": .string("hangup")]))
    }

    @Test func randomBytesNeverTrapTheDecoders() {
        var generator = SplitMix64(seed: 11)
        let pieces = [#"{"type":"#, #""call.send""#, #""session.update""#, ",", "}", "{", "[", "]", #""event":"#, #""data":"#,
                      "null", "true", "1e999", "-0", #""\ud800""#, ":", #""session":"#, "\u{0}"]
        for _ in 0..<20_000 {
            let text = (0..<Int.random(in: 0...12, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
            _ = try? SidebandCommand(decoding: Array(text.utf8))
            _ = try? SessionConfiguration(parsing: Array(text.utf8))
        }
    }
}
