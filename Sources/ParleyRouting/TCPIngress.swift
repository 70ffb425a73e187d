import ParleyWire

/// The relay's ICE-TCP side (RFC 6544, frames per RFC 4571), sans-IO: which TCP connections it
/// holds, what each frame may do, when a connection must go. The shell (`RelayTCPListener`) reads
/// and writes the sockets and runs what this decides.
///
/// A connection is known by its peer address (an address and port are one connection at a time).
/// It is routed exactly like a UDP flow, by a `RouteTable` of its own: the first frame must be a
/// STUN Binding request whose token opens (anything else, or nothing within `firstFrameTimeout`,
/// closes the connection), the flow is pending until the client answers its transceiver's check,
/// then committed. What a UDP flow has beyond that does not apply: a TCP flow is never looked up
/// in the route store (a relay that did not accept the connection cannot write to it, so a stored
/// route could not recover it) and its route goes with the connection.
///
/// Limits. A connection that has sent its first check is a call's, and only the total bounds it
/// (file descriptors): one public address can be a whole office or a carrier-grade NAT, with as
/// many calls as it has users. Connections still waiting for their first frame (*handshakes*) are
/// limited per client address (an IPv4 address, an IPv6 /64) and in all; at a limit, the oldest
/// handshake of that address (or of all) that has waited a second is closed to make room — a real
/// client sends its check within a round trip of connecting, so holding connections open without
/// one takes nobody's place for long. A frame longer than `StreamDeframer.maximumFrame` closes the
/// connection; so does a route that idled out or a pending flow that expired.
public struct TCPIngress {
    public struct Policy: Sendable {
        /// Connections in all (size it to the process's file descriptors).
        public var maximumConnections = 10_000
        /// Connections without their first check yet, from one address (IPv6: /64) and in all.
        public var maximumHandshakesPerAddress = 16
        public var maximumHandshakes = 1024
        /// How long a new connection has to deliver its first whole frame.
        public var firstFrameTimeout: Duration = .seconds(5)
        /// A handshake this old may be closed to make room for a new connection.
        public var evictionAge: Duration = .seconds(1)
        public init() {}
    }

    public enum AcceptDecision: Equatable, Sendable {
        case accept
        /// Accept it, and close this older handshake to make room.
        case acceptEvicting(TransportAddress)
        /// Close the new connection at once.
        case refuse(CloseReason)
    }

    /// Why a connection was refused or closed; counted per reason.
    public enum CloseReason: String, CaseIterable, Sendable {
        /// `maximumConnections` (or `maximumHandshakes`) reached, no handshake old enough to close.
        case tooManyConnections = "too_many_connections"
        /// `maximumHandshakesPerAddress` reached for the peer's address (IPv6: /64), none old enough to close.
        case tooManyFromAddress = "too_many_from_address"
        /// A handshake closed to make room for a newer connection (see the limits above).
        case evicted
        /// The peer's address and port already have a connection (the kernel does not give one twice).
        case duplicate
        /// The first frame was not a STUN Binding request whose token opens.
        case firstFrameRefused = "first_frame_refused"
        /// No whole first frame within `firstFrameTimeout`.
        case firstFrameTimeout = "first_frame_timeout"
        /// A length field past the frame limit.
        case frameTooLong = "frame_too_long"
        /// The route idled out (committed) or expired unanswered (pending).
        case idle
        /// The relay is draining: no new connection.
        case draining
    }

    public enum FrameDecision: Equatable, Sendable {
        /// Tunnel the frame's bytes to this transceiver worker (or another cluster's relay).
        case forward(to: TransportAddress)
        /// Drop this frame; the connection stays.
        case drop(RelayDropReason)
        /// Close the connection.
        case close(CloseReason)
    }

    struct Connection {
        var openedAt: Instant
        var routed = false
    }

    public let policy: Policy
    public private(set) var table: RouteTable
    private var connections: [TransportAddress: Connection] = [:]
    /// Handshakes per source, oldest first (at most `maximumHandshakesPerAddress` each).
    private var handshakes: [ConnectionSource: [TransportAddress]] = [:]
    public private(set) var handshakeCount = 0
    /// Every handshake in the order it opened, for the oldest overall; entries that have since been
    /// routed or closed are skipped when met (`isHandshake`), and the consumed front is dropped in bulk.
    private(set) var handshakeOrder: [(peer: TransportAddress, openedAt: Instant)] = []
    private var handshakeOrderStart = 0

    public init(keyring: RoutingKeyring, routing: RouteTable.Policy, policy: Policy = .init()) {
        self.policy = policy
        table = RouteTable(keyring: keyring, policy: routing, reserve: false)
    }

    public var connectionCount: Int { connections.count }

    public var draining: Bool {
        get { table.draining }
        set { table.draining = newValue }
    }

    public var currentHour: UInt16? {
        get { table.currentHour }
        set { table.currentHour = newValue }
    }

    public mutating func replaceKeyring(_ keyring: RoutingKeyring) { table.replaceKeyring(keyring) }

    /// A new connection from `peer`. With `.acceptEvicting`, the shell closes that older handshake
    /// (already forgotten here); with `.refuse`, the new connection.
    public mutating func accept(peer: TransportAddress, now: Instant) -> AcceptDecision {
        guard !table.draining else { return .refuse(.draining) }
        guard connections[peer] == nil else { return .refuse(.duplicate) }
        let source = ConnectionSource(peer)
        var evicted: TransportAddress?
        if handshakes[source, default: []].count >= policy.maximumHandshakesPerAddress {
            guard let oldest = handshakes[source]?.first, isEvictable(oldest, now: now) else { return .refuse(.tooManyFromAddress) }
            evicted = oldest
        } else if connections.count >= policy.maximumConnections || handshakeCount >= policy.maximumHandshakes {
            guard let oldest = oldestHandshake(), isEvictable(oldest, now: now) else { return .refuse(.tooManyConnections) }
            evicted = oldest
        }
        if let evicted { closed(peer: evicted) }
        connections[peer] = Connection(openedAt: now)
        handshakes[source, default: []].append(peer)
        handshakeCount += 1
        handshakeOrder.append((peer, now))
        return evicted.map { .acceptEvicting($0) } ?? .accept
    }

    private func isEvictable(_ peer: TransportAddress, now: Instant) -> Bool {
        connections[peer].map { !$0.routed && now - $0.openedAt >= policy.evictionAge } ?? false
    }

    private func isHandshake(_ entry: (peer: TransportAddress, openedAt: Instant)) -> Bool {
        connections[entry.peer].map { !$0.routed && $0.openedAt == entry.openedAt } ?? false
    }

    /// The oldest connection still without its first check (amortised O(1): each entry is passed once).
    private mutating func oldestHandshake() -> TransportAddress? {
        while handshakeOrderStart < handshakeOrder.count, !isHandshake(handshakeOrder[handshakeOrderStart]) {
            handshakeOrderStart += 1
        }
        if handshakeOrderStart > 1024, handshakeOrderStart * 2 > handshakeOrder.count {
            handshakeOrder.removeFirst(handshakeOrderStart)
            handshakeOrderStart = 0
        }
        return handshakeOrderStart < handshakeOrder.count ? handshakeOrder[handshakeOrderStart].peer : nil
    }

    /// The connection from `peer` is no longer a handshake (routed, or gone).
    private mutating func endHandshake(_ peer: TransportAddress) {
        let source = ConnectionSource(peer)
        guard var list = handshakes[source], let index = list.firstIndex(of: peer) else { return }
        list.remove(at: index)
        handshakes[source] = list.isEmpty ? nil : list
        handshakeCount -= 1
    }

    /// A whole frame from `peer`.
    public mutating func frame(_ bytes: UnsafeRawBufferPointer, from peer: TransportAddress, now: Instant) -> FrameDecision {
        guard let connection = connections[peer] else { return .close(.firstFrameRefused) }
        guard connection.routed else {
            // Only a check whose token opens starts a connection's flow; anything else ends it.
            guard PacketKind.classify(bytes) == .stun, let message = try? STUNMessage.parse(bytes), message.type == .bindingRequest,
                  case .forward(let transceiver) = table.fromClient(bytes, client: peer, now: now) else {
                return .close(.firstFrameRefused)
            }
            endHandshake(peer)
            connections[peer]?.routed = true
            return .forward(to: transceiver)
        }
        switch table.fromClient(bytes, client: peer, now: now) {
        case .forward(let transceiver): return .forward(to: transceiver)
        case .unknown: return .drop(.noRoute)
        case .drop(let reason): return .drop(reason)
        }
    }

    /// A tunnel datagram's payload for `client` from `source`: deliver it as a frame on the
    /// client's connection, or drop it.
    public mutating func fromTransceiver(_ payload: UnsafeRawBufferPointer, client: TransportAddress, source: TransportAddress,
                                         now: Instant) -> RouteTable.TransceiverDecision {
        guard connections[client] != nil else { return .drop(.noRoute) }
        switch table.fromTransceiver(payload, client: client, source: source, now: now) {
        case .deliver(let to): return .deliver(to: to)
        case .unknown: return .drop(.noRoute)
        case .drop(let reason): return .drop(reason)
        }
    }

    /// The connection from `peer` is gone (either side closed it): forget it and its route.
    public mutating func closed(peer: TransportAddress) {
        guard let connection = connections.removeValue(forKey: peer) else { return }
        if !connection.routed { endHandshake(peer) }
        table.forget(client: peer)
    }

    /// Connections to close now, with why: no first frame in time, or a route that expired.
    /// Call about once a second; linear in the connections held.
    public mutating func expire(now: Instant) -> [(peer: TransportAddress, reason: CloseReason)] {
        table.expire(now: now)
        _ = table.takeCommits()  // TCP routes are not stored (see above)
        var closing: [(peer: TransportAddress, reason: CloseReason)] = []
        for (peer, connection) in connections {
            if !connection.routed {
                if now - connection.openedAt >= policy.firstFrameTimeout { closing.append((peer, .firstFrameTimeout)) }
            } else if table.route(for: peer) == nil {
                closing.append((peer, .idle))
            }
        }
        for (peer, _) in closing { closed(peer: peer) }
        // The order of handshakes keeps only what is still one: everything older than the first
        // live handshake has been routed or closed (handshakes last at most `firstFrameTimeout`),
        // so the list holds no more than the connections accepted in that time.
        _ = oldestHandshake()
        handshakeOrder.removeFirst(handshakeOrderStart)
        handshakeOrderStart = 0
        return closing
    }
}

/// A connection's source for the per-address limit: an IPv4 address, or an IPv6 /64 (a host
/// commonly holds a whole /64).
struct ConnectionSource: Hashable {
    let high: UInt64
    let low: UInt64

    init(_ address: TransportAddress) {
        switch address {
        case .v4(let ip, _): high = 0; low = UInt64(ip.bits) | 1 << 32
        case .v6(let ip, _): high = ip.high; low = 0
        }
    }
}
