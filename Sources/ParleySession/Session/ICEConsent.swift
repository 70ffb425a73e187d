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
        /// Checks from here answered before the address answered ours.
        var answersUnvalidated = 0
        /// When our latest validation request left.
        var sentAt: Instant?
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
    /// When each recent check went out, and whether it went again (a retransmission).
    private var sendTimes: [(id: STUNTransactionID, at: Instant, repeated: Bool)] = []
    private var roundTripSample: (address: TransportAddress, roundTrip: Duration)?

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

    /// Whether `address` answered recently enough to switch to it at once (within two consent
    /// intervals): an older answer is checked again first, or the switch could outlive its consent.
    func isFresh(_ address: TransportAddress, now: Instant) -> Bool {
        guard let answered = candidates[address]?.answeredAt else { return false }
        return now - answered < settings.consentInterval * 2
    }

    /// An authenticated check came from `path`: remember the address, and start validating it if
    /// it has not answered us yet (or its consent lapsed). Returns whether the check may be answered:
    /// an address that has not answered us gets a few answers only, and a new one only within the
    /// validation budget, so a client spoofing checks has little reflected, whatever its rate.
    mutating func receivedRequest(from path: PeerPath, nominated: Bool, now: Instant) -> Bool {
        if var candidate = candidates[path.client] {
            candidate.path = path
            candidate.lastRequest = now
            if nominated { candidate.nominated = true }
            // (The selected path's lapse is final: the call ends on it, whatever checks come after.)
            if path.client != selected, let answered = candidate.answeredAt, now - answered >= settings.consentTimeout {
                // Consent lapsed (a path not used for a while): the address must answer again.
                candidate.answeredAt = nil
                candidate.outstanding.removeAll()
                candidate.attempts = 0
                candidate.nextCheck = nil
                candidate.answersUnvalidated = 0
            }
            let validated = candidate.answeredAt != nil
            if validated, path.client != selected, !isFresh(path.client, now: now), let sent = candidate.sentAt ?? candidate.answeredAt,
               now - sent >= settings.validationTimeout {
                // A spare path checked again before the client may switch to it (it is selected on the answer).
                let id = STUNTransactionID.random(using: &generator)
                candidate.outstanding.append(id)
                if candidate.outstanding.count > Self.maximumOutstanding { candidate.outstanding.removeFirst() }
                candidate.sentAt = now
                send(path, id, now: now)
            }
            // A client retransmitting its check gets ours again at once if it is still unanswered
            // (and a new round of answers: rounds are paced by the validation budget).
            let waiting = !validated && candidate.outstanding.isEmpty
            if waiting {
                candidates[path.client] = candidate
                scheduleValidation(path.client, now: now)
                candidate = candidates[path.client] ?? candidate
            } else if !validated, let id = candidate.outstanding.last, let sent = candidate.sentAt,
                      now - sent >= settings.validationTimeout, candidate.answersUnvalidated < Self.maximumAnswersUnvalidated {
                // A triggered check (RFC 8445 §7.3.1.4): the client is checking this address now, so
                // ours goes again at once rather than at its next retransmission, or never if those ran out.
                candidate.sentAt = now
                // …and is retransmitted at least once more after it.
                candidate.attempts = min(candidate.attempts, settings.validationAttempts - 1)
                candidate.nextCheck = now + settings.validationTimeout
                send(path, id, now: now, retransmission: true)
            }
            if !validated {
                guard candidate.answersUnvalidated < Self.maximumAnswersUnvalidated else {
                    candidates[path.client] = candidate
                    return false
                }
                candidate.answersUnvalidated += 1
            }
            candidates[path.client] = candidate
            return true
        }
        guard budget.take(now: now) else { return false }
        if candidates.count >= settings.maximumCandidates { evictStalest() }
        guard candidates.count < settings.maximumCandidates else { return false }
        candidates[path.client] = Candidate(path: path, nominated: nominated, lastRequest: now)
        scheduleValidation(path.client, now: now, paid: true)
        candidates[path.client]?.answersUnvalidated = 1
        return true
    }

    /// Answers an address that has not answered us gets (its client retransmits a few checks).
    static let maximumAnswersUnvalidated = 8

    /// Whether `transactionID` is one of ours outstanding toward `address` (checked before any HMAC).
    func isOutstanding(_ transactionID: STUNTransactionID, to address: TransportAddress) -> Bool {
        candidates[address]?.outstanding.contains(transactionID) ?? false
    }

    /// A success response to one of our checks, already authenticated by the session. Returns
    /// whether it answered an outstanding request from that very address (the only kind that counts).
    mutating func receivedSuccess(_ transactionID: STUNTransactionID, from path: PeerPath, now: Instant) -> Bool {
        guard var candidate = candidates[path.client], let index = candidate.outstanding.firstIndex(of: transactionID) else {
            return false
        }
        candidate.outstanding.remove(at: index)
        if let sent = sendTimes.firstIndex(where: { $0.id == transactionID }) {
            if !sendTimes[sent].repeated, now >= sendTimes[sent].at { roundTripSample = (path.client, now - sendTimes[sent].at) }
            sendTimes.remove(at: sent)
        }
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
            candidate.sentAt = now
            send(path, id, now: now)
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

    /// Media now flows to `address` (validated): consent checks start there — at once when it is a
    /// new path, whose consent runs from its own last answer, which may be nearly 30 s old.
    mutating func select(_ address: TransportAddress, now: Instant) {
        let changed = selected != address
        selected = address
        guard candidates[address]?.answeredAt != nil else { return }
        if changed, candidates[address]?.sentAt.map({ now - $0 >= .seconds(1) }) ?? true {
            candidates[address]?.nextCheck = now
        } else if changed {
            let interval = nextConsentInterval()
            candidates[address]?.nextCheck = now + interval
        } else if candidates[address]?.nextCheck == nil {
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
                candidate.sentAt = now
                send(candidate.path, id, now: now, retransmission: true)
            } else if address == selected {
                // Consent: a new transaction each time, each sent once; older ones stay answerable.
                let id = STUNTransactionID.random(using: &generator)
                candidate.outstanding.append(id)
                if candidate.outstanding.count > Self.maximumOutstanding { candidate.outstanding.removeFirst() }
                candidate.nextCheck = now + nextConsentInterval()
                send(candidate.path, id, now: now)
            } else {
                candidate.nextCheck = nil
            }
            candidates[address] = candidate
        }
    }

    var nextWakeup: Instant? {
        var wake: Instant?
        func consider(_ instant: Instant?) {
            if let instant, wake.map({ instant < $0 }) ?? true { wake = instant }
        }
        for (address, candidate) in candidates {
            consider(candidate.nextCheck)
            if address == selected { consider(candidate.answeredAt.map { $0 + settings.consentTimeout }) }
        }
        return wake
    }

    /// The round trip of the latest answered check that went out once (Karn's rule: the answer to a
    /// retransmitted transaction could be to either sending), taken once.
    mutating func takeRoundTripSample() -> (address: TransportAddress, roundTrip: Duration)? {
        defer { roundTripSample = nil }
        return roundTripSample
    }

    /// Queues a check and notes when it went, for the round trip its answer measures.
    /// `retransmission`: the same transaction again (its answer then measures nothing, even if
    /// the first sending's record was pushed out).
    private mutating func send(_ path: PeerPath, _ id: STUNTransactionID, now: Instant, retransmission: Bool = false) {
        checks.append(Check(path: path, transactionID: id))
        if let index = sendTimes.firstIndex(where: { $0.id == id }) {
            sendTimes[index].repeated = true
        } else {
            if sendTimes.count == Self.maximumOutstanding * 2 { sendTimes.removeFirst() }
            sendTimes.append((id, now, retransmission))
        }
    }

    /// Checks to send now, in order.
    mutating func takeChecks() -> [Check] {
        defer { checks.removeAll(keepingCapacity: true) }
        return checks
    }

    // MARK: Pieces

    private mutating func scheduleValidation(_ address: TransportAddress, now: Instant, paid: Bool = false) {
        guard var candidate = candidates[address], candidate.answeredAt == nil else { return }
        guard paid || budget.take(now: now) else {
            // Out of budget: try again when a check is allowed.
            candidate.nextCheck = budget.nextToken(now: now)
            candidate.attempts = 0
            candidates[address] = candidate
            return
        }
        let id = STUNTransactionID.random(using: &generator)
        candidate.outstanding = [id]
        candidate.attempts = 1
        candidate.answersUnvalidated = 0  // a new round of answers with each round of validation
        candidate.sentAt = now
        candidate.nextCheck = now + settings.validationTimeout
        candidates[address] = candidate
        send(candidate.path, id, now: now)
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
