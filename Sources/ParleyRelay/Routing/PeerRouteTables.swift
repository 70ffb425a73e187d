import ParleyWire

/// The flows other clusters' relays forward to this one (two-stage routing, docs/global-relay.md),
/// sans-IO: one `RouteTable` per forwarding relay socket. A client's datagrams arrive in tunnel
/// datagrams from that socket (the client's address in the header), go on to this cluster's
/// transceiver worker like a direct client's, and the worker's answers go back through the same
/// socket. A table per peer socket keeps every rule of `RouteTable` as it is for forwarded flows
/// (pending until the client answers the owning transceiver's check, per-token, per-network and
/// per-session limits, never a reflector) and keeps a client address seen through a peer apart from
/// the same address seen directly.
///
/// Only configured cluster relays are believed (`isTrusted`, by host: each of their workers sends
/// from its own port), and at most `maximumPeers` sockets get a table. Tables never forward again:
/// their policy has no cluster relays (one hop, no loops).
public struct PeerRouteTables {
    /// Peer sockets one relay tracks: a few relays per cluster, a few workers each.
    public static let maximumPeers = 64

    public let trustedHosts: [TransportAddress]
    private let policy: RouteTable.Policy
    private var keyring: RoutingKeyring
    private var tables: [TransportAddress: RouteTable] = [:]
    public var currentHour: UInt16? {
        didSet { for peer in tables.keys { tables[peer]?.currentHour = currentHour } }
    }
    public var draining = false {
        didSet { for peer in tables.keys { tables[peer]?.draining = draining } }
    }

    /// `policy` is the relay's own; its cluster relays are the peers believed.
    public init(keyring: RoutingKeyring, policy: RouteTable.Policy) {
        self.keyring = keyring
        trustedHosts = Array(policy.clusterRelays.values)
        var own = policy
        own.clusterRelays = [:]
        self.policy = own
    }

    public var isEmpty: Bool { trustedHosts.isEmpty }

    /// Whether tunnel datagrams from `source` may carry clients' datagrams: a configured cluster
    /// relay's host, any port (each of its workers has its own).
    public func isTrusted(_ source: TransportAddress) -> Bool {
        trustedHosts.contains { $0.sameHost(as: source) }
    }

    /// A client's datagram that `peer` forwarded: where it goes (a worker of this cluster).
    public mutating func fromPeer(_ datagram: UnsafeRawBufferPointer, client: TransportAddress, peer: TransportAddress,
                                  now: Instant) -> RouteTable.ClientDecision {
        guard isTrusted(peer) else { return .drop(.untrustedPeer) }
        if tables[peer] == nil {
            guard tables.count < Self.maximumPeers else { return .drop(.untrustedPeer) }
            var table = RouteTable(keyring: keyring, policy: policy)
            table.currentHour = currentHour
            table.draining = draining
            tables[peer] = table
        }
        return tables[peer]!.fromClient(datagram, client: client, now: now)
    }

    /// Which peer holds a route for `client`, if one does (checked before the direct table, so an
    /// answer for a forwarded client goes back through its peer).
    public func peer(routing client: TransportAddress) -> TransportAddress? {
        tables.first { $0.value.route(for: client) != nil }?.key
    }

    /// A worker's datagram for a client that `peer`'s table routes: whether it goes back to the peer.
    public mutating func fromTransceiver(_ payload: UnsafeRawBufferPointer, client: TransportAddress, source: TransportAddress,
                                         peer: TransportAddress, now: Instant) -> RouteTable.TransceiverDecision {
        guard tables[peer] != nil else { return .unknown }
        return tables[peer]!.fromTransceiver(payload, client: client, source: source, now: now)
    }

    /// A route learned from the store for a client that arrives through `peer`.
    public mutating func install(client: TransportAddress, transceiver: TransportAddress, peer: TransportAddress, now: Instant) -> Bool {
        guard isTrusted(peer) else { return false }
        if tables[peer] == nil {
            guard tables.count < Self.maximumPeers else { return false }
            var table = RouteTable(keyring: keyring, policy: policy)
            table.currentHour = currentHour
            table.draining = draining
            tables[peer] = table
        }
        return tables[peer]!.install(client: client, transceiver: transceiver, now: now)
    }

    public var hasCommits: Bool { tables.values.contains { $0.hasCommits } }

    /// Routes committed since the last call, each with the peer it arrives through.
    public mutating func takeCommits() -> [(commit: RouteTable.Commit, peer: TransportAddress)] {
        var all: [(RouteTable.Commit, TransportAddress)] = []
        for peer in tables.keys where tables[peer]!.hasCommits {
            all += tables[peer]!.takeCommits().map { ($0, peer) }
        }
        return all
    }

    public mutating func replaceKeyring(_ keyring: RoutingKeyring) {
        self.keyring = keyring
        for peer in tables.keys { tables[peer]?.replaceKeyring(keyring) }
    }

    /// Forgets what idled out; a peer's table goes when it routes nothing.
    public mutating func expire(now: Instant) {
        for peer in tables.keys {
            tables[peer]?.expire(now: now)
            if tables[peer]?.count == 0 { tables[peer] = nil }
        }
    }

    public var committedCount: Int { tables.values.reduce(0) { $0 + $1.committedCount } }
    public var pendingCount: Int { tables.values.reduce(0) { $0 + $1.pendingCount } }
}

extension TransportAddress {
    /// The same IP address, whatever the ports.
    func sameHost(as other: TransportAddress) -> Bool {
        switch (self, other) {
        case (.v4(let a, _), .v4(let b, _)): a == b
        case (.v6(let a, _), .v6(let b, _)): a == b
        default: false
        }
    }
}
