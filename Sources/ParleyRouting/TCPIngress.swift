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
/// Limits: connections in all (`maximumConnections`) and per client address (an IPv4 address, an
/// IPv6 /64: a browser opens one per candidate pair and ICE generation, a flood many); a frame
/// longer than `StreamDeframer.maximumFrame` closes it; a connection whose route idled out or
/// whose pending flow expired is closed.
public struct TCPIngress {
    public struct Policy: Sendable {
        public var maximumConnections = 10_000
        public var maximumConnectionsPerAddress = 16
        /// How long a new connection has to deliver its first whole frame.
        public var firstFrameTimeout: Duration = .seconds(5)
        public init() {}
    }

    /// Why a connection was refused or closed; counted per reason.
    public enum CloseReason: String, CaseIterable, Sendable {
        /// `maximumConnections` reached.
        case tooManyConnections = "too_many_connections"
        /// `maximumConnectionsPerAddress` reached for the peer's address (IPv6: /64).
        case tooManyFromAddress = "too_many_from_address"
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
    private var perAddress: [ConnectionSource: Int] = [:]

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

    /// A new connection from `peer`: nil when accepted, else why it is refused (close it at once).
    public mutating func accept(peer: TransportAddress, now: Instant) -> CloseReason? {
        guard !table.draining else { return .draining }
        guard connections[peer] == nil else { return .tooManyFromAddress }  // the kernel would not give one twice
        guard connections.count < policy.maximumConnections else { return .tooManyConnections }
        let source = ConnectionSource(peer)
        guard perAddress[source, default: 0] < policy.maximumConnectionsPerAddress else { return .tooManyFromAddress }
        perAddress[source, default: 0] += 1
        connections[peer] = Connection(openedAt: now)
        return nil
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
        guard connections.removeValue(forKey: peer) != nil else { return }
        let source = ConnectionSource(peer)
        if let count = perAddress[source] { perAddress[source] = count > 1 ? count - 1 : nil }
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
