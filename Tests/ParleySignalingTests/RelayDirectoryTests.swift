import ParleyWire
import Testing

@testable import ParleySignaling

@Suite struct RelayDirectoryTests {
    static func directory() -> RelayDirectory {
        var directory = RelayDirectory(ownRegion: "eu")
        for entry in ["us=192.0.2.10:3478", "eu=198.51.100.10:3478", "eu=[2001:db8::10]:3478", "ap=203.0.113.10:3478"] {
            let (region, address) = RelayDirectory.parseRelay(entry)!
            directory.add(address, region: region)
        }
        directory.clientNetworks = [RelayDirectory.parseClientRegion("10.8.0.0/16=ap")!]
        return directory
    }

    static let us = TransportAddress("192.0.2.10:3478")!, eu = TransportAddress("198.51.100.10:3478")!
    static let eu6 = TransportAddress("[2001:db8::10]:3478")!, ap = TransportAddress("203.0.113.10:3478")!
    static let someone = TransportAddress("198.18.0.1:5000")!

    @Test func theClientsRegionComesFirstThenTheOthersInConfiguredOrder() {
        let directory = Self.directory()
        #expect(directory.relays(for: "us") == [Self.us, Self.eu, Self.eu6, Self.ap])
        #expect(directory.relays(for: "eu") == [Self.eu, Self.eu6, Self.us, Self.ap], "both families of the region, then the rest")
        #expect(directory.relays(for: "ap") == [Self.ap, Self.us, Self.eu, Self.eu6])
        #expect(directory.relays(for: "mars") == directory.relays(for: "eu"), "a region without relays gets the own region's first")
    }

    @Test func theRegionIsTheHeadersThenTheClientNetworksThenOurOwn() {
        let directory = Self.directory()
        #expect(directory.region(header: " us ", client: Self.someone) == "us")
        #expect(directory.region(header: "mars", client: Self.someone) == "eu", "an unknown region in the header is ignored")
        #expect(directory.region(header: nil, client: .v4(IPv4Address(10, 8, 1, 2), port: 1)) == "ap")
        #expect(directory.region(header: "us", client: .v4(IPv4Address(10, 8, 1, 2), port: 1)) == "us", "the edge's header wins")
        #expect(directory.region(header: nil, client: Self.someone) == "eu")
        var nested = directory
        nested.clientNetworks = [RelayDirectory.parseClientRegion("10.0.0.0/8=us")!, RelayDirectory.parseClientRegion("10.8.0.0/16=ap")!]
        #expect(nested.region(header: nil, client: .v4(IPv4Address(10, 8, 1, 2), port: 1)) == "ap", "the most specific network")
        #expect(nested.region(header: nil, client: .v4(IPv4Address(10, 9, 1, 2), port: 1)) == "us")
    }

    @Test func malformedEntriesAreRefused() {
        for bad in ["", "eu", "=1.2.3.4:5", "eu=1.2.3.4", "eu=host.example:3478", "e u=1.2.3.4:5", "eu=2001:db8::1:3478",
                    String(repeating: "r", count: 65) + "=1.2.3.4:5"] {
            #expect(RelayDirectory.parseRelay(bad) == nil, "\(bad)")
        }
        for bad in ["10.0.0.0/8", "10.0.0.0/33=eu", "x=eu", "10.0.0.0/8=", "10.0.0.0/8=e/u"] {
            #expect(RelayDirectory.parseClientRegion(bad) == nil, "\(bad)")
        }
        var directory = RelayDirectory(ownRegion: "eu")
        directory.add(Self.eu, region: "eu")
        directory.add(Self.eu, region: "eu")
        #expect(directory.relays(for: "eu") == [Self.eu], "an address given twice is advertised once")
    }
}
