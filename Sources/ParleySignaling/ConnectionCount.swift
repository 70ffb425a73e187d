import ParleyWire

/// HTTP connections open per client address (IPv6: per /64), so one host cannot hold the whole
/// connection cap (4,096 by default) with keep-alive connections that each sent one quick request.
/// Trusted proxies (load balancers) are exempt: every connection through them has their address.
/// Sans-IO: the listener calls `open` for each accepted connection and `close` when it ends.
public struct ConnectionCount: Sendable {
    public let maximumPerAddress: Int
    public let exempt: [IPNetwork]
    private var open: [ClientAddressKey: Int] = [:]

    public init(maximumPerAddress: Int, exempt: [IPNetwork] = []) {
        self.maximumPerAddress = maximumPerAddress
        self.exempt = exempt
    }

    /// Whether a new connection from `address` may stay; if so it is counted until `close`.
    public mutating func open(_ address: TransportAddress) -> Bool {
        guard !exempt.contains(where: { $0.contains(address) }) else { return true }
        let key = ClientAddressKey(address)
        let count = open[key] ?? 0
        guard count < maximumPerAddress else { return false }
        open[key] = count + 1
        return true
    }

    /// A connection `open` accepted has closed.
    public mutating func close(_ address: TransportAddress) {
        guard !exempt.contains(where: { $0.contains(address) }) else { return }
        let key = ClientAddressKey(address)
        guard let count = open[key] else { return }
        open[key] = count > 1 ? count - 1 : nil
    }

    /// Addresses with a connection open (bounded by the listener's connection cap).
    public var addresses: Int { open.count }
}
