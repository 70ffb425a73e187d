import ParleyWire

/// Which address a signaling request comes from, for its limits and (later) its region. The TCP
/// peer, unless the peer is a proxy the operator trusts (`--trusted-proxy`, e.g. the load
/// balancer's network): then the rightmost `X-Forwarded-For` entry that is not itself a trusted
/// proxy, since every proxy appends the address it saw and only the trusted ones' additions are
/// believable. Anything unparsable there stops the walk at the last trusted hop.
public struct ClientAddressResolver: Sendable {
    public var trustedProxies: [IPNetwork]
    /// Entries of the header looked at, from the right.
    static let maximumHops = 16

    public init(trustedProxies: [IPNetwork] = []) { self.trustedProxies = trustedProxies }

    public func resolve(peer: TransportAddress, forwardedFor headers: [String]) -> TransportAddress {
        guard isTrusted(peer) else { return peer }
        let entries = headers.flatMap { $0.split(separator: ",") }.suffix(Self.maximumHops)
        var client = peer
        for entry in entries.reversed() {
            guard let address = Self.parse(entry.trimmingSpaces()) else { break }
            client = address
            guard isTrusted(address) else { break }
        }
        return client
    }

    func isTrusted(_ address: TransportAddress) -> Bool { trustedProxies.contains { $0.contains(address) } }

    /// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711` (the port is dropped).
    static func parse(_ text: Substring) -> TransportAddress? {
        if let ip = IPv4Address(text) { return .v4(ip, port: 0) }
        if let ip = IPv6Address(text) { return .v6(ip, port: 0) }
        if text.hasPrefix("["), let close = text.firstIndex(of: "]"),
           let ip = IPv6Address(text[text.index(after: text.startIndex)..<close]) {
            return .v6(ip, port: 0)
        }
        if let colon = text.lastIndex(of: ":"), let ip = IPv4Address(text[..<colon]) { return .v4(ip, port: 0) }
        return nil
    }
}
