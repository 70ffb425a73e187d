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
/// Only configured cluster relays are believed (`isTrusted`: the configured address's host, and its
/// port up to `maximumPeers - 1` above it, where that relay's other workers are; or any address of
/// a configured peer network, where relays behind NAT forward from), and at most
/// `maximumPeers` sockets get a table, made when a datagram opens a route and dropped when it routes
/// nothing. Tables never forward again: their policy has no cluster relays (one hop, no loops).
///
/// Each table has an ingress id of its own (`peerIngressFlag | slot`), written into the tunnel
/// header toward the worker, which echoes it in its answers: the answer finds its table by that id,
/// not by the client's address, which a client may share between a direct flow and forwarded ones
/// (or two peers' tables, while it moves).
public struct PeerRouteTables {
    /// Peer sockets one relay tracks: a few relays per cluster, a few workers each.
    public static let maximumPeers = 64
    /// Set in the ingress id of forwarded flows (a relay's own workers use ids below it).
    public static let peerIngressFlag: UInt16 = 0x8000

    public let trustedHosts: [TransportAddress]
    public let trustedNetworks: [IPNetwork]
    private let policy: RouteTable.Policy
    private var keyring: RoutingKeyring
    private var tables: [TransportAddress: RouteTable] = [:]
    /// Which peer socket each ingress slot stands for (nil: free), and back.
    private var slots: [TransportAddress?] = Array(repeating: nil, count: PeerRouteTables.maximumPeers)
    private var slotOf: [TransportAddress: Int] = [:]
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
        trustedNetworks = policy.peerNetworks
        var own = policy
        own.clusterRelays = [:]
        self.policy = own
    }

    public var isEmpty: Bool { trustedHosts.isEmpty && trustedNetworks.isEmpty }

    /// Whether tunnel datagrams from `source` may carry clients' datagrams: a configured cluster
    /// relay's host (any of its workers' ports), or an address of a configured peer network.
    public func isTrusted(_ source: TransportAddress) -> Bool {
        trustedHosts.contains { configured in
            configured.sameHost(as: source) && source.port >= configured.port
                && Int(source.port) - Int(configured.port) < Self.maximumPeers
        } || trustedNetworks.contains { $0.contains(source) }
    }

    /// The ingress id of `peer`'s table (for the tunnel header toward the worker).
    public func ingressID(of peer: TransportAddress) -> UInt16? {
        slotOf[peer].map { Self.peerIngressFlag | UInt16(truncatingIfNeeded: $0) }
    }

    /// The peer socket a worker's answer is for, by the ingress id it echoes; nil for a relay's own.
    public func peer(ingressID: UInt16) -> TransportAddress? {
        guard ingressID & Self.peerIngressFlag != 0 else { return nil }
        let slot = Int(ingressID & ~Self.peerIngressFlag)
        return slot < slots.count ? slots[slot] : nil
    }

    /// A table for `peer`, made if there is a free slot.
    private mutating func makeTable(for peer: TransportAddress) -> Bool {
        if tables[peer] != nil { return true }
        guard let slot = slots.firstIndex(where: { $0 == nil }) else { return false }
        var table = RouteTable(keyring: keyring, policy: policy, reserve: false)
        table.currentHour = currentHour
        table.draining = draining
        tables[peer] = table
        slots[slot] = peer
        slotOf[peer] = slot
        return true
    }

    /// Drops `peer`'s table if it routes nothing (a datagram that opened nothing leaves no table).
    private mutating func dropIfEmpty(_ peer: TransportAddress) {
        guard tables[peer]?.count == 0 else { return }
        tables[peer] = nil
        if let slot = slotOf.removeValue(forKey: peer) { slots[slot] = nil }
    }

    /// A client's datagram that `peer` forwarded: where it goes (a worker of this cluster).
    public mutating func fromPeer(_ datagram: UnsafeRawBufferPointer, client: TransportAddress, peer: TransportAddress,
                                  now: Instant) -> RouteTable.ClientDecision {
        guard isTrusted(peer) else { return .drop(.untrustedPeer) }
        guard makeTable(for: peer) else { return .drop(.untrustedPeer) }
        let decision = tables[peer]!.fromClient(datagram, client: client, now: now)
        dropIfEmpty(peer)
        return decision
    }

    /// Which peer holds a route for `client`, if one does (the slow way, for answers whose ingress
    /// id is unknown: sent before this relay restarted).
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
        guard isTrusted(peer), makeTable(for: peer) else { return false }
        let installed = tables[peer]!.install(client: client, transceiver: transceiver, now: now)
        dropIfEmpty(peer)
        return installed
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
            dropIfEmpty(peer)
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
