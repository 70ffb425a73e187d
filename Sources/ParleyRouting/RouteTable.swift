import ParleyWire

/// What a relay worker knows about flows, sans-IO: which client address goes to which transceiver
/// worker. One table per worker thread (the kernel keeps a client's datagrams on one SO_REUSEPORT
/// socket), so nothing here is shared or locked.
///
/// The rules (docs/relay.md):
/// - An unknown client gets a route only from a STUN Binding request whose USERNAME starts with a
///   token that opens. The flow is *pending* (bounded in number and time, per worker, per token and
///   per source network): only STUN passes. The transceiver the token names answers the check and
///   sends a check of its own to the client; the route is committed when the client's success
///   response to *that* check comes back from the client's address. A transaction id is 96 random
///   bits only someone at the address sees, so a spoofed source address can never commit a route
///   (return routability, the same proof the transceiver itself requires before it sends media).
/// - Committed flows are forwarded by lookup alone, both ways; a session commits a bounded number.
/// - Toward a client, the relay sends only what that client's own transceiver sent.
/// - While draining, nothing new: no pending flow, no commit, no route from the store, no route
///   moving to another session; committed routes go on both ways (and keep refreshing the store)
///   until they idle out.
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
        public var workerNetworks: [IPNetwork] = []
        public var workerPorts: ClosedRange<UInt16> = 1...65535
        /// How long the route store keeps a route; checks on the route refresh it a third of the way in.
        public var storeLifetime: Duration = .seconds(30)
        /// Pending flows from one source network (an IPv4 /24, an IPv6 /64): one host replaying old
        /// tokens cannot take the worker's pending slots.
        public var maximumPendingPerNetwork = 64
        /// Committed routes one session (token nonce) may hold: a client that moves between
        /// addresses needs a few; one with many ports of its own gets no more.
        public var maximumRoutesPerSession = 8
        /// Global Relay (docs/global-relay.md): this relay's cluster, and the relays of the other
        /// clusters by id. With any configured, a first check whose token names another cluster
        /// (its cluster id is in the clear) is forwarded to that cluster's relay, which holds the
        /// key to authenticate it; the flow is then routed here like any other (pending until the
        /// client answers the owning transceiver's check, committed, stored), with that relay in
        /// the transceiver's place. Without any, tokens open whatever cluster they name.
        public var clusterID: UInt16 = 0
        public var clusterRelays: [UInt16: TransportAddress] = [:]
        /// Networks other clusters' relays forward from, when that is not the configured address
        /// (`--peer-network`): in Kubernetes the datagrams of another region's relay pods leave
        /// through its nodes or a NAT gateway, any port, while its answers come back from the
        /// address configured in `clusterRelays` (a load balancer in front of those relays).
        public var peerNetworks: [IPNetwork] = []
        /// Pending flows toward other clusters' relays, apart from `maximumPending`: this relay
        /// cannot authenticate their tokens, so forged ones must not take its own cluster's slots.
        public var maximumForwardedPending = 1024

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

    /// The last two checks' transaction ids (a client retransmits, and answers can cross a newer
    /// check): answers to either may pass.
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
        /// The client's checks naming that worker, and that worker's checks to the client.
        var transactions: Transactions
        var serverChecks = Transactions()
        var createdAt: Instant
        var nonce: UInt32
        var checksToClient: UInt8 = 0
        /// As on a pending route: the client's check bytes naming this worker, and what it sent back.
        var allowance = PendingAllowance()
    }

    /// What transceivers may send a client that has not answered them yet, in all: one DTLS flight
    /// riding STUN (4 KiB: SPED's check and answer carry the server's flight) plus three times the
    /// STUN bytes the client sent (QUIC's anti-amplification rule, RFC 9000 §8.1). Plain ICE's
    /// checks and answers count too and stay far below it. STUN larger than plain ICE's
    /// (`smallSTUN`) needs bytes from the client first: a flow a transceiver's own check opened (no
    /// client bytes yet) gets its few plain checks only. Even a compromised transceiver gets no
    /// more than that toward an address, so the relay never becomes a reflector.
    struct PendingAllowance {
        private(set) var fromClient = 0
        private(set) var toClient = 0

        mutating func received(_ bytes: Int) { fromClient = min(fromClient + bytes, RouteTable.maximumPendingCredit) }

        /// Whether a STUN message of `bytes` may go, counting it if it does.
        mutating func send(_ bytes: Int) -> Bool {
            if fromClient == 0 {
                guard bytes <= RouteTable.smallSTUN else { return false }
            } else {
                guard toClient + bytes <= RouteTable.pendingFlightAllowance + 3 * fromClient else { return false }
            }
            toClient += bytes
            return true
        }
    }

    static let smallSTUN = 256

    struct Route {
        var transceiver: TransportAddress
        var lastSeen: Instant
        var committed: Bool
        /// Pending: the client's checks (the transceiver's answers to them pass) and the
        /// transceiver's own checks (the client's answer to one of them commits).
        var transactions = Transactions()
        var serverChecks = Transactions()
        var createdAt: Instant
        var lastStored: Instant?
        /// The session's token nonce (pending routes are limited per token, committed ones per
        /// session); 0 for routes installed from the store or opened by a transceiver's check.
        var nonce: UInt32 = 0
        var candidate: Candidate?
        /// DTLS datagrams forwarded while pending.
        var earlyDTLS: UInt8 = 0
        /// Checks forwarded to another cluster's relay while pending: that relay authenticates
        /// them, this one cannot, so a source gets only a handful through per flow.
        var forwardedChecks: UInt8 = 0
        /// Checks the transceiver sent the pending client (bounded).
        var checksToClient: UInt8 = 0
        /// STUN bytes the client sent on this pending flow (its checks), and what its transceiver
        /// sent it, bounded by them.
        var allowance = PendingAllowance()
        /// The transceiver answered or checked this pending flow: its check authenticated there.
        /// Flows it never answered (a captured check replayed from elsewhere, a forged signature)
        /// are the first to go when a limit is reached.
        var answered = false
    }

    static let maximumEarlyDTLS: UInt8 = 4

    static let pendingFlightAllowance = 4096
    static let maximumPendingCredit = 16_384
    /// Checks a pending flow may send another cluster's relay (a client's checks and their
    /// retransmissions for one candidate pair over a pending flow's 5 s are fewer).
    static let maximumForwardedChecks: UInt8 = 32
    static let unansweredEvictionAge: Duration = .seconds(1)

    public let policy: Policy
    public private(set) var keyring: RoutingKeyring

    /// A new keyring (rotation): new flows open with it. Routes already committed or pending were
    /// opened under the old one and stay as they are: a route never reopens its token.
    public mutating func replaceKeyring(_ keyring: RoutingKeyring) {
        self.keyring = keyring
    }
    private var routes: [TransportAddress: Route] = [:]
    public private(set) var pendingCount = 0
    /// Pending flows toward another cluster's relay (within `pendingCount`).
    public private(set) var forwardedPendingCount = 0
    public private(set) var committedCount = 0
    /// Pending routes per token nonce: one valid token replayed from many spoofed sources cannot
    /// take every pending slot.
    private var pendingByToken: [UInt32: [TransportAddress]] = [:]
    public static let maximumPendingPerToken = 8
    private var pendingByNetwork: [SourceNetwork: [TransportAddress]] = [:]
    private var committedBySession: [UInt32: Int] = [:]
    private var commits: [Commit] = []
    /// Hour of the token clock, set by the owner (a relay worker refreshes it every second).
    public var currentHour: UInt16?
    /// The relay is going away (SIGTERM, or `POST /admin/drain`): the load balancer sends new calls
    /// elsewhere, and this table takes no new flow, not even one the route store knows (a flow this
    /// relay does not route is another relay's, or lost: its client's next check rebuilds it
    /// wherever the load balancer sends it). What is committed here keeps going until it idles out.
    /// Dropped datagrams count as `draining`.
    public var draining = false

    /// `reserve`: room for routes made up front (a relay's own table), or grown as needed (the
    /// tables of forwarded flows, made when a peer's first datagram arrives).
    public init(keyring: RoutingKeyring, policy: Policy = .init(), reserve: Bool = true) {
        self.keyring = keyring
        self.policy = policy
        if reserve { routes.reserveCapacity(min(policy.maximumRoutes, 4096)) }
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
                return committedSTUN(datagram, index: index, client: client, now: now)
            }
            // Pending: only more checks (retransmissions, or the nominating one) and answers to the
            // transceiver's checks go on, and the client's first few DTLS datagrams (its ClientHello
            // may overtake its answer; the transceiver holds it until the answer, and never answers
            // DTLS from an address that has not answered it).
            guard isSTUN, let message = try? STUNMessage.parse(datagram) else {
                guard PacketKind.classify(datagram) == .dtls, routes.values[index].earlyDTLS < Self.maximumEarlyDTLS else {
                    return .drop(.pendingNotSTUN)
                }
                routes.values[index].earlyDTLS += 1
                return .forward(to: routes.values[index].transceiver)
            }
            let transceiver = routes.values[index].transceiver
            if message.type == .bindingSuccess || message.type == .bindingError {
                guard routes.values[index].serverChecks.contains(message.transactionID) else { return .drop(.unmatchedAnswer) }
                if message.type == .bindingSuccess { return commitPending(index: index, client: client, now: now) }
                return .forward(to: transceiver)
            }
            guard let check = openCheck(message, datagram), check.worker == transceiver else { return .drop(.badToken) }
            if check.forwarded {
                guard routes.values[index].forwardedChecks < Self.maximumForwardedChecks else { return .drop(.pendingNotSTUN) }
                routes.values[index].forwardedChecks += 1
            }
            routes.values[index].transactions.add(check.transaction)
            routes.values[index].allowance.received(datagram.count)
            if routes.values[index].nonce == 0, check.nonce != 0 {
                // A route a transceiver's check opened learns its session from the client's check.
                routes.values[index].nonce = check.nonce
                pendingByToken[check.nonce, default: []].append(client)
            }
            return .forward(to: check.worker)
        }
        guard isSTUN else {
            guard draining else { return .unknown }
            return .drop(PacketKind.classify(datagram) == .unknown ? .unknownProtocol : .draining)
        }
        guard let message = try? STUNMessage.parse(datagram) else { return .drop(.badToken) }
        guard let check = openCheck(message, datagram) else {
            return isForeignClusterWithoutRelay(message, datagram) ? .drop(.unknownCluster) : .drop(.badToken)
        }
        guard check.forwarded || isAllowedWorker(check.worker) else { return .drop(.workerNotAllowed) }
        guard !draining else { return .drop(.draining) }
        guard !check.forwarded || forwardedPendingCount < policy.maximumForwardedPending else { return .drop(.pendingFull) }
        guard openPending(client: client, transceiver: check.worker, nonce: check.nonce, now: now) else { return .drop(.pendingFull) }
        routes[client]?.transactions.add(check.transaction)
        routes[client]?.allowance.received(datagram.count)
        if check.forwarded {
            routes[client]?.forwardedChecks = 1
            forwardedPendingCount += 1
        }
        return .forward(to: check.worker)
    }

    /// Records a new pending route within the limits: per token, per source network, per worker and
    /// all routes. At the token's or the network's limit, a pending flow its transceiver has not
    /// answered within a second (a captured check replayed from elsewhere, a forged signature; a
    /// real check is answered within a round trip) makes room: a few replayed checks cannot pin a
    /// session's, or a shared network's, pending slots for their whole lifetime, and a flood of
    /// them reaches the transceiver at a few a second, not at its rate.
    private mutating func openPending(client: TransportAddress, transceiver: TransportAddress, nonce: UInt32, now: Instant) -> Bool {
        let network = SourceNetwork(client)
        // The table's own limits first: nothing is evicted for a flow that could not be opened anyway.
        guard pendingCount < policy.maximumPending, routes.count < policy.maximumRoutes else { return false }
        if nonce != 0, pendingByToken[nonce, default: []].count >= Self.maximumPendingPerToken,
           !evictUnanswered(among: pendingByToken[nonce] ?? [], now: now) { return false }
        if pendingByNetwork[network, default: []].count >= policy.maximumPendingPerNetwork,
           !evictUnanswered(among: pendingByNetwork[network] ?? [], now: now) { return false }
        routes[client] = Route(transceiver: transceiver, lastSeen: now, committed: false, createdAt: now, nonce: nonce)
        pendingCount += 1
        pendingByNetwork[network, default: []].append(client)
        if nonce != 0 { pendingByToken[nonce, default: []].append(client) }
        return true
    }

    /// Removes the oldest pending flow of `clients` its transceiver has not answered in a second; false if none.
    private mutating func evictUnanswered(among clients: [TransportAddress], now: Instant) -> Bool {
        guard let victim = clients.first(where: {
            routes[$0].map { !$0.committed && !$0.answered && now - $0.createdAt >= Self.unansweredEvictionAge } ?? false
        }),
              let route = routes.removeValue(forKey: victim) else { return false }
        releasePending(client: victim, nonce: route.nonce, forwarded: route.forwardedChecks > 0)
        return true
    }

    /// The client answered its transceiver's check: the address is the client's, and the route is committed.
    private mutating func commitPending(index: Dictionary<TransportAddress, Route>.Index, client: TransportAddress,
                                        now: Instant) -> ClientDecision {
        let route = routes.values[index]
        // A flow that was still pending when draining began is a new call: it does not start here.
        guard !draining else { return .drop(.draining) }
        guard route.nonce == 0 || committedBySession[route.nonce, default: 0] < policy.maximumRoutesPerSession else {
            return .drop(.sessionRoutesFull)
        }
        releasePending(client: client, nonce: route.nonce, forwarded: route.forwardedChecks > 0)
        routes.values[index].committed = true
        routes.values[index].transactions = Transactions()
        routes.values[index].serverChecks = Transactions()
        routes.values[index].lastStored = now
        routes.values[index].lastSeen = now
        committed(nonce: route.nonce)
        commits.append(Commit(client: client, transceiver: route.transceiver))
        return .forward(to: route.transceiver)
    }

    /// STUN on a committed flow: a consent check refreshes the stored route; a valid check naming
    /// another worker goes to that worker as a candidate, and the route moves there when the client
    /// answers that worker's own check.
    private mutating func committedSTUN(_ datagram: UnsafeRawBufferPointer, index: Dictionary<TransportAddress, Route>.Index,
                                        client: TransportAddress, now: Instant) -> ClientDecision {
        let current = routes.values[index].transceiver
        guard let message = try? STUNMessage.parse(datagram) else { return .forward(to: current) }
        if message.type == .bindingSuccess || message.type == .bindingError {
            if let candidate = routes.values[index].candidate, candidate.serverChecks.contains(message.transactionID) {
                return message.type == .bindingSuccess ? moveToCandidate(index: index, client: client, now: now)
                    : .forward(to: candidate.transceiver)
            }
            refreshStore(index: index, client: client, now: now)
            return .forward(to: current)
        }
        guard let check = openCheck(message, datagram) else {
            // A token no key of the ring opens any more (sealed with a key since retired): the
            // client's consent checks go on to the owner, and keep its stored route fresh.
            if message.type == .bindingRequest { refreshStore(index: index, client: client, now: now) }
            return .forward(to: current)
        }
        if check.worker == current {
            refreshStore(index: index, client: client, now: now)
            return .forward(to: current)
        }
        guard check.forwarded || isAllowedWorker(check.worker) else { return .drop(.workerNotAllowed) }
        guard !draining else { return .drop(.draining) }
        if routes.values[index].candidate?.transceiver != check.worker {
            routes.values[index].candidate = Candidate(transceiver: check.worker, transactions: Transactions(), createdAt: now,
                                                       nonce: check.nonce)
        }
        routes.values[index].candidate?.transactions.add(check.transaction)
        routes.values[index].candidate?.allowance.received(datagram.count)
        return .forward(to: check.worker)
    }

    private mutating func moveToCandidate(index: Dictionary<TransportAddress, Route>.Index, client: TransportAddress,
                                          now: Instant) -> ClientDecision {
        guard let candidate = routes.values[index].candidate else { return .drop(.unmatchedAnswer) }
        // Another worker's check on this address is another session (a new call on a reused port).
        guard !draining else { return .drop(.draining) }
        guard candidate.nonce == 0 || committedBySession[candidate.nonce, default: 0] < policy.maximumRoutesPerSession else {
            return .drop(.sessionRoutesFull)
        }
        released(nonce: routes.values[index].nonce)
        routes.values[index].transceiver = candidate.transceiver
        routes.values[index].nonce = candidate.nonce
        routes.values[index].candidate = nil
        routes.values[index].lastStored = now
        // Still one route: it only changes hands (and sessions).
        if candidate.nonce != 0 { committedBySession[candidate.nonce, default: 0] += 1 }
        commits.append(Commit(client: client, transceiver: candidate.transceiver))
        return .forward(to: candidate.transceiver)
    }

    /// Consent traffic on a route rewrites it in the store a third of the way into its lifetime.
    private mutating func refreshStore(index: Dictionary<TransportAddress, Route>.Index, client: TransportAddress, now: Instant) {
        if let stored = routes.values[index].lastStored, now - stored >= policy.storeLifetime / 3 {
            routes.values[index].lastStored = now
            commits.append(Commit(client: client, transceiver: routes.values[index].transceiver))
        }
    }

    /// Where the token before the `:` of a Binding request's USERNAME sends it: the worker it
    /// names, once it opens under this cluster's keyring; or, for a token naming another cluster
    /// that has a configured relay, that relay (`forwarded`; only the clear cluster id is read: the
    /// owning cluster authenticates the rest).
    private func openCheck(_ message: STUNMessage, _ datagram: UnsafeRawBufferPointer)
        -> (worker: TransportAddress, transaction: STUNTransactionID, nonce: UInt32, forwarded: Bool)? {
        guard message.type == .bindingRequest, let ufrag = message.usernameRecipientPart(in: datagram) else { return nil }
        let text = UnsafeRawBufferPointer(rebasing: datagram[ufrag])
        if !policy.clusterRelays.isEmpty, let cluster = RoutingKeyring.clusterID(of: text), cluster != policy.clusterID {
            guard let relay = policy.clusterRelays[cluster] else { return nil }
            return (relay, message.transactionID, 0, true)
        }
        guard let token = try? keyring.open(text, currentHour: currentHour) else { return nil }
        return (token.worker, message.transactionID, token.nonce, false)
    }

    /// A check whose token names a cluster this relay has no relay for (counted apart from bad tokens).
    private func isForeignClusterWithoutRelay(_ message: STUNMessage, _ datagram: UnsafeRawBufferPointer) -> Bool {
        guard !policy.clusterRelays.isEmpty, let ufrag = message.usernameRecipientPart(in: datagram),
              let cluster = RoutingKeyring.clusterID(of: UnsafeRawBufferPointer(rebasing: datagram[ufrag])) else { return false }
        return cluster != policy.clusterID && policy.clusterRelays[cluster] == nil
    }

    /// Another cluster's relay (a destination of forwarded flows, and a source of their answers).
    public func isClusterRelay(_ address: TransportAddress) -> Bool { policy.clusterRelays.values.contains(address) }

    private func isAllowedWorker(_ worker: TransportAddress) -> Bool {
        policy.workerPorts.contains(worker.port) && policy.workerNetworks.contains { $0.contains(worker) }
    }

    // MARK: Transceiver → client

    /// Decides what to do with a tunnel datagram from `source` (a transceiver worker) for `client`.
    public mutating func fromTransceiver(_ payload: UnsafeRawBufferPointer, client: TransportAddress,
                                         source: TransportAddress, now: Instant) -> TransceiverDecision {
        guard let index = routes.index(forKey: client) else {
            guard !draining else { return .drop(.draining) }
            return openedByTransceiver(payload, client: client, source: source, now: now)
        }
        let route = routes.values[index]
        if route.transceiver == source {
            if route.committed {
                routes.values[index].lastSeen = now
                return .deliver(to: client)
            }
            // Pending: the answers to the client's checks, and the transceiver's own checks.
            guard let kind = pendingSTUN(payload, answering: route.transactions) else { return .drop(.pendingNotSTUN) }
            guard routes.values[index].allowance.send(payload.count) else { return .drop(.pendingAllowance) }
            if case .check(let id, _) = kind {
                guard route.checksToClient < Self.maximumChecksWhilePending else { return .drop(.pendingNotSTUN) }
                routes.values[index].checksToClient += 1
                routes.values[index].serverChecks.add(id)
            }
            routes.values[index].answered = true
            return .deliver(to: client)
        }
        // Never a reflector: only the transceiver that owns this client may send to it, or the
        // candidate worker answering the checks that named it and checking the address in turn.
        guard let candidate = route.candidate, candidate.transceiver == source,
              let kind = pendingSTUN(payload, answering: candidate.transactions) else { return .drop(.notRouteOwner) }
        // The candidate has not been answered either: the same allowance, from the checks that named it.
        guard routes.values[index].candidate?.allowance.send(payload.count) == true else { return .drop(.pendingAllowance) }
        if case .check(let id, _) = kind {
            guard candidate.checksToClient < Self.maximumChecksWhilePending else { return .drop(.notRouteOwner) }
            routes.values[index].candidate?.checksToClient += 1
            routes.values[index].candidate?.serverChecks.add(id)
        }
        return .deliver(to: client)
    }

    enum PendingSTUN { case answer, check(STUNTransactionID, nonce: UInt32) }

    /// What may go to a client that has not answered yet: an answer to one of its own checks, or a
    /// Binding request, each at most a datagram's worth (SPED's carry a DTLS datagram; the flow's
    /// `PendingAllowance` bounds the large ones). A transceiver's check names its session: its
    /// USERNAME is "<client ufrag>:<routing token>".
    private func pendingSTUN(_ payload: UnsafeRawBufferPointer, answering transactions: Transactions) -> PendingSTUN? {
        guard payload.count <= Self.maximumCheckLength, let message = try? STUNMessage.parse(payload) else { return nil }
        switch message.type {
        case .bindingSuccess, .bindingError: return transactions.contains(message.transactionID) ? .answer : nil
        case .bindingRequest:
            let token = message.usernameSenderPart(in: payload).flatMap {
                try? keyring.open(UnsafeRawBufferPointer(rebasing: payload[$0]), currentHour: currentHour)
            }
            return .check(message.transactionID, nonce: token?.nonce ?? 0)
        default: return nil
        }
    }

    static let maximumCheckLength = 1500
    /// Checks a transceiver may send to a client that has not answered (a validation and its four
    /// retransmissions, with room for triggered ones): even a compromised transceiver gets no more
    /// through toward an address, so the relay never becomes its reflector.
    static let maximumChecksWhilePending: UInt8 = 8

    /// A transceiver's check toward a client the relay has no route for (after a restart without a
    /// route store): a pending route owned by that transceiver, committed by the client's answer.
    /// Clients that send no checks of their own (Pion once media flows) are recovered this way.
    private mutating func openedByTransceiver(_ payload: UnsafeRawBufferPointer, client: TransportAddress,
                                              source: TransportAddress, now: Instant) -> TransceiverDecision {
        guard isAllowedWorker(source) || isClusterRelay(source),
              case .check(let id, let nonce) = pendingSTUN(payload, answering: Transactions()) else {
            return .unknown
        }
        // No client bytes yet to earn an allowance: a plain check only (a larger one is left to the
        // route store, which may know the client).
        guard payload.count <= Self.smallSTUN else { return .unknown }
        guard openPending(client: client, transceiver: source, nonce: nonce, now: now) else { return .drop(.pendingFull) }
        routes[client]?.serverChecks.add(id)
        routes[client]?.checksToClient = 1
        routes[client]?.answered = true
        return .deliver(to: client)
    }

    private mutating func releasePending(client: TransportAddress, nonce: UInt32, forwarded: Bool) {
        pendingCount -= 1
        if forwarded { forwardedPendingCount -= 1 }
        let network = SourceNetwork(client)
        if var clients = pendingByNetwork[network], let index = clients.firstIndex(of: client) {
            clients.remove(at: index)
            pendingByNetwork[network] = clients.isEmpty ? nil : clients
        }
        if nonce != 0, var clients = pendingByToken[nonce], let index = clients.firstIndex(of: client) {
            clients.remove(at: index)
            pendingByToken[nonce] = clients.isEmpty ? nil : clients
        }
    }

    private mutating func committed(nonce: UInt32) {
        committedCount += 1
        if nonce != 0 { committedBySession[nonce, default: 0] += 1 }
    }

    /// A committed route goes away (or moves off its session).
    private mutating func released(nonce: UInt32) {
        if nonce != 0, let count = committedBySession[nonce] {
            committedBySession[nonce] = count > 1 ? count - 1 : nil
        }
    }

    // MARK: Store and time

    /// Installs a committed route learned from the route store (after a restart, or on another replica).
    /// Not while draining (a lookup that was under way when draining began comes back refused).
    public mutating func install(client: TransportAddress, transceiver: TransportAddress, now: Instant) -> Bool {
        guard !draining, isAllowedWorker(transceiver) || isClusterRelay(transceiver) else { return false }
        if let existing = routes[client] {
            if existing.committed { return existing.transceiver == transceiver }
            releasePending(client: client, nonce: existing.nonce, forwarded: existing.forwardedChecks > 0)
        } else if routes.count >= policy.maximumRoutes {
            return false
        }
        routes[client] = Route(transceiver: transceiver, lastSeen: now, committed: true, createdAt: now, lastStored: now)
        committed(nonce: 0)
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
            if route.committed {
                committedCount -= 1
                released(nonce: route.nonce)
            } else {
                releasePending(client: client, nonce: route.nonce, forwarded: route.forwardedChecks > 0)
            }
            removed += 1
        }
        return removed
    }

    /// Forgets the route of `client` at once, pending or committed (an ICE-TCP connection closed:
    /// its address will not send again). Returns whether there was one.
    @discardableResult
    public mutating func forget(client: TransportAddress) -> Bool {
        guard let route = routes.removeValue(forKey: client) else { return false }
        if route.committed {
            committedCount -= 1
            released(nonce: route.nonce)
        } else {
            releasePending(client: client, nonce: route.nonce, forwarded: route.forwardedChecks > 0)
        }
        return true
    }

    public func route(for client: TransportAddress) -> (transceiver: TransportAddress, committed: Bool)? {
        routes[client].map { ($0.transceiver, $0.committed) }
    }

    public var count: Int { routes.count }
}

/// Why a relay dropped a datagram; counted per reason.
public enum RelayDropReason: String, CaseIterable, Sendable {
    case badToken = "bad_token"
    /// A first check whose token names a cluster no `--cluster-relay` is configured for.
    case unknownCluster = "unknown_cluster"
    /// A tunnel datagram from a client (another cluster's relay forwarding it) from a source
    /// that is not a configured cluster relay.
    case untrustedPeer = "untrusted_peer"
    case workerNotAllowed = "worker_not_allowed"
    case pendingFull = "pending_full"
    case routesFull = "routes_full"
    case pendingNotSTUN = "pending_not_stun"
    /// A transceiver's STUN toward a client that has not answered, past the flow's allowance
    /// (one flight, then three times what the client sent).
    case pendingAllowance = "pending_allowance"
    case notRouteOwner = "not_route_owner"
    case noRoute = "no_route"
    case malformedTunnel = "malformed_tunnel"
    case untrustedTransceiver = "untrusted_transceiver"
    case lookupQueueFull = "lookup_queue_full"
    /// The store-lookup budget of the worker was spent (a flood of unknown sources).
    case lookupRateLimited = "lookup_rate_limited"
    case unknownProtocol = "unknown_protocol"
    /// A STUN answer on a pending flow that answers none of its transceiver's checks.
    case unmatchedAnswer = "unmatched_answer"
    /// The session already holds its maximum of committed routes.
    case sessionRoutesFull = "session_routes_full"
    /// The relay is draining: a datagram that would start a flow (a first check, a commit, a
    /// store lookup, a route moving to another session) is refused.
    case draining
    /// A datagram for a client of an address family this relay has no public socket for (a route
    /// from the store, saved by a relay that has one).
    case noSocketForFamily = "no_socket_for_family"
    /// A frame for an ICE-TCP client whose connection already has its write budget queued (a slow
    /// reader loses packets, not the relay's memory).
    case tcpBacklog = "tcp_backlog"
    /// An ICE-TCP client's frame the relay could not queue toward its worker: the tunnel socket's
    /// send queue is full (the kernel is refusing sends).
    case tunnelBacklog = "tunnel_backlog"
}

/// The network a source address belongs to, for per-network limits: its IPv4 /24 or IPv6 /64.
struct SourceNetwork: Hashable {
    let prefix: UInt64
    let isIPv6: Bool

    init(_ address: TransportAddress) {
        switch address {
        case .v4(let ip, _): prefix = UInt64(ip.bits >> 8); isIPv6 = false
        case .v6(let ip, _): prefix = ip.high; isIPv6 = true
        }
    }
}
