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

    /// The last two checks' transaction ids: either one's success response commits (a client
    /// retransmits, and answers can cross a newer check).
    struct Transactions {
        var latest: STUNTransactionID?
        var previous: STUNTransactionID?

        mutating func add(_ id: STUNTransactionID) {
            guard id != latest else { return }
            previous = latest
            latest = id
        }

        func contains(_ id: STUNTransactionID) -> Bool { id == latest || id == previous }
    }

    /// Another worker a valid check named for a committed flow (the client's port reused by a new
    /// call, or a spoofed check): the route moves only when that worker answers.
    struct Candidate {
        var transceiver: TransportAddress
        var transactions: Transactions
        var createdAt: Instant
    }

    struct Route {
        var transceiver: TransportAddress
        var lastSeen: Instant
        var committed: Bool
        /// Pending checks' transactions: only their success responses commit.
        var transactions = Transactions()
        var createdAt: Instant
        var lastStored: Instant?
        /// The token nonce that opened a pending route (pending routes are also limited per token).
        var nonce: UInt32 = 0
        var candidate: Candidate?
    }

    public let policy: Policy
    public private(set) var keyring: RoutingKeyring
    private var routes: [TransportAddress: Route] = [:]
    public private(set) var pendingCount = 0
    public private(set) var committedCount = 0
    /// Pending routes per token nonce: one valid token replayed from many spoofed sources cannot
    /// take every pending slot.
    private var pendingByToken: [UInt32: Int] = [:]
    public static let maximumPendingPerToken = 8
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
                guard isSTUN else { return .forward(to: routes.values[index].transceiver) }
                return committedCheck(datagram, index: index, client: client, now: now)
            }
            // Pending: only more checks (retransmissions, or the nominating one) go on.
            guard isSTUN else { return .drop(.pendingNotSTUN) }
            guard let check = openCheck(datagram), check.worker == routes.values[index].transceiver else {
                return .drop(.badToken)
            }
            routes.values[index].transactions.add(check.transaction)
            return .forward(to: check.worker)
        }
        guard isSTUN else { return .unknown }
        guard let check = openCheck(datagram) else { return .drop(.badToken) }
        guard isAllowedWorker(check.worker) else { return .drop(.workerNotAllowed) }
        guard pendingCount < policy.maximumPending,
              pendingByToken[check.nonce, default: 0] < Self.maximumPendingPerToken else { return .drop(.pendingFull) }
        guard routes.count < policy.maximumRoutes else { return .drop(.routesFull) }
        var route = Route(transceiver: check.worker, lastSeen: now, committed: false, createdAt: now, nonce: check.nonce)
        route.transactions.add(check.transaction)
        routes[client] = route
        pendingCount += 1
        pendingByToken[check.nonce, default: 0] += 1
        return .forward(to: check.worker)
    }

    /// A STUN message on a committed flow: a consent check refreshes the stored route; a valid check
    /// naming another worker goes to that worker as a candidate.
    private mutating func committedCheck(_ datagram: UnsafeRawBufferPointer, index: Dictionary<TransportAddress, Route>.Index,
                                         client: TransportAddress, now: Instant) -> ClientDecision {
        let current = routes.values[index].transceiver
        guard let check = openCheck(datagram) else { return .forward(to: current) }
        if check.worker == current {
            if let stored = routes.values[index].lastStored, now - stored >= policy.storeLifetime / 3 {
                routes.values[index].lastStored = now
                commits.append(Commit(client: client, transceiver: current))
            }
            return .forward(to: current)
        }
        guard isAllowedWorker(check.worker) else { return .drop(.workerNotAllowed) }
        if routes.values[index].candidate?.transceiver != check.worker {
            routes.values[index].candidate = Candidate(transceiver: check.worker, transactions: Transactions(), createdAt: now)
        }
        routes.values[index].candidate?.transactions.add(check.transaction)
        return .forward(to: check.worker)
    }

    /// Parses a Binding request and opens the token before the `:` of its USERNAME.
    private func openCheck(_ datagram: UnsafeRawBufferPointer) -> (worker: TransportAddress, transaction: STUNTransactionID, nonce: UInt32)? {
        guard let message = try? STUNMessage.parse(datagram), message.type == .bindingRequest,
              let ufrag = message.usernameRecipientPart(in: datagram),
              let token = try? keyring.open(UnsafeRawBufferPointer(rebasing: datagram[ufrag]), currentHour: currentHour)
        else { return nil }
        return (token.worker, message.transactionID, token.nonce)
    }

    private func isAllowedWorker(_ worker: TransportAddress) -> Bool {
        policy.workerPorts.contains(worker.port) && policy.workerNetworks.contains { $0.contains(worker) }
    }

    // MARK: Transceiver → client

    /// Decides what to do with a tunnel datagram from `source` (a transceiver worker) for `client`.
    public mutating func fromTransceiver(_ payload: UnsafeRawBufferPointer, client: TransportAddress,
                                         source: TransportAddress, now: Instant) -> TransceiverDecision {
        guard let index = routes.index(forKey: client) else { return .unknown }
        let route = routes.values[index]
        if route.transceiver == source {
            if route.committed {
                routes.values[index].lastSeen = now
                return .deliver(to: client)
            }
            guard isSuccess(payload, for: route.transactions) else { return .drop(.pendingNotSTUN) }
            routes.values[index].committed = true
            routes.values[index].transactions = Transactions()
            routes.values[index].lastStored = now
            routes.values[index].lastSeen = now
            releasePending(nonce: route.nonce)
            committedCount += 1
            commits.append(Commit(client: client, transceiver: source))
            return .deliver(to: client)
        }
        // Never a reflector: only the transceiver that owns this client may send to it, or the
        // candidate worker answering the very check that named it.
        guard let candidate = route.candidate, candidate.transceiver == source,
              isSuccess(payload, for: candidate.transactions) else { return .drop(.notRouteOwner) }
        routes.values[index].transceiver = source
        routes.values[index].candidate = nil
        routes.values[index].lastStored = now
        routes.values[index].lastSeen = now
        commits.append(Commit(client: client, transceiver: source))
        return .deliver(to: client)
    }

    private func isSuccess(_ payload: UnsafeRawBufferPointer, for transactions: Transactions) -> Bool {
        guard let message = try? STUNMessage.parse(payload), message.type == .bindingSuccess else { return false }
        return transactions.contains(message.transactionID)
    }

    private mutating func releasePending(nonce: UInt32) {
        pendingCount -= 1
        if let count = pendingByToken[nonce] {
            pendingByToken[nonce] = count > 1 ? count - 1 : nil
        }
    }

    // MARK: Store and time

    /// Installs a committed route learned from the route store (after a restart, or on another replica).
    public mutating func install(client: TransportAddress, transceiver: TransportAddress, now: Instant) -> Bool {
        guard isAllowedWorker(transceiver) else { return false }
        if let existing = routes[client] {
            if existing.committed { return existing.transceiver == transceiver }
            releasePending(nonce: existing.nonce)
        } else if routes.count >= policy.maximumRoutes {
            return false
        }
        routes[client] = Route(transceiver: transceiver, lastSeen: now, committed: true, createdAt: now, lastStored: now)
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
            guard expired else {
                if let candidate = route.candidate, now - candidate.createdAt >= policy.pendingLifetime {
                    routes[client]?.candidate = nil
                }
                continue
            }
            routes[client] = nil
            if route.committed { committedCount -= 1 } else { releasePending(nonce: route.nonce) }
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
