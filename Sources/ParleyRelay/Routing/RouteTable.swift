import ParleyWire

/// What a relay worker knows about flows, sans-IO: which client address goes to which transceiver
/// worker. One table per worker thread (the kernel keeps a client's datagrams on one SO_REUSEPORT
/// socket), so nothing here is shared or locked.
///
/// The rules (docs/relay.md):
/// - An unknown client gets a route only from a STUN Binding request whose USERNAME starts with a
///   token that opens. The flow is *pending* (bounded in number and time) until the transceiver the
///   token names answers that request's transaction with a success response; then it is committed.
/// - Committed flows are forwarded by lookup alone, both ways.
/// - Toward a client, the relay sends only what that client's own transceiver sent.
public struct RouteTable {
    public struct Policy: Sendable {
        public var maximumPending = 4096
        public var pendingLifetime: Duration = .seconds(5)
        public var maximumRoutes = 100_000
        /// A committed route with no traffic for this long is forgotten (consent checks every few
        /// seconds keep live calls well inside it).
        public var idleTimeout: Duration = .seconds(60)
        /// Transceiver workers a token may name. Anything else is refused: whoever holds the routing
        /// key must not be able to point the relay at arbitrary internal addresses.
        public var workerNetworks: [IPv4Network] = []
        public var workerPorts: ClosedRange<UInt16> = 1...65535
        /// How long the route store keeps a route; checks on the route refresh it a third of the way in.
        public var storeLifetime: Duration = .seconds(30)

        public init() {}
    }

    public enum ClientDecision: Hashable, Sendable {
        /// Send the datagram, in a tunnel, to this transceiver worker.
        case forward(to: TransportAddress)
        /// Not routable yet: the route store may know the flow (after a relay restart).
        case unknown
        case drop(RelayDropReason)
    }

    public enum TransceiverDecision: Hashable, Sendable {
        /// Send the payload to this client.
        case deliver(to: TransportAddress)
        /// No route: the route store may know the flow.
        case unknown
        case drop(RelayDropReason)
    }

    /// A route that became committed or should be refreshed (to be written to the route store).
    public struct Commit: Equatable, Sendable {
        public var client: TransportAddress
        public var transceiver: TransportAddress
    }

    struct Route {
        var transceiver: TransportAddress
        var lastSeen: Instant
        var committed: Bool
        /// The pending check's transaction id: only its success response commits.
        var transaction: STUNTransactionID?
        var createdAt: Instant
        var lastStored: Instant?
    }

    public let policy: Policy
    public private(set) var keyring: RoutingKeyring
    private var routes: [TransportAddress: Route] = [:]
    public private(set) var pendingCount = 0
    public private(set) var committedCount = 0
    private var commits: [Commit] = []
    /// Hour of the token clock, set by the owner (a relay worker refreshes it every second).
    public var currentHour: UInt16?

    public init(keyring: RoutingKeyring, policy: Policy = .init()) {
        self.keyring = keyring
        self.policy = policy
        routes.reserveCapacity(min(policy.maximumRoutes, 4096))
    }

    // MARK: Client → transceiver

    /// Decides what to do with a datagram from `client`.
    public mutating func fromClient(_ datagram: UnsafeRawBufferPointer, client: TransportAddress, now: Instant) -> ClientDecision {
        let isSTUN = PacketKind.classify(datagram) == .stun
        if let index = routes.index(forKey: client) {
            // The hot path: one hash lookup, the route updated in place.
            if routes.values[index].committed {
                routes.values[index].lastSeen = now
                // Consent checks refresh the stored copy before it expires.
                if isSTUN, let stored = routes.values[index].lastStored, now - stored >= policy.storeLifetime / 3 {
                    routes.values[index].lastStored = now
                    commits.append(Commit(client: client, transceiver: routes.values[index].transceiver))
                }
                return .forward(to: routes.values[index].transceiver)
            }
            var route = routes.values[index]
            // Pending: only more checks (retransmissions, or the nominating one) go on.
            guard isSTUN else { return .drop(.pendingNotSTUN) }
            if let check = openCheck(datagram, now: now), check.worker == route.transceiver {
                route.transaction = check.transaction
                routes[client] = route
                return .forward(to: route.transceiver)
            }
            return .drop(.badToken)
        }
        guard isSTUN else { return .unknown }
        guard let check = openCheck(datagram, now: now) else { return .drop(.badToken) }
        guard isAllowedWorker(check.worker) else { return .drop(.workerNotAllowed) }
        guard pendingCount < policy.maximumPending else { return .drop(.pendingFull) }
        guard routes.count < policy.maximumRoutes else { return .drop(.routesFull) }
        routes[client] = Route(transceiver: check.worker, lastSeen: now, committed: false, transaction: check.transaction,
                               createdAt: now)
        pendingCount += 1
        return .forward(to: check.worker)
    }

    /// Parses a Binding request and opens the token before the `:` of its USERNAME.
    private func openCheck(_ datagram: UnsafeRawBufferPointer, now: Instant) -> (worker: TransportAddress, transaction: STUNTransactionID)? {
        guard let message = try? STUNMessage.parse(datagram), message.type == .bindingRequest,
              let ufrag = message.usernameRecipientPart(in: datagram),
              let token = try? keyring.open(UnsafeRawBufferPointer(rebasing: datagram[ufrag]), currentHour: currentHour)
        else { return nil }
        return (token.worker, message.transactionID)
    }

    private func isAllowedWorker(_ worker: TransportAddress) -> Bool {
        policy.workerPorts.contains(worker.port) && policy.workerNetworks.contains { $0.contains(worker) }
    }

    // MARK: Transceiver → client

    /// Decides what to do with a tunnel datagram from `source` (a transceiver worker) for `client`.
    public mutating func fromTransceiver(_ payload: UnsafeRawBufferPointer, client: TransportAddress,
                                         source: TransportAddress, now: Instant) -> TransceiverDecision {
        guard let index = routes.index(forKey: client) else { return .unknown }
        // Never a reflector: only the transceiver that owns this client may send to it.
        guard routes.values[index].transceiver == source else { return .drop(.notRouteOwner) }
        if routes.values[index].committed {
            routes.values[index].lastSeen = now
            return .deliver(to: client)
        }
        var route = routes.values[index]
        guard let transaction = route.transaction, let message = try? STUNMessage.parse(payload),
              message.type == .bindingSuccess, message.transactionID == transaction else {
            return .drop(.pendingNotSTUN)
        }
        route.committed = true
        route.transaction = nil
        route.lastStored = now
        pendingCount -= 1
        committedCount += 1
        commits.append(Commit(client: client, transceiver: route.transceiver))
        route.lastSeen = now
        routes.values[index] = route
        return .deliver(to: client)
    }

    // MARK: Store and time

    /// Installs a committed route learned from the route store (after a restart, or on another replica).
    public mutating func install(client: TransportAddress, transceiver: TransportAddress, now: Instant) -> Bool {
        guard isAllowedWorker(transceiver) else { return false }
        if let existing = routes[client] {
            if existing.committed { return existing.transceiver == transceiver }
            pendingCount -= 1
        } else if routes.count >= policy.maximumRoutes {
            return false
        }
        routes[client] = Route(transceiver: transceiver, lastSeen: now, committed: true, transaction: nil, createdAt: now,
                               lastStored: now)
        committedCount += 1
        return true
    }

    /// Whether `takeCommits` has anything (checked per batch, so the empty case costs nothing).
    public var hasCommits: Bool { !commits.isEmpty }

    /// Routes committed since the last call, for the route store.
    public mutating func takeCommits() -> [Commit] {
        defer { commits.removeAll(keepingCapacity: true) }
        return commits
    }

    /// Forgets pending flows older than their lifetime and committed ones idle past the timeout.
    /// Returns how many were removed.
    @discardableResult
    public mutating func expire(now: Instant) -> Int {
        var removed = 0
        for (client, route) in routes {
            let expired = route.committed ? now - route.lastSeen >= policy.idleTimeout
                : now - route.createdAt >= policy.pendingLifetime
            guard expired else { continue }
            routes[client] = nil
            if route.committed { committedCount -= 1 } else { pendingCount -= 1 }
            removed += 1
        }
        return removed
    }

    public func route(for client: TransportAddress) -> (transceiver: TransportAddress, committed: Bool)? {
        routes[client].map { ($0.transceiver, $0.committed) }
    }

    public var count: Int { routes.count }
}

/// Why a relay dropped a datagram; counted per reason.
public enum RelayDropReason: String, CaseIterable, Sendable {
    case badToken = "bad_token"
    case workerNotAllowed = "worker_not_allowed"
    case pendingFull = "pending_full"
    case routesFull = "routes_full"
    case pendingNotSTUN = "pending_not_stun"
    case notRouteOwner = "not_route_owner"
    case noRoute = "no_route"
    case malformedTunnel = "malformed_tunnel"
    case untrustedTransceiver = "untrusted_transceiver"
    case lookupQueueFull = "lookup_queue_full"
    case unknownProtocol = "unknown_protocol"
}
