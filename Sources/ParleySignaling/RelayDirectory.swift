import ParleyWire

/// Which relays an answer advertises, nearest first (Global Relay, docs/global-relay.md). The
/// public relay addresses are given by region (`--relay REGION=HOST:PORT`, IPv4 and IPv6, several
/// per region); a request's region comes from a header the edge sets (`--region-header`, the way
/// a CDN or a cloud load balancer tells the origin where the client is), else from the client
/// networks configured per region (`--client-region CIDR=REGION`), else it is the transceiver's own.
///
/// The answer then lists every relay of that region first, then the relays of the other regions
/// in the order they were configured: the client uses the first, and can move to another by ICE
/// alone when it stops answering (its other candidate pairs are checked all along).
///
/// The header is the edge's: the shell believes it only on requests from a trusted proxy (a client
/// lying about its region would only lengthen its own path, but the issue of who says where a
/// client is belongs to the edge). A region name the directory does not know is ignored.
public struct RelayDirectory: Sendable, Equatable {
    public struct Region: Sendable, Equatable {
        public var name: String
        public var relays: [TransportAddress]
    }

    /// In the order configured (the order other regions follow the nearest in an answer).
    public private(set) var regions: [Region] = []
    public var ownRegion: String
    public var clientNetworks: [(network: IPNetwork, region: String)] = []

    public init(ownRegion: String) { self.ownRegion = ownRegion }

    public var isEmpty: Bool { regions.isEmpty }

    /// Adds a relay address to `region` (created on first use).
    public mutating func add(_ address: TransportAddress, region: String) {
        if let index = regions.firstIndex(where: { $0.name == region }) {
            if !regions[index].relays.contains(address) { regions[index].relays.append(address) }
        } else {
            regions.append(Region(name: region, relays: [address]))
        }
    }

    /// `REGION=HOST:PORT` (an IPv6 host in brackets); nil when malformed.
    public static func parseRelay(_ text: String) -> (region: String, address: TransportAddress)? {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, isRegionName(parts[0]), let address = TransportAddress(parts[1]) else { return nil }
        return (parts[0], address)
    }

    /// `CIDR=REGION`; nil when malformed.
    public static func parseClientRegion(_ text: String) -> (network: IPNetwork, region: String)? {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let network = IPNetwork(parts[0]), isRegionName(parts[1]) else { return nil }
        return (network, parts[1])
    }

    /// 1–64 characters of letters, digits, `-`, `_`, `.` (what region names look like: us-east-1).
    public static func isRegionName(_ text: some StringProtocol) -> Bool {
        (1...64).contains(text.utf8.count) && text.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E
        }
    }

    /// The region a request comes from: a known region named by the edge's header, else the most
    /// specific client network holding `client`, else this transceiver's own.
    public func region(header: String?, client: TransportAddress) -> String {
        if let header {
            let name = header.trimmingSpacesAndTabs()
            if regions.contains(where: { $0.name == name }) { return String(name) }
        }
        let matches = clientNetworks.filter { $0.network.contains(client) }
        if let match = matches.max(by: { Self.prefixLength($0.network) < Self.prefixLength($1.network) }) { return match.region }
        return ownRegion
    }

    /// The relays for a client in `region`: that region's first, then the others in configured
    /// order. A region without relays of its own gets the own region's first.
    public func relays(for region: String) -> [TransportAddress] {
        let nearest = regions.first { $0.name == region } ?? regions.first { $0.name == ownRegion }
        var ordered = nearest?.relays ?? []
        for other in regions where other.name != nearest?.name { ordered += other.relays }
        return ordered
    }

    static func prefixLength(_ network: IPNetwork) -> Int {
        Int(network.description.split(separator: "/").last ?? "") ?? 0
    }

    public static func == (lhs: RelayDirectory, rhs: RelayDirectory) -> Bool {
        lhs.regions == rhs.regions && lhs.ownRegion == rhs.ownRegion
            && lhs.clientNetworks.map { "\($0.network)=\($0.region)" } == rhs.clientNetworks.map { "\($0.network)=\($0.region)" }
    }
}

extension StringProtocol {
    func trimmingSpacesAndTabs() -> SubSequence {
        var text = self[...]
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}
