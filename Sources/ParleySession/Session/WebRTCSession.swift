import ParleyMedia
import ParleySCTP
import ParleyWire

/// What a session needs to exist: its identity, what signaling negotiated, and its settings.
public struct SessionParameters: Sendable {
    public var id: String
    /// Our ICE credentials (the ufrag is the routing token).
    public var localUfrag: String
    public var localPassword: String
    public var negotiated: NegotiatedSession
    public var localAudioSSRC: UInt32
    public var cname: String
    public var timeouts = SessionTimeouts()
    public var rtcpInterval: Duration = .seconds(1)
    /// NTP time (RFC 3550 §4: seconds since 1900, 32.32 fixed point) at `Instant.zero`, for sender reports.
    public var ntpAtInstantZero: UInt64 = 0
    /// The largest data-channel message Parley accepts (the answer's `a=max-message-size`).
    public var localMaxMessageSize = 262_144
    /// When the offer and answer exchanged SCTP INITs (SNAP): the association starts ESTABLISHED
    /// as DTLS connects, with no SCTP handshake on the wire.
    public var snap: SNAPInits?
    /// The stream of a pre-negotiated `oai-events` channel (`negotiated: true, id: N` on the
    /// client, `?dcid=N` on its offer): open with the association, no DCEP round trip.
    public var negotiatedEventsChannel: UInt16?
    /// SPED: what Parley may send toward an address before it answers Parley's check, besides three
    /// times the authenticated check bytes it sent (one server flight; docs/sped.md).
    public var spedFlightCredit = 4096

    public init(id: String, localUfrag: String, localPassword: String, negotiated: NegotiatedSession,
                localAudioSSRC: UInt32, cname: String) {
        self.id = id
        self.localUfrag = localUfrag
        self.localPassword = localPassword
        self.negotiated = negotiated
        self.localAudioSSRC = localAudioSSRC
        self.cname = cname
    }
}

/// One WebRTC session, sans-IO: ICE lite, DTLS-SRTP, RTP/RTCP. Feed it datagrams and the time;
/// it answers with datagrams to send (`takeTransmits`), events (`takeEvents`) and when it wants to
/// be woken (`nextWakeup`). It owns no socket, thread or clock, and is confined to one thread.
public final class WebRTCSession {
    public enum State: Equatable, Sendable {
        /// Waiting for the first authenticated ICE check.
        case waitingForICE
        /// ICE done, DTLS in progress.
        case connecting
        case connected
        case closed(CloseReason)
    }

    /// What the session was created with; `restartICE` replaces the ICE credentials in it.
    public private(set) var parameters: SessionParameters
    public private(set) var state: State = .waitingForICE
    /// The nominated path media flows on.
    public private(set) var selectedPath: PeerPath?
    public private(set) var counters = SessionCounters()
    public private(set) var receiveStatistics = RTPReceiveStatistics(clockRate: 48000)

    private let createdAt: Instant
    private var lastNow: Instant
    private var integrityKey: STUNIntegrityKey
    private var expectedUsername: [UInt8]
    /// Our own checks (path validation and consent) carry "<client ufrag>:<our ufrag>" and the
    /// client's password (RFC 8445 §7.2.2), with ICE-CONTROLLED: a lite agent is always controlled.
    private var remoteIntegrityKey: STUNIntegrityKey
    private var checkUsername: [UInt8]
    private let tieBreaker: UInt64
    private let dtls: any DTLSConnection
    private var dtlsStartedAt: Instant?
    private var outboundSRTP: SRTPContext?
    private var inboundSRTP: SRTPContext?
    /// Client addresses that sent authenticated checks, and which of them answered ours (path
    /// validation and RFC 7675 consent). Keyed by the client's address alone: the relay in front of
    /// it may change (a relay restarts, or another replica takes the flow) without the client doing anything.
    private var consent: ICEConsent
    /// DTLS that arrived from an address still being validated (the client's ClientHello can
    /// overtake its answer to our check): processed once the address answers, dropped if it does not.
    private var heldDTLS: [(client: TransportAddress, bytes: [UInt8], arrival: Instant)] = []
    private static let maximumHeldDTLS = 4
    /// SPED (DTLS inside STUN), when negotiated: the handshake rides the client's checks and our
    /// answers to them, so DTLS starts with ICE's first round trip instead of after it.
    private var sped: DTLSInSTUN?
    /// What SPED may send toward addresses that have not answered our check — whole Binding
    /// messages that carry DTLS, and direct DTLS: one server flight
    /// (`SessionParameters.spedFlightCredit`) shared by all, and each address three times the
    /// authenticated check bytes it sent.
    private var unvalidatedCredit: AmplificationCredit
    /// SPED: the current flight's datagrams owed directly to an address that has not answered our
    /// check yet (those no Binding message carried); sent once it answers — or before, within the
    /// credit, when nothing stands between (a relay drops DTLS toward a client it has not seen answer).
    private var withheldDTLS: (client: TransportAddress, datagrams: [[UInt8]])?
    private var dtlsConnectedAt: Instant?
    /// A SPED client that never acknowledges our last flight: SPED ends this long after DTLS connected.
    private static let spedLingering: Duration = .seconds(10)
    private static let heldDTLSLifetime: Duration = .seconds(4)
    /// The latest authenticated checks' transaction ids and where each came from (replay detection).
    private var recentChecks: [(id: STUNTransactionID, client: TransportAddress)] = []
    /// Whether `.clientAuthenticated` was reported (once per session).
    private var clientAuthenticated = false
    private static let rememberedChecks = 64

    private var sequenceNumber: UInt16
    private var packetsSent: UInt32 = 0
    private var octetsSent: UInt32 = 0
    private var lastSentTimestamp: UInt32 = 0
    private var lastSentAt: Instant?
    private var nextRTCP: Instant?
    private var lastSenderReport: (compactNTP: UInt32, arrival: Instant)?

    /// Data channels (SCTP over DTLS), once DTLS is up and if the offer had a data section.
    private var dataChannels: DataChannels?
    private var transmits: [Transmit] = []
    private var events: [SessionEvent] = []
    /// Scratch space for decrypting and building packets, reused for every packet.
    private var scratch = [UInt8](repeating: 0, count: 1500 + SRTPContext.maximumOverhead)

    public init(parameters: SessionParameters, dtlsContext: any DTLSContext, now: Instant) throws(DTLSError) {
        self.parameters = parameters
        unvalidatedCredit = AmplificationCredit(flight: parameters.spedFlightCredit)
        createdAt = now
        lastNow = now
        integrityKey = STUNIntegrityKey(shortTermPassword: parameters.localPassword)
        // Checks from the client carry "<our ufrag>:<its ufrag>" (RFC 8445 §7.2.2).
        expectedUsername = Array("\(parameters.localUfrag):\(parameters.negotiated.remoteUfrag)".utf8)
        remoteIntegrityKey = STUNIntegrityKey(shortTermPassword: parameters.negotiated.remotePassword)
        checkUsername = Array("\(parameters.negotiated.remoteUfrag):\(parameters.localUfrag)".utf8)
        var consentSettings = ICEConsent.Settings()
        consentSettings.consentTimeout = parameters.timeouts.consent
        consentSettings.consentInterval = parameters.timeouts.consentInterval
        consent = ICEConsent(settings: consentSettings, now: now)
        let role: DTLSConnection.Role = parameters.negotiated.localSetup == .active ? .client : .server
        let sped = parameters.negotiated.sped && role == .server
        // Under SPED a handshake datagram rides a Binding message: the draft's MTU rule leaves room
        // for the message's other attributes (about 150 bytes in Parley's check or answer).
        dtls = try dtlsContext.makeConnection(
            role: role, remoteFingerprints: parameters.negotiated.remoteFingerprints,
            mtu: sped ? dtlsContext.configuration.mtu - Self.spedOverhead : nil)
        dtls.advanceClock(to: now)
        if sped { self.sped = DTLSInSTUN() }
        var generator = SystemRandomNumberGenerator()
        sequenceNumber = UInt16.random(in: 0...UInt16.max, using: &generator)
        tieBreaker = generator.next()
        counters.dtlsLibrary = dtlsContext.library
    }

    /// ICE restart (RFC 8445 §9): new credentials on both sides, same DTLS association. Media keeps
    /// flowing on the current path; only checks with the new credentials are answered from now on,
    /// and the first nominated one may move the session.
    /// `renegotiated`, when given, replaces what the new offer changed (its Opus payload type, say);
    /// the DTLS role and certificates stay those of the running association.
    public func restartICE(localUfrag: String, localPassword: String, remoteUfrag: String, remotePassword: String,
                           renegotiated: NegotiatedSession? = nil) {
        if var renegotiated {
            renegotiated.localSetup = parameters.negotiated.localSetup
            renegotiated.remoteFingerprints = parameters.negotiated.remoteFingerprints
            // One SCTP association per DTLS association: SNAP's INITs stay those it started with.
            renegotiated.localSCTPInit = parameters.negotiated.localSCTPInit
            renegotiated.remoteSCTPInit = parameters.negotiated.remoteSCTPInit
            parameters.negotiated = renegotiated
        }
        parameters.localUfrag = localUfrag
        parameters.localPassword = localPassword
        parameters.negotiated.remoteUfrag = remoteUfrag
        parameters.negotiated.remotePassword = remotePassword
        integrityKey = STUNIntegrityKey(shortTermPassword: localPassword)
        expectedUsername = Array("\(localUfrag):\(remoteUfrag)".utf8)
        remoteIntegrityKey = STUNIntegrityKey(shortTermPassword: remotePassword)
        checkUsername = Array("\(remoteUfrag):\(localUfrag)".utf8)
        consent.credentialsChanged(now: lastNow)
        counters.iceRestarts += 1
        events.append(.iceRestarted)
    }

    /// Whether the client at `path` answered our check and its consent holds: only then does
    /// anything but STUN from there count, and only then may the path carry media.
    public func hasConsent(from path: PeerPath) -> Bool { consent.isValidated(path.client, now: lastNow) }

    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    // MARK: Input

    /// Takes one datagram that arrived from `path`.
    public func receive(_ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        lastNow = now
        dtls.advanceClock(to: now)
        counters.datagramsReceived += 1
        guard !isClosed else { return drop(.closed) }
        switch PacketKind.classify(datagram) {
        case .stun: receiveSTUN(datagram, from: path, now: now)
        case .dtls: receiveDTLS(datagram, from: path, now: now)
        case .rtp: receiveRTP(datagram, from: path, now: now)
        case .rtcp: receiveRTCP(datagram, from: path, now: now)
        default: drop(.unknownProtocol)
        }
    }

    /// Runs timers whose time has come.
    public func handleTimeout(now: Instant) {
        lastNow = now
        dtls.advanceClock(to: now)
        guard !isClosed else { return }
        if selectedPath == nil, now - createdAt >= parameters.timeouts.ice {
            // Checks that came but whose address never answered ours are a different failure.
            return close(consent.candidates.isEmpty && counters.checksAnswered == 0 ? .iceTimeout : .pathUnverified, now: now)
        }
        if consent.consentExpired(now: now) { return close(.consentExpired, now: now) }
        consent.handleTimeout(now: now)
        sendChecks()
        // Held DTLS whose address did not answer within a few validation timeouts is dropped.
        if let oldest = heldDTLS.first, now - oldest.arrival >= Self.heldDTLSLifetime {
            let before = heldDTLS.count
            heldDTLS.removeAll { now - $0.arrival >= Self.heldDTLSLifetime }
            counters.drops[.unvalidatedSource, default: 0] += before - heldDTLS.count
        }
        if state == .connecting {
            if let started = dtlsStartedAt, now - started >= parameters.timeouts.dtls {
                return close(.dtlsTimeout, now: now)
            }
            if let delay = dtls.retransmitDelay, delay <= .zero {
                dtls.handleTimeout()
                flushDTLS(now: now)
            }
        }
        // DTLS 1.3 keeps timers after its handshake (a last flight awaiting its ACK).
        if state == .connected, let delay = dtls.retransmitDelay, delay <= .zero {
            dtls.handleTimeout()
            if let path = selectedPath { for datagram in dtls.takeOutgoing() { emit(datagram, to: path) } }
            // A last flight never acknowledged leaves BoringSSL unable to read: the call is over.
            if case .failed(let error) = dtls.state { return close(.dtlsFailed(error), now: now) }
        }
        if state == .connected, sped?.isActive == true, let connected = dtlsConnectedAt, now - connected >= Self.spedLingering {
            sped?.end()
        }
        if state == .connected, let dataChannels, let due = dataChannels.association.nextWakeup, now >= due {
            dataChannels.handleTimeout(now: now)
            pumpDataChannels(now: now)
        }
        if state == .connected, let due = nextRTCP, now >= due {
            sendReport(now: now)
            nextRTCP = now + parameters.rtcpInterval
        }
    }

    /// When `handleTimeout` should next run, or nil once closed.
    public var nextWakeup: Instant? {
        guard !isClosed else { return nil }
        var wake: Instant?
        func consider(_ instant: Instant?) {
            guard let instant else { return }
            if wake == nil || instant < wake! { wake = instant }
        }
        if selectedPath == nil { consider(createdAt + parameters.timeouts.ice) }
        consider(consent.nextWakeup)
        consider(heldDTLS.first.map { $0.arrival + Self.heldDTLSLifetime })
        if state == .connecting {
            consider(dtlsStartedAt.map { $0 + parameters.timeouts.dtls })
            consider(dtls.retransmitDelay.map { lastNow + $0 })
        }
        if state == .connected {
            consider(dtls.retransmitDelay.map { lastNow + $0 })
            consider(nextRTCP)
            consider(dataChannels?.association.nextWakeup)
        }
        return wake
    }

    // MARK: Output

    public func takeTransmits() -> [Transmit] {
        defer { transmits.removeAll(keepingCapacity: true) }
        return transmits
    }

    public func takeEvents() -> [SessionEvent] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    /// Sends one Opus frame to the client on Parley's own SSRC and sequence numbers.
    /// Returns false when the session cannot send media yet (or any more).
    @discardableResult
    public func sendAudio(_ payload: UnsafeRawBufferPointer, timestamp: UInt32, marker: Bool, now: Instant) -> Bool {
        guard state == .connected, let path = selectedPath, let outboundSRTP,
              payload.count + RTPHeader.fixedLength <= 1500 else { return false }
        let length = scratch.withUnsafeMutableBytes { buffer -> Int? in
            RTPHeader.write(marker: marker, payloadType: parameters.negotiated.opus.payloadType,
                            sequenceNumber: sequenceNumber, timestamp: timestamp, ssrc: parameters.localAudioSSRC,
                            into: buffer)
            if let base = payload.baseAddress { (buffer.baseAddress! + RTPHeader.fixedLength).copyMemory(from: base, byteCount: payload.count) }
            return try? outboundSRTP.protectRTP(buffer, length: RTPHeader.fixedLength + payload.count)
        }
        guard let length else { return false }
        sequenceNumber &+= 1
        packetsSent &+= 1
        octetsSent &+= UInt32(truncatingIfNeeded: payload.count)  // modulo 2^32 (RFC 3550 §6.4.1)
        lastSentTimestamp = timestamp
        lastSentAt = now
        counters.rtpSent += 1
        emit(Array(scratch[0..<length]), to: path)
        return true
    }

    @discardableResult
    public func sendAudio(_ payload: [UInt8], timestamp: UInt32, marker: Bool, now: Instant) -> Bool {
        payload.withUnsafeBytes { sendAudio($0, timestamp: timestamp, marker: marker, now: now) }
    }

    /// Sends a message on a data channel (text or binary). False when the channel is not open or
    /// the message is over the client's maximum size.
    @discardableResult
    public func sendDataChannelMessage(_ payload: [UInt8], binary: Bool, channel: UInt16, now: Instant) -> Bool {
        guard state == .connected, let dataChannels else { return false }
        do {
            try dataChannels.send(payload, binary: binary, channel: channel, now: now)
        } catch {
            return false
        }
        counters.dataChannelMessagesSent += 1
        pumpDataChannels(now: now)
        return true
    }

    /// Opens a data channel from Parley's side; returns its id.
    public func openDataChannel(label: String, now: Instant) -> UInt16? {
        let id = dataChannels?.open(label: label, now: now)
        pumpDataChannels(now: now)
        return id
    }

    /// Data-channel bytes sent and not yet acknowledged by the client (or not yet sent).
    public var dataChannelBufferedAmount: Int { dataChannels?.association.bufferedAmount ?? 0 }

    /// Open data channels by id, with their labels.
    public var openDataChannels: [UInt16: String] {
        dataChannels?.openChannels.mapValues(\.label) ?? [:]
    }

    public func closeDataChannel(_ channel: UInt16, now: Instant) {
        dataChannels?.close(channel: channel, now: now)
        pumpDataChannels(now: now)
    }

    /// Sends SCTP's packets through DTLS and turns its events into session events.
    private func pumpDataChannels(now: Instant) {
        guard let dataChannels else { return }
        // DTLS's timer (a delay) is counted from the latest input: this one, if it is later.
        if now > lastNow { lastNow = now }
        dtls.advanceClock(to: lastNow)
        for packet in dataChannels.takeOutgoing() { _ = packet.withUnsafeBytes { dtls.send($0) } }
        if let path = selectedPath { for datagram in dtls.takeOutgoing() { emit(datagram, to: path) } }
        for event in dataChannels.takeEvents() {
            switch event {
            case .opened(let channel):
                events.append(.dataChannelOpened(id: channel.id, label: channel.label))
            case .message(let channel, let label, let binary, let payload):
                counters.dataChannelMessagesReceived += 1
                events.append(.dataChannelMessage(id: channel, label: label, binary: binary, payload: payload))
            case .closed(let channel, let label):
                events.append(.dataChannelClosed(id: channel, label: label))
            case .transportClosed(let reason):
                counters.dataChannelTransportClosed = reason
                events.append(.dataChannelTransportClosed(reason: reason))
            }
        }
        var drops: [String: Int] = [:]
        for (reason, count) in dataChannels.drops { drops[reason.rawValue] = count }
        for (reason, count) in dataChannels.association.drops { drops["sctp_" + reason.rawValue] = count }
        counters.dataChannelDrops = drops
    }

    /// Ends the session: a BYE and DTLS close_notify to the client when connected.
    public func close(_ reason: CloseReason, now: Instant) {
        guard !isClosed else { return }
        if state == .connected, let path = selectedPath, let outboundSRTP {
            let length = scratch.withUnsafeMutableBytes { buffer -> Int? in
                let written = RTCPCompound.writeGoodbye(ssrc: parameters.localAudioSSRC, into: buffer)
                return try? outboundSRTP.protectRTCP(buffer, length: written)
            }
            if let length { emit(Array(scratch[0..<length]), to: path) }
        }
        if reason != .peerClosed, state == .connected || state == .connecting {
            dtls.advanceClock(to: now)
            dtls.close()
            if let path = selectedPath { for datagram in dtls.takeOutgoing() { emit(datagram, to: path) } }
        }
        state = .closed(reason)
        events.append(.closed(reason))
    }

    // MARK: ICE

    private func receiveSTUN(_ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        guard let message = try? STUNMessage.parse(datagram) else { return drop(.malformedSTUN) }
        if message.fingerprintOffset != nil, !message.hasValidFingerprint(in: datagram) { return drop(.badFingerprint) }
        switch message.type {
        case .bindingRequest: receiveCheck(message, datagram, from: path, now: now)
        case .bindingSuccess, .bindingError: receiveAnswer(message, datagram, from: path, now: now)
        case .bindingIndication: break  // a keepalive (RFC 8445 §11): nothing to do
        default: drop(.unexpectedSTUN)
        }
    }

    /// A connectivity check from the client (RFC 8445 §7.3). It is answered, and it tells where the
    /// client may be; the address counts only once it answers a check of ours.
    ///
    /// A check that does not authenticate gets no answer (RFC 8489 would send a 400 or 401): its
    /// source address may be anyone's, and an answer to a forged or replayed check is reflected at
    /// that someone. The client with the wrong credentials learns as much from the silence.
    private func receiveCheck(_ message: STUNMessage, _ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        guard let username = message.username, message.messageIntegrityOffset != nil else { return drop(.unauthenticatedSTUN) }
        let usernameMatches = expectedUsername.withUnsafeBytes { expected in
            UnsafeRawBufferPointer(rebasing: datagram[username]).elementsEqual(expected)
        }
        guard usernameMatches, message.hasValidMessageIntegrity(in: datagram, key: integrityKey) else {
            return drop(.unauthenticatedSTUN)
        }
        // A client's check, captured and replayed from other source addresses, authenticates too;
        // its transaction id gives it away (a client retransmits a transaction only from where it
        // sent it first).
        if let seen = recentChecks.first(where: { $0.id == message.transactionID }), seen.client != path.client {
            return drop(.replayedCheck)
        }
        if !recentChecks.contains(where: { $0.id == message.transactionID }) {
            if recentChecks.count == Self.rememberedChecks { recentChecks.removeFirst() }
            recentChecks.append((message.transactionID, path.client))
        }
        if !clientAuthenticated {
            clientAuthenticated = true
            events.append(.clientAuthenticated(path))
        }
        guard consent.receivedRequest(from: path, nominated: message.useCandidate, now: now) else {
            return drop(.checkRefused)
        }
        // After the gate: a 420 is an answer too, and must not reach spoofed sources any faster.
        if message.unknownRequiredAttributes.count > 0 {
            sendChecks()
            return answerUnknownAttributes(message, to: path)
        }
        if sped != nil {
            receiveDTLSInSTUN(message, datagram, from: path, now: now)
            guard !isClosed else { return }  // DTLS failed on what the check carried
        }
        // Our check goes out before the answer: the client then answers it before it can start DTLS
        // on our answer, and a relay in front commits the route on that answer (docs/relay.md).
        sendChecks()
        answerSuccess(message, to: path, now: now)
        if withheldDTLS != nil { sendWithheldDTLS(to: path, now: now) }
        counters.checksAnswered += 1
        guard consent.isValidated(path.client, now: now) else { return }
        // Only a nominating check moves the answers to another relay hop: a client checks its backup
        // pairs (through the answer's other relays) every few seconds, and following each of those
        // would send the media back and forth. Media (SRTP, SRTCP) through a new hop moves it too.
        if message.useCandidate { followRelayChange(path) }
        // A switch waits for a fresh answer from the new path (sent above when it was stale).
        let canSwitch = path.client == selectedPath?.client || consent.isFresh(path.client, now: now)
        if (message.useCandidate && canSwitch) || selectedPath == nil {
            select(path, nominated: message.useCandidate, now: now)
        }
    }

    /// An answer to one of our checks: authenticated with the client's password, for a request
    /// still outstanding to that very address.
    private func receiveAnswer(_ message: STUNMessage, _ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        // The cheap test first: an answer to nothing we sent costs no HMAC.
        guard consent.isOutstanding(message.transactionID, to: path.client) else { return drop(.unmatchedResponse) }
        guard message.hasValidMessageIntegrity(in: datagram, key: remoteIntegrityKey) else {
            // Error answers without integrity (a 400 or 401) could come from anyone: never acted on.
            return drop(.unauthenticatedSTUN)
        }
        if message.type == .bindingError {
            let code = message.errorCode?.code ?? 0
            guard consent.receivedError(message.transactionID, code: code, from: path) else { return drop(.unmatchedResponse) }
            counters.checkErrors += 1
            if code == 403, path.client == selectedPath?.client { close(.consentRevoked, now: now) }
            return
        }
        let wasValidated = consent.isValidated(path.client, now: now)
        guard consent.receivedSuccess(message.transactionID, from: path, now: now) else { return drop(.unmatchedResponse) }
        counters.checkResponses += 1
        if let sample = consent.takeRoundTripSample() { learnRoundTrip(sample.roundTrip, to: sample.address) }
        // SPED rides answers too: Chromium puts the rest of a two-datagram ClientHello (post-quantum
        // key shares) in its answer to our check, and acknowledges our flight there.
        if sped != nil {
            receiveDTLSInSTUN(message, datagram, from: path, now: now)
            guard !isClosed else { return }
        }
        sendChecks()
        let nominated = consent.isNominated(path.client)
        if (nominated && selectedPath?.client != path.client) || selectedPath == nil { select(path, nominated: nominated, now: now) }
        if !wasValidated {
            releaseHeldDTLS(from: path.client, now: now)
            if withheldDTLS != nil, !isClosed { sendWithheldDTLS(to: path, now: now) }
        }
    }

    /// WARP's RTO sync (draft-uberti-tsvwg-warp): the round trip our checks measured toward the
    /// client seeds DTLS's and SCTP's retransmission timers, rather than their fixed first values
    /// (400 ms and 1 s) — on the path media uses, or will use before one is selected.
    private func learnRoundTrip(_ roundTrip: Duration, to client: TransportAddress) {
        guard selectedPath == nil || selectedPath?.client == client else { return }
        counters.iceRoundTripTime = roundTrip
        dtls.seedRoundTrip(roundTrip)
        dataChannels?.association.seedRoundTrip(roundTrip)
    }

    /// Writes and sends the checks `consent` decided on.
    private func sendChecks() {
        for check in consent.takeChecks() {
            // SPED: our checks carry its attributes too. Chromium reads every Binding message, and
            // one without them — this check reaches it before our answer — turns its SPED off.
            let length = writeBinding(toward: check.path) { buffer, piggyback -> Int? in
                guard var writer = try? STUNWriter(into: buffer, type: .bindingRequest, transactionID: check.transactionID),
                      (try? writer.appendUsername(checkUsername)) != nil,
                      (try? writer.appendPriority(Self.checkPriority)) != nil,
                      (try? writer.appendICEControlled(tieBreaker: tieBreaker)) != nil,
                      Self.append(piggyback, to: &writer),
                      (try? writer.appendMessageIntegrity(key: remoteIntegrityKey)) != nil,
                      (try? writer.appendFingerprint()) != nil else { return nil }
                return writer.count
            }
            guard let length else { continue }
            counters.checksSent += 1
            emit(Array(scratch[0..<length]), to: check.path, check: check.transactionID)
        }
    }

    /// Room a Binding message leaves around an embedded DTLS datagram: header, USERNAME (a check's:
    /// an IPv6 pod's 48-character token and the client's ufrag), PRIORITY, ICE-CONTROLLED or
    /// XOR-MAPPED-ADDRESS, the ACK, MESSAGE-INTEGRITY, FINGERPRINT.
    static let spedOverhead = 180

    /// PRIORITY of our checks (RFC 8445 §7.1.1): a peer-reflexive candidate's, as the client would learn it.
    static let checkPriority = ICECandidate.priority(typePreference: 110, localPreference: 65535, component: 1)

    /// The selected client reached us through another relay hop (relay restart, another replica):
    /// answer the same way from now on. The hop is trusted: the worker accepts tunnel datagrams
    /// only from relay networks.
    private func followRelayChange(_ path: PeerPath) {
        // Relay to relay only: a relayed session never starts answering directly, or the reverse.
        if let selected = selectedPath, selected.client == path.client, selected.relay != path.relay,
           (selected.relay == nil) == (path.relay == nil) {
            selectedPath = path
        }
    }

    private func select(_ path: PeerPath, nominated: Bool, now: Instant) {
        guard !isClosed else { return }
        followRelayChange(path)
        guard path != selectedPath else { return }
        let previous = selectedPath
        // Without nomination, the first validated path serves until one is nominated.
        if previous != nil, !nominated { return }
        selectedPath = path
        consent.select(path.client, now: now)
        if let previous {
            events.append(.pathChanged(from: previous, to: path))
        } else {
            events.append(.iceConnected(path))
            state = .connecting
            if dtlsStartedAt == nil { dtlsStartedAt = now }
            dtls.start()
            flushDTLS(now: now)
            if withheldDTLS != nil, !isClosed { sendWithheldDTLS(to: path, now: now) }
        }
    }

    private func answerSuccess(_ request: STUNMessage, to path: PeerPath, now: Instant) {
        let length = writeBinding(toward: path) { buffer, piggyback -> Int? in
            guard var writer = try? STUNWriter(into: buffer, type: .bindingSuccess, transactionID: request.transactionID),
                  (try? writer.appendXORMappedAddress(path.client)) != nil,
                  Self.append(piggyback, to: &writer),
                  (try? writer.appendMessageIntegrity(key: integrityKey)) != nil,
                  (try? writer.appendFingerprint()) != nil else { return nil }
            return writer.count
        }
        if let length { emit(Array(scratch[0..<length]), to: path) }
    }

    /// Writes a Binding message toward `path` into the scratch buffer, with SPED's attributes when
    /// it is on; returns its length. Its DTLS datagram goes only if the message fits and, toward an
    /// address that has not answered our check, within the credit (which the whole message spends).
    private func writeBinding(
        toward path: PeerPath, _ write: (UnsafeMutableRawBufferPointer, DTLSInSTUN.Attributes?) -> Int?
    ) -> Int? {
        var piggyback = sped?.nextAttributes(mayFinish: selectedPath?.client == path.client)
        var length = scratch.withUnsafeMutableBytes { write($0, piggyback) }
        let validated = consent.isValidated(path.client, now: lastNow)
        if piggyback?.datagram != nil,
           length.map({ $0 > Self.maximumBindingLength || (!validated && !unvalidatedCredit.allows($0, to: path.client)) }) ?? true {
            // No room, or no credit: the message goes without it, and the datagram stays next in turn.
            piggyback?.datagram = nil
            sped?.unembed()
            length = scratch.withUnsafeMutableBytes { write($0, piggyback) }
        }
        if let length, let datagram = piggyback?.datagram {
            counters.dtlsInSTUNSent += 1
            if !validated { unvalidatedCredit.spend(length, to: path.client) }
            // It went out here: it is no longer owed directly to this address.
            if withheldDTLS?.client == path.client, let index = withheldDTLS?.datagrams.firstIndex(of: datagram) {
                withheldDTLS?.datagrams.remove(at: index)
            }
        }
        return length
    }

    /// The largest Binding message SPED makes: what the relay passes to a client (one datagram on
    /// any path Parley serves), and what its scratch buffer holds.
    static let maximumBindingLength = 1500

    /// SPED's ACK and DATA, before MESSAGE-INTEGRITY (which then vouches for them). True when written.
    private static func append(_ piggyback: DTLSInSTUN.Attributes?, to writer: inout STUNWriter) -> Bool {
        guard let piggyback else { return true }
        guard (try? writer.appendDTLSInSTUNAcknowledgement(piggyback.acknowledgements)) != nil else { return false }
        guard let datagram = piggyback.datagram else { return true }
        return (try? writer.appendDTLSInSTUN(datagram)) != nil
    }

    /// SPED: what an authenticated check (or answer to ours) carried. Its DTLS datagram (the
    /// ClientHello, in the first check) goes to DTLS at once, before the address answered our
    /// check; what DTLS answers waits in `sped` to ride our next Binding messages, and goes directly
    /// within the credit (all of it, once the address has answered).
    private func receiveDTLSInSTUN(_ message: STUNMessage, _ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        if message.hasMalformedDTLSAcknowledgement { drop(.malformedSPED) }
        if !consent.isValidated(path.client, now: now) {
            unvalidatedCredit.received(datagram.count, from: path.client)
        }
        let data = message.dtlsInSTUN.map { UnsafeRawBufferPointer(rebasing: datagram[$0]) }
        var acknowledgement = message.dtlsInSTUNAcknowledgement.map { UnsafeRawBufferPointer(rebasing: datagram[$0]) }
        // A malformed ACK still says the client speaks SPED: an empty one, not none.
        if acknowledgement == nil, message.hasMalformedDTLSAcknowledgement { acknowledgement = UnsafeRawBufferPointer(rebasing: datagram[0..<0]) }
        if let data, let first = data.first, !(20...63).contains(first) { drop(.malformedSPED) }
        guard let embedded = sped?.receive(data: data, acknowledgement: acknowledgement) else { return }
        counters.dtlsInSTUNReceived += 1
        if dtlsStartedAt == nil {
            dtlsStartedAt = now
            counters.dtlsStart = "sped"
        }
        dtls.receive(embedded)
        flushDTLS(now: now, replyTo: path)
        deliverApplicationData(now: now)
    }

    /// SPED: the DTLS datagrams the credit held back, as far as it now allows (all of them once
    /// the address has answered our check).
    private func sendWithheldDTLS(to path: PeerPath, now: Instant) {
        guard var withheld = withheldDTLS, withheld.client == path.client else { return }
        let validated = consent.isValidated(path.client, now: now)
        // A relay in front drops DTLS toward a client it has not seen answer: it waits for the answer.
        guard validated || path.relay == nil else { return }
        while let next = withheld.datagrams.first, validated || unvalidatedCredit.allows(next.count, to: path.client) {
            if !validated { unvalidatedCredit.spend(next.count, to: path.client) }
            withheld.datagrams.removeFirst()
            emit(next, to: path)
        }
        withheldDTLS = withheld.datagrams.isEmpty ? nil : withheld
    }

    private func answerUnknownAttributes(_ request: STUNMessage, to path: PeerPath) {
        let bytes = try? STUNWriter.build(type: .bindingError, transactionID: request.transactionID) { writer throws(STUNBuildError) in
            try writer.appendErrorCode(STUNErrorCode.unknownAttribute, reason: "Unknown Attribute")
            try writer.appendUnknownAttributes(request.unknownRequiredAttributes.types)
            try writer.appendMessageIntegrity(key: integrityKey)
            try writer.appendFingerprint()
        }
        if let bytes { emit(bytes, to: path) }
    }

    // MARK: DTLS

    private func receiveDTLS(_ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        guard consent.isValidated(path.client, now: now) else {
            // Never a DTLS flight toward an address that has not answered us (no amplification);
            // a few datagrams from one we are checking wait for its answer.
            guard consent.candidates[path.client] != nil, heldDTLS.count < Self.maximumHeldDTLS else {
                return drop(.unvalidatedSource)
            }
            heldDTLS.append((path.client, Array(datagram), now))
            return
        }
        // SPED: acknowledged in our answers; a datagram that already rode a check is not taken twice.
        if sped?.receivedDirectly(datagram) == false { return }
        if counters.dtlsStart == nil { counters.dtlsStart = "direct" }
        dtls.receive(datagram)
        flushDTLS(now: now, replyTo: path)
        deliverApplicationData(now: now)
    }

    /// Application data DTLS decrypted (SCTP packets), to the data channels.
    private func deliverApplicationData(now: Instant) {
        let records = dtls.takeApplicationData()
        guard let dataChannels, !records.isEmpty else { return }
        for record in records { record.withUnsafeBytes { dataChannels.handle($0, now: now) } }
        pumpDataChannels(now: now)
    }

    /// The DTLS an address sent while we checked it, now that it answered.
    private func releaseHeldDTLS(from client: TransportAddress, now: Instant) {
        guard heldDTLS.contains(where: { $0.client == client }), let path = consent.candidates[client]?.path else { return }
        let held = heldDTLS.filter { $0.client == client }
        heldDTLS.removeAll { $0.client == client }
        for datagram in held { datagram.bytes.withUnsafeBytes { receiveDTLS($0, from: path, now: now) } }
    }

    private func flushDTLS(now: Instant, replyTo path: PeerPath? = nil) {
        let datagrams = dtls.takeOutgoing()
        if !datagrams.isEmpty, let destination = path ?? selectedPath {
            // SPED: every flight also rides our answers until the client acknowledges it.
            sped?.sent(flight: datagrams)
            if consent.isValidated(destination.client, now: now) {
                withheldDTLS = nil  // a new flight: what an earlier one still owed is stale
                for datagram in datagrams { emit(datagram, to: destination) }
            } else {
                // Only SPED gets here (all other DTLS waits for validation): the messages about to
                // go carry the first datagrams, the credit and the answer decide when the rest go.
                withheldDTLS = (destination.client, datagrams)
            }
        }
        switch dtls.state {
        case .connected where state == .connecting:
            sped?.handshakeCompleted(asClient: dtls.role == .client)
            counters.dtlsVersion = dtls.version?.description
            guard let keys = dtls.srtpKeys else { return close(.dtlsFailed(.noSRTPProfile), now: now) }
            do {
                outboundSRTP = try SRTPContext(profile: keys.profile, keyAndSalt: keys.localKeyAndSalt, direction: .outbound)
                inboundSRTP = try SRTPContext(profile: keys.profile, keyAndSalt: keys.remoteKeyAndSalt, direction: .inbound)
            } catch {
                return close(.dtlsFailed(.noSRTPProfile), now: now)
            }
            state = .connected
            dtlsConnectedAt = now
            nextRTCP = now + parameters.rtcpInterval
            events.append(.dtlsConnected(keys.profile))
            if parameters.negotiated.dataChannelMid != nil {
                var configuration = SNAPInits.configuration  // what an answer's a=sctp-init describes
                configuration.remotePort = UInt16(clamping: parameters.negotiated.remoteSCTPPort ?? 5000)
                let association = SCTPAssociation(configuration: configuration, now: now, identity: parameters.snap?.local.identity)
                if let roundTrip = counters.iceRoundTripTime { association.seedRoundTrip(roundTrip) }
                let remoteLimit = parameters.negotiated.remoteMaxMessageSize ?? 65536
                dataChannels = DataChannels(association: association, dtlsServer: dtls.role == .server,
                                            localMaximumMessageSize: parameters.localMaxMessageSize,
                                            remoteMaximumMessageSize: remoteLimit)
                if let snap = parameters.snap {
                    // SNAP: both INITs are known, the association is up with DTLS.
                    association.startOutOfBand(peer: snap.remote, now: now)
                    counters.dataChannelStart = "snap"
                } else {
                    // As the DTLS client we also start SCTP; as the server we wait for the client's INIT.
                    if dtls.role == .client { association.connect(now: now) }
                    counters.dataChannelStart = "handshake"
                }
                if let id = parameters.negotiatedEventsChannel { dataChannels?.addNegotiated(id: id, label: "oai-events") }
                pumpDataChannels(now: now)
            }
        case .failed(let error):
            close(.dtlsFailed(error), now: now)
        case .closed where state == .connected || state == .connecting:
            close(.peerClosed, now: now)
        default:
            break
        }
    }

    // MARK: RTP and RTCP

    /// Copies an SRTP datagram into the scratch buffer and decrypts it there.
    private func unprotect(_ datagram: UnsafeRawBufferPointer, rtcp: Bool) -> Int? {
        guard let inboundSRTP, datagram.count <= scratch.count else { return nil }
        return scratch.withUnsafeMutableBytes { buffer -> Int? in
            buffer.baseAddress!.copyMemory(from: datagram.baseAddress!, byteCount: datagram.count)
            return rtcp ? try? inboundSRTP.unprotectRTCP(buffer, length: datagram.count)
                : try? inboundSRTP.unprotectRTP(buffer, length: datagram.count)
        }
    }

    private func receiveRTP(_ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        guard consent.isValidated(path.client, now: now) else { return drop(.unvalidatedSource) }
        guard state == .connected else { return drop(.mediaBeforeDTLS) }
        guard let length = unprotect(datagram, rtcp: false) else { return drop(.srtpRejected) }
        followRelayChange(path)  // only an authenticated packet may move the answers to another hop
        let event: SessionEvent? = scratch.withUnsafeBytes { buffer in
            let packet = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
            guard let header = try? RTPHeader.parse(packet) else {
                drop(.malformedRTP)
                return nil
            }
            guard header.payloadType == parameters.negotiated.opus.payloadType else {
                drop(.unknownPayloadType)
                return nil
            }
            counters.rtpReceived += 1
            receiveStatistics.record(sequence: header.sequenceNumber, timestamp: header.timestamp, ssrc: header.ssrc,
                                     arrival: now - .zero)
            return .audio(timestamp: header.timestamp, sequenceNumber: header.sequenceNumber, marker: header.marker,
                          payload: Array(packet[header.payload]))
        }
        if let event { events.append(event) }
    }

    private func receiveRTCP(_ datagram: UnsafeRawBufferPointer, from path: PeerPath, now: Instant) {
        guard consent.isValidated(path.client, now: now) else { return drop(.unvalidatedSource) }
        guard state == .connected else { return drop(.mediaBeforeDTLS) }
        guard let length = unprotect(datagram, rtcp: true) else { return drop(.srtpRejected) }
        followRelayChange(path)
        let packets = scratch.withUnsafeBytes { buffer in
            try? RTCPCompound.parse(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        }
        guard let packets else { return drop(.malformedRTCP) }
        counters.rtcpReceived += 1
        for packet in packets {
            switch packet {
            case .senderReport(let info, let blocks):
                // LSR/DLSR describe the client's own stream, not any SSRC that sent a report.
                if receiveStatistics.ssrc == nil || info.ssrc == receiveStatistics.ssrc {
                    lastSenderReport = (info.compactNTP, now)
                }
                readReportBlocks(blocks, now: now)
            case .receiverReport(_, let blocks):
                readReportBlocks(blocks, now: now)
            default:
                break
            }
        }
    }

    /// RTT from a report block about our stream: now − LSR − DLSR, in NTP short format (RFC 3550 §6.4.1).
    private func readReportBlocks(_ blocks: [RTCPReportBlock], now: Instant) {
        for block in blocks where block.ssrc == parameters.localAudioSSRC && block.lastSenderReport != 0 {
            let nowCompact = UInt32(truncatingIfNeeded: ntp(at: now) >> 16)
            let rtt = nowCompact &- block.lastSenderReport &- block.delaySinceLastSenderReport
            if rtt < 0x8000_0000 { counters.roundTripTime = .nanoseconds(Int64(rtt) * 1_000_000_000 / 65536) }
        }
    }

    private func ntp(at instant: Instant) -> UInt64 {
        parameters.ntpAtInstantZero &+ Self.ntpDuration(since: .zero, until: instant)
    }

    /// The time from `start` to `end` in NTP's 32.32 fixed point (for `ntpAtInstantZero`).
    public static func ntpDuration(since start: Instant, until end: Instant) -> UInt64 {
        let nanoseconds = UInt64(clamping: (end - start).nanoseconds)
        let seconds = nanoseconds / 1_000_000_000
        let fraction = (nanoseconds % 1_000_000_000) << 32 / 1_000_000_000
        return seconds << 32 | fraction
    }

    /// A compound SR (or RR before we have sent anything) with a block about the client's stream.
    private func sendReport(now: Instant) {
        guard let path = selectedPath, let outboundSRTP else { return }
        var blocks: [RTCPReportBlock] = []
        let delay = lastSenderReport.map { (now - $0.arrival).ntpShortFormat } ?? 0
        if let block = receiveStatistics.makeReportBlock(lastSenderReport: lastSenderReport?.compactNTP ?? 0,
                                                         delaySinceLastSenderReport: delay) {
            blocks.append(block)
        }
        // The RTP timestamp of "now" on our stream's clock (RFC 3550 §6.4.1): the last one sent,
        // extrapolated at 48 kHz, so the client can align our NTP and RTP times.
        let elapsed = lastSentAt.map { now - $0 } ?? .zero
        let rtpNow = lastSentTimestamp &+ (elapsed > .zero ? elapsed.rtpTicks(clockRate: 48000) : 0)
        let sender = packetsSent == 0 ? nil : RTCPSenderInfo(
            ssrc: parameters.localAudioSSRC, ntpTimestamp: ntp(at: now), rtpTimestamp: rtpNow,
            packetCount: packetsSent, octetCount: octetsSent)
        let length = scratch.withUnsafeMutableBytes { buffer -> Int? in
            let written = RTCPCompound.writeReport(ssrc: parameters.localAudioSSRC, sender: sender, blocks: blocks,
                                                   cname: parameters.cname, into: buffer)
            return try? outboundSRTP.protectRTCP(buffer, length: written)
        }
        guard let length else { return }
        counters.rtcpSent += 1
        emit(Array(scratch[0..<length]), to: path)
    }

    // MARK: Helpers

    private func emit(_ bytes: [UInt8], to path: PeerPath, check: STUNTransactionID? = nil) {
        counters.datagramsSent += 1
        transmits.append(Transmit(path: path, bytes: bytes, check: check))
    }

    private func drop(_ reason: DropReason) {
        counters.drops[reason, default: 0] += 1
    }
}

// MARK: For the fuzz harnesses

/// What the fuzz harnesses (Fuzz/) need to play this session's peer with bytes of their own: the
/// keys to encrypt SRTP as the session's client would receive it, and DTLS to carry SCTP packets.
/// Not for production use.
extension WebRTCSession {
    @_spi(Fuzzing) public var srtpKeys: SRTPKeyMaterial? { dtls.srtpKeys }

    /// `bytes` as a DTLS application-data record toward the client: the datagrams to deliver.
    @_spi(Fuzzing) public func sealApplicationData(_ bytes: [UInt8]) -> [[UInt8]] {
        guard state == .connected else { return [] }
        dtls.advanceClock(to: lastNow)
        guard bytes.withUnsafeBytes({ dtls.send($0) }) else { return [] }
        return dtls.takeOutgoing()
    }

    /// The data channels' SCTP verification tags: ours, and the client's.
    @_spi(Fuzzing) public var sctpTags: (local: UInt32, peer: UInt32)? {
        dataChannels.map { ($0.association.localTag, $0.association.peerTag) }
    }
}
