import Testing
import ParleySignaling
import ParleyWire

@Suite struct CallLocationTests {
    static let keyring = RoutingKeyring(current: RoutingKey(id: 2, secret: (0..<32).map { UInt8($0) }))
    static let me = TransportAddress.v4(IPv4Address(10, 244, 2, 11), port: 8080)
    static let owner = TransportAddress.v4(IPv4Address(10, 244, 2, 12), port: 8080)

    static func id(owner: TransportAddress, cluster: UInt16 = 4) -> String {
        var generator = SystemRandomNumberGenerator()
        return CallID.make(keyring: keyring, clusterID: cluster, owner: owner, issuedHour: 100, using: &generator)
    }

    static func location(_ id: String, heldHere: Bool = false, forwarded: Bool = false) -> CallLocation {
        CallLocation.of(callID: id, heldHere: heldHere, forwarded: forwarded, keyring: keyring, clusterID: 4, ownEndpoint: me,
                        peers: [IPNetwork("10.244.0.0/16")!])
    }

    @Test func aCallAnotherPodOwnsIsForwardedThereOnce() {
        let id = Self.id(owner: Self.owner)
        #expect(Self.location(id) == .elsewhere(Self.owner))
        #expect(Self.location(id, heldHere: true) == .here, "held here wins: nothing is forwarded")
        #expect(Self.location(id, forwarded: true) == .nowhere, "a forwarded request is never forwarded again")
    }

    @Test func idsThatNameNoOtherReachablePodAreNowhere() {
        #expect(Self.location(Self.id(owner: Self.me)) == .nowhere, "itself, yet not held: the call has ended")
        #expect(Self.location(Self.id(owner: Self.owner, cluster: 5)) == .nowhere, "another cluster's call")
        #expect(Self.location(Self.id(owner: .v4(IPv4Address(0, 0, 0, 0), port: 8080))) == .nowhere)
        #expect(Self.location(Self.id(owner: .v4(IPv4Address(10, 244, 2, 12), port: 0))) == .nowhere)
        #expect(Self.location(Self.id(owner: .v6(IPv6Address("::")!, port: 8080))) == .nowhere)
        #expect(Self.location("rtc_0123456789abcdef") == .nowhere)
        #expect(Self.location(Self.id(owner: .v4(IPv4Address(192, 0, 2, 7), port: 8080))) == .nowhere,
                "a sealed id naming an address outside the transceivers' network sends nothing there")
        #expect(Self.location("") == .nowhere)
    }
}
