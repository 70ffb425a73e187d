import ParleyWire

/// Which client addresses a session may send to, decided by checks of its own (sans-IO).
///
/// An ICE-lite agent only answers checks, so on its own it believes any authenticated check about
/// where the client is, and anyone holding a session's ICE password (its own client, say) can
/// spoof one from a victim's address. Parley therefore does what a full agent does for a new
/// peer-reflexive candidate (RFC 8445 §19.2): before an address carries media, DTLS or a route, its
/// own Binding request must be answered from there, with the client's credentials (return
/// routability). The same checks keep consent (RFC 7675): one every 4–6 s on the selected path;
/// without an answer for 30 s the call ends — whether or not the client sends checks of its own.
///
/// Answers are matched by transaction id (96 random bits only someone at the address sees) and
/// must come from the address the request went to (RFC 8445 §7.2.5.2.1); their integrity is the
/// session's to verify. Work and memory are bounded: at most `maximumCandidates` addresses, a few
/// outstanding requests each, and a budget of validation checks per second, so a client spoofing
/// checks from many addresses gets at most a few small requests reflected, one for one.
struct ICEConsent {
    struct Settings {
        /// RFC 7675 §5.1: 5 s, randomised by ±20 %.
        var consentInterval: Duration = .seconds(5)
        var consentTimeout: Duration = .seconds(30)
        /// RFC 8445 §14.3: at least 500 ms, doubling.
        var validationTimeout: Duration = .milliseconds(500)
        var validationAttempts = 5
        var maximumCandidates = 8
        /// Validation checks a session may start: a burst, then one per `checkRefill`.
        var checkBurst = 8
        var checkRefill: Duration = .seconds(1)
    }

    /// A Binding request to send (the session writes and signs it).
    struct Check: Equatable {
        var path: PeerPath
        var transactionID: STUNTransactionID
    }

    struct Candidate {
        /// Where checks go: the latest path an authenticated check from the address came by.
        var path: PeerPath
        /// The client nominated this address (USE-CANDIDATE).
        var nominated = false
        var lastRequest: Instant
        /// The last answer to one of our checks: consent holds until `consentTimeout` after it.
        var answeredAt: Instant?
        /// Validation requests sent so far (retransmissions of one transaction).
        var attempts = 0
        var nextCheck: Instant?
        /// Requests that may still be answered, newest last.
        var outstanding: [STUNTransactionID] = []
    }

    let settings: Settings
    private(set) var candidates: [TransportAddress: Candidate] = [:]
    /// The address media flows to (set by the session once it selects a validated one).
    private(set) var selected: TransportAddress?
    private var checks: [Check] = []
    /// Validation checks toward new addresses (a client spoofing many gets few reflected).
    private var budget: TokenBucket
    private var generator = SystemRandomNumberGenerator()
    static let maximumOutstanding = 8

    init(settings: Settings = .init(), now: Instant) {
        self.settings = settings
        budget = TokenBucket(capacity: settings.checkBurst, refillInterval: settings.checkRefill, now: now)
    }

    /// Whether `address` answered one of our checks and its consent has not run out.
    func isValidated(_ address: TransportAddress, now: Instant) -> Bool {
        guard let answered = candidates[address]?.answeredAt else { return false }
        return now - answered < settings.consentTimeout
    }

    func isNominated(_ address: TransportAddress) -> Bool { candidates[address]?.nominated ?? false }

    /// An authenticated check came from `path`: remember the address, and start validating it if
    /// it has not answered us yet.
    mutating func receivedRequest(from path: PeerPath, nominated: Bool, now: Instant) {
        if var candidate = candidates[path.client] {
            candidate.path = path
            candidate.lastRequest = now
            if nominated { candidate.nominated = true }
            // A client retransmitting its check gets ours again at once if it is still unanswered.
            let waiting = candidate.answeredAt == nil && candidate.outstanding.isEmpty
            candidates[path.client] = candidate
            if waiting { scheduleValidation(path.client, now: now) }
            return
        }
        if candidates.count >= settings.maximumCandidates { evictStalest() }
        guard candidates.count < settings.maximumCandidates else { return }
        candidates[path.client] = Candidate(path: path, nominated: nominated, lastRequest: now)
        scheduleValidation(path.client, now: now)
    }

    /// A success response to one of our checks, already authenticated by the session. Returns
    /// whether it answered an outstanding request from that very address (the only kind that counts).
    mutating func receivedSuccess(_ transactionID: STUNTransactionID, from path: PeerPath, now: Instant) -> Bool {
        guard var candidate = candidates[path.client], let index = candidate.outstanding.firstIndex(of: transactionID) else {
            return false
        }
        candidate.outstanding.remove(at: index)
        let newlyValidated = candidate.answeredAt == nil
        candidate.answeredAt = now
        candidate.attempts = 0
        candidate.path = path
        candidate.nextCheck = path.client == selected ? now + nextConsentInterval() : nil
        if newlyValidated {
            // One more check at once, now that the client's own check has surely succeeded: a full
            // agent that receives a check on a succeeded pair nominates it without waiting for its
            // next check tick (Pion: ~200 ms sooner), and the answer refreshes consent.
            let id = STUNTransactionID.random(using: &generator)
            candidate.outstanding.append(id)
            checks.append(Check(path: path, transactionID: id))
        }
        candidates[path.client] = candidate
        return true
    }

    /// An authenticated error response (RFC 7675 §5.2: 403 revokes consent at once). Returns
    /// whether it answered one of our requests.
    mutating func receivedError(_ transactionID: STUNTransactionID, code: Int, from path: PeerPath) -> Bool {
        guard var candidate = candidates[path.client], let index = candidate.outstanding.firstIndex(of: transactionID) else {
            return false
        }
        candidate.outstanding.remove(at: index)
        if code == 403 {
            candidates[path.client] = nil
        } else {
            candidates[path.client] = candidate
        }
        return true
    }

    /// Media now flows to `address` (validated): consent checks start there.
    mutating func select(_ address: TransportAddress, now: Instant) {
        selected = address
        if candidates[address]?.answeredAt != nil, candidates[address]?.nextCheck == nil {
            let interval = nextConsentInterval()
            candidates[address]?.nextCheck = now + interval
        }
    }

    /// ICE restart: new credentials, so requests sent with the old ones can no longer be answered;
    /// the selected path is checked at once with the new ones.
    mutating func credentialsChanged(now: Instant) {
        for address in candidates.keys {
            candidates[address]?.outstanding.removeAll()
            if address == selected { candidates[address]?.nextCheck = now }
        }
    }

    /// Consent of the selected path has run out (RFC 7675 §5.1).
    func consentExpired(now: Instant) -> Bool {
        guard let selected, let answered = candidates[selected]?.answeredAt else { return false }
        return now - answered >= settings.consentTimeout
    }

    /// Sends what is due: validation retransmissions and consent checks; forgets addresses that
    /// never answered, and others idle for the consent timeout.
    mutating func handleTimeout(now: Instant) {
        for address in Array(candidates.keys) {
            guard var candidate = candidates[address] else { continue }
            let idleSince = max(candidate.lastRequest, candidate.answeredAt ?? candidate.lastRequest)
            if address != selected, now - idleSince >= settings.consentTimeout {
                candidates[address] = nil
                continue
            }
            guard let due = candidate.nextCheck, due <= now else { continue }
            if candidate.answeredAt == nil, candidate.outstanding.isEmpty {
                // Deferred for want of budget.
                scheduleValidation(address, now: now)
                continue
            }
            if candidate.answeredAt == nil {
                // Validation: the same transaction again, with a doubling timeout, a few times.
                guard candidate.attempts < settings.validationAttempts, let id = candidate.outstanding.last else {
                    candidate.nextCheck = nil
                    candidate.outstanding.removeAll()
                    candidates[address] = candidate
                    continue
                }
                candidate.attempts += 1
                candidate.nextCheck = now + settings.validationTimeout * (1 << min(candidate.attempts - 1, 6))
                checks.append(Check(path: candidate.path, transactionID: id))
            } else if address == selected {
                // Consent: a new transaction each time, each sent once; older ones stay answerable.
                let id = STUNTransactionID.random(using: &generator)
                candidate.outstanding.append(id)
                if candidate.outstanding.count > Self.maximumOutstanding { candidate.outstanding.removeFirst() }
                candidate.nextCheck = now + nextConsentInterval()
                checks.append(Check(path: candidate.path, transactionID: id))
            } else {
                candidate.nextCheck = nil
            }
            candidates[address] = candidate
        }
    }

    var nextWakeup: Instant? {
        var wake: Instant?
        for (address, candidate) in candidates {
            for instant in [candidate.nextCheck,
                            address == selected ? candidate.answeredAt.map { $0 + settings.consentTimeout } : nil] {
                if let instant, wake.map({ instant < $0 }) ?? true { wake = instant }
            }
        }
        return wake
    }

    /// Checks to send now, in order.
    mutating func takeChecks() -> [Check] {
        defer { checks.removeAll(keepingCapacity: true) }
        return checks
    }

    // MARK: Pieces

    private mutating func scheduleValidation(_ address: TransportAddress, now: Instant) {
        guard var candidate = candidates[address], candidate.answeredAt == nil else { return }
        guard budget.take(now: now) else {
            // Out of budget: try again when a check is allowed.
            candidate.nextCheck = budget.nextToken(now: now)
            candidate.attempts = 0
            candidates[address] = candidate
            return
        }
        let id = STUNTransactionID.random(using: &generator)
        candidate.outstanding = [id]
        candidate.attempts = 1
        candidate.nextCheck = now + settings.validationTimeout
        candidates[address] = candidate
        checks.append(Check(path: candidate.path, transactionID: id))
    }

    /// Makes room for a new address: the one heard from least recently that is not selected.
    private mutating func evictStalest() {
        let stalest = candidates.filter { $0.key != selected }
            .min { max($0.value.lastRequest, $0.value.answeredAt ?? $0.value.lastRequest)
                < max($1.value.lastRequest, $1.value.answeredAt ?? $1.value.lastRequest) }
        if let stalest { candidates[stalest.key] = nil }
    }

    private mutating func nextConsentInterval() -> Duration {
        // 0.8–1.2 × the interval, in whole milliseconds.
        let base = settings.consentInterval.nanoseconds / 1_000_000
        let spread = max(1, base * 2 / 5)
        return .milliseconds(base * 4 / 5 + Int64.random(in: 0...spread, using: &generator))
    }
}
