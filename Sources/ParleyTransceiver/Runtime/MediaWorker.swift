import Logging
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import ParleyMedia
import ParleySession
import ParleySignaling
import ParleyIO
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

/// One event loop's share of the sessions, with its own UDP socket. The routing token names the
/// worker, so every datagram of a session reaches the thread that owns it: no locks, no hand-offs.
/// All state is touched only on `eventLoop`.
final class MediaWorker: @unchecked Sendable {
    let index: Int
    let eventLoop: EventLoop
    /// The address written into this worker's routing tokens (where relays send its sessions' traffic).
    /// Set once by `start` (the bound port when asked for port 0), before any call is created.
    private(set) var endpoint: TransportAddress
    /// Replaced on the loop when the keys are reloaded (SIGHUP).
    var keyring: RoutingKeyring
    private let relayNetworks: [IPNetwork]
    private let registry: CallRegistry
    private let metrics: TransceiverMetrics
    private let logger: Logger
    private var channel: Channel?
    private var tick: RepeatedTask?

    /// A class, not a struct: the per-packet and per-tick lookups then retain one reference
    /// instead of copying a logger, a set and counters.
    private final class Entry {
        let session: WebRTCSession
        /// The echo agent works on Opus frames directly; every other agent through a bridge (an
        /// external agent's once it accepted the session).
        let echo: EchoAgent?
        var bridge: AgentBridge?
        /// An external agent's WebSocket, and whether reading it is paused (its audio queue is full).
        var link: WebSocketAgentLink?
        var linkPaused = false
        /// An external agent to connect to once the client's first check authenticates: a bare POST
        /// opens no connection to the agent.
        var pendingAgent: AgentEndpoint?
        /// An external agent must accept by then.
        var agentDeadline: Instant?
        /// The call's session configuration (a JSON object as text), as its agent was told.
        var configuration: String = "{}"
        /// The agent's name as the call's session chose it (or the default agent's).
        var agentName = ""
        /// The app's server's sidebands watching this call, by subscription number.
        var sidebands: [Int: (continuation: AsyncStream<SidebandFrame>.Continuation, budget: SidebandBudget)] = [:]
        var lastState = "waiting_for_ice"
        /// Why the agent failed, while the call waits (briefly) for `oai-events` to say so.
        var agentFailure: String?
        var agentFailureDetail: String?
        var agentFailureDeadline: Instant?
        /// When the failure notice went out on `oai-events`: the call ends once it is acknowledged.
        var agentNoticeSentAt: Instant?
        let logger: Logger
        let createdAt: Instant
        var clients: Set<FlowAddress> = []
        var reported = SessionCounters()
        /// The session's key in `sessions` (it changes with an ICE restart's new token).
        var key: UInt32 = 0

        init(session: WebRTCSession, echo: EchoAgent?, bridge: AgentBridge?, logger: Logger, createdAt: Instant) {
            self.session = session
            self.echo = echo
            self.bridge = bridge
            self.logger = logger
            self.createdAt = createdAt
        }
    }

    private var sessions: [UInt32: Entry] = [:]
    /// Session keys by call id, for the sideband's requests.
    private var callKeys: [String: UInt32] = [:]
    private var nextSidebandID = 0
    /// Events a sideband may fall behind by before it is closed (its server reconnects for the state).
    static let sidebandBacklog = 1024
    /// Sidebands one call may have open at once (an app's server needs one; a few for handovers).
    static let maximumSidebandsPerCall = 4

    enum SidebandSubscription { case added, noSuchCall, full }
    /// TLS for `wss://` agents (set at start when the agent is one).
    var agentTLS: NIOSSLContext?
    /// Sessions by authenticated client flow (whatever relay the client's datagrams come through).
    private var byClient: [FlowAddress: UInt32] = [:]
    /// Sessions by the transaction id of a check they sent: the client's answer (which names no
    /// session) finds its way back even from an address not validated yet. Entries last as long as
    /// an answer counts (the consent timeout).
    private var byCheck: [STUNTransactionID: (key: UInt32, sentAt: Instant)] = [:]
    /// Addresses a session is checking and has not mapped yet: their DTLS (a ClientHello that
    /// overtakes the answer to our check) reaches the session, which holds it until the answer.
    /// Only a fallback: `byClient` (validated addresses) wins, and entries go with `byCheck`'s.
    private var checking: [FlowAddress: (key: UInt32, sentAt: Instant)] = [:]
    private static let checkAnswerLifetime: Duration = .seconds(30)
    private static let earlyDTLSLifetime: Duration = .seconds(5)
    /// Each session has a few checks outstanding; this bounds the map whatever happens.
    private static let maximumChecks = 1 << 20
    private var workerDrops: [WorkerDropReason: Int] = [:]
    private var pendingWrites = false
    /// The token clock, refreshed by the timer tick.
    private var currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))

    init(index: Int, eventLoop: EventLoop, endpoint: TransportAddress, keyring: RoutingKeyring, relayNetworks: [IPNetwork],
         registry: CallRegistry, metrics: TransceiverMetrics, logger: Logger) {
        self.relayNetworks = relayNetworks
        self.index = index
        self.eventLoop = eventLoop
        self.endpoint = endpoint
        self.keyring = keyring
        self.registry = registry
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "worker"] = "\(index)"
        self.logger = logger
    }

    /// Binds the worker's socket and starts its timer tick.
    func start(bindHost: String, port: Int, receiveBufferBytes: Int) async throws {
        let bootstrap = DatagramBootstrap(group: eventLoop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(clamping: receiveBufferBytes))
            .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(clamping: receiveBufferBytes))
            .channelOption(.datagramVectorReadMessageCount, value: 32)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MediaChannelHandler(worker: self))
                }
            }
        let channel = try await bootstrap.bind(host: bindHost, port: port).get()
        let boundEndpoint: TransportAddress
        if port == 0, case .v4(let host, _) = endpoint, let bound = channel.localAddress?.port {
            boundEndpoint = .v4(host, port: UInt16(clamping: bound))  // a bound port, 1…65535
        } else {
            boundEndpoint = endpoint
        }
        // SO_RCVBUF is capped by net.core.rmem_max (about 200 KiB by default); with CAP_NET_ADMIN
        // the FORCE variants lift the cap. Without it the kernel keeps what it allowed.
        for name in [SO_RCVBUFFORCE, SO_SNDBUFFORCE] {
            try? await channel.setOption(
                ChannelOptions.Types.SocketOption(level: .socket, name: .init(rawValue: name)),
                value: SocketOptionValue(clamping: receiveBufferBytes)).get()
        }
        let granted: Int = (try? await channel.getOption(.socketOption(.so_rcvbuf)).get()).map { Int($0) } ?? 0
        logger.info("media socket bound", metadata: [
            "address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "receive_buffer_bytes": "\(granted)",
        ])
        if granted < receiveBufferBytes {
            logger.warning("the kernel granted a smaller receive buffer than asked; raise net.core.rmem_max",
                           metadata: ["asked": "\(receiveBufferBytes)", "granted": "\(granted)"])
        }
        try await eventLoop.submit {
            self.endpoint = boundEndpoint
            self.channel = channel
            self.tick = self.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(10)) { _ in
                self.runTimers()
            }
        }.get()
    }

    /// The port the socket is bound to (the OS picks one when asked for port 0).
    var boundPort: Int? { channel?.localAddress?.port }

    func stop() async {
        let closed: EventLoopFuture<Void>? = try? await eventLoop.submit { () -> EventLoopFuture<Void>? in
            self.tick?.cancel()
            let now = monotonicNow()
            for (key, _) in self.sessions { self.close(key: key, reason: .shutdown, now: now) }
            self.flush()
            return self.channel?.close()
        }.get()
        try? await closed?.get()
    }

    // MARK: Sessions

    /// Creates a session on this worker (on its event loop).
    func createSession(key: UInt32, parameters: SessionParameters, dtlsContext: any DTLSContext, registry: CallRegistry,
                       agent: AgentTarget = .builtIn(.echo), agentName: String? = nil, session configuration: String = "{}",
                       owner: CallOwner = Credential.anonymous.owner) throws {
        eventLoop.preconditionInEventLoop()
        // Claimed first (atomically, across workers): a call id drawn twice is drawn again.
        guard sessions[key] == nil, registry.insert(parameters.id, .init(worker: index, sessionKey: key, owner: owner)) else {
            throw SessionKeyInUse()
        }
        let registered = parameters.id
        var created = false
        defer { if !created { registry.withdraw(registered) } }
        let now = monotonicNow()
        var parameters = parameters
        parameters.ntpAtInstantZero = currentNTPTime() &- WebRTCSession.ntpDuration(since: .zero, until: now)
        let session = try WebRTCSession(parameters: parameters, dtlsContext: dtlsContext, now: now)
        var sessionLogger = logger
        sessionLogger[metadataKey: "call"] = "\(parameters.id)"
        let entry: Entry
        switch agent {
        case .builtIn(.echo):
            entry = Entry(session: session, echo: EchoAgent(), bridge: nil, logger: sessionLogger, createdAt: now)
        case .builtIn(.parrot):
            let bridge = try AgentBridge(agent: ParrotAgent(), session: session, configuration: configuration, now: now)
            entry = Entry(session: session, echo: nil, bridge: bridge, logger: sessionLogger, createdAt: now)
        case .builtIn(.loopback):
            let bridge = try AgentBridge(agent: LoopbackAgent(), session: session, configuration: configuration, now: now)
            entry = Entry(session: session, echo: nil, bridge: bridge, logger: sessionLogger, createdAt: now)
        case .webSocket(let endpoint):
            entry = Entry(session: session, echo: nil, bridge: nil, logger: sessionLogger, createdAt: now)
            entry.pendingAgent = endpoint
        }
        entry.key = key
        entry.configuration = configuration
        entry.agentName = agentName ?? agent.description
        sessions[key] = entry
        callKeys[parameters.id] = key
        // Registered (at the top) on the worker's loop, where `remove` unregisters it: the two never
        // race; lookups that find it before this point hop onto this loop, so they run after it.
        created = true
        metrics.sessionsCreated.increment()
        metrics.sessionsActive.increment()
        sessionLogger.info("session created", metadata: ["remote_ufrag": "\(parameters.negotiated.remoteUfrag)"])
    }

    func closeSession(key: UInt32, reason: CloseReason) {
        eventLoop.preconditionInEventLoop()
        close(key: key, reason: reason, now: monotonicNow())
        flush()
    }

    /// A snapshot of a session for the signaling API.
    func describeSession(key: UInt32) -> SessionSnapshot? {
        eventLoop.preconditionInEventLoop()
        guard let entry = sessions[key] else { return nil }
        let session = entry.session
        var snapshot = SessionSnapshot(
            id: session.parameters.id, state: entry.lastState, client: session.selectedPath?.description,
            counters: session.counters)
        snapshot.agent = entry.agentName
        snapshot.transport = session.selectedPath.map { $0.relay?.transport == .tcp ? "tcp" : "udp" }
        snapshot.session = JSONValue(parsing: Array(entry.configuration.utf8)) ?? .object([:])
        return snapshot
    }

    var sessionCount: Int { sessions.count }

    /// What a renegotiation needs to know about a session.
    func negotiationState(key: UInt32) -> SessionParameters? {
        eventLoop.preconditionInEventLoop()
        return sessions[key]?.session.parameters
    }

    /// Installs new ICE credentials (ICE restart) and moves the session to its new token's key.
    func restartSession(key: UInt32, newKey: UInt32, localUfrag: String, localPassword: String,
                        remoteUfrag: String, remotePassword: String, renegotiated: NegotiatedSession) throws -> Bool {
        eventLoop.preconditionInEventLoop()
        guard newKey == key || sessions[newKey] == nil else { throw SessionKeyInUse() }
        guard let entry = sessions.removeValue(forKey: key) else { return false }
        entry.session.restartICE(localUfrag: localUfrag, localPassword: localPassword,
                                 remoteUfrag: remoteUfrag, remotePassword: remotePassword, renegotiated: renegotiated)
        sessions[newKey] = entry
        entry.key = newKey
        for client in entry.clients where byClient[client] == key { byClient[client] = newKey }
        for (id, owner) in byCheck where owner.key == key { byCheck[id] = (newKey, owner.sentAt) }
        for (client, owner) in checking where owner.key == key { checking[client] = (newKey, owner.sentAt) }
        registry.rekey(entry.session.parameters.id, sessionKey: newKey)
        callKeys[entry.session.parameters.id] = newKey
        drain(key: newKey, now: monotonicNow())
        flush()
        return true
    }

    // MARK: The sideband

    /// Subscribes a sideband to a call: it hears the current state at once, then every event. False
    /// when the call is gone.
    func addSideband(callID: String, continuation: AsyncStream<SidebandFrame>.Continuation) -> SidebandSubscription {
        eventLoop.preconditionInEventLoop()
        guard let key = callKeys[callID], let entry = sessions[key], !entry.session.isClosed else { return .noSuchCall }
        guard entry.sidebands.count < Self.maximumSidebandsPerCall else { return .full }
        let id = nextSidebandID
        nextSidebandID += 1
        entry.sidebands[id] = (continuation, SidebandBudget())
        entry.bridge?.recordsSentMessages = true
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            self.eventLoop.execute { self.removeSideband(id, callID: callID) }
        }
        publish(.state(callID: callID, state: entry.lastState, reason: nil), to: entry)
        return .added
    }

    private func removeSideband(_ id: Int, callID: String) {
        guard let key = callKeys[callID], let entry = sessions[key] else { return }
        entry.sidebands[id] = nil
        if entry.sidebands.isEmpty { entry.bridge?.recordsSentMessages = false }
    }

    private func publish(_ event: SidebandEvent, to entry: Entry) {
        guard !entry.sidebands.isEmpty else { return }
        var endsCall = false
        if case .state(_, "ended", _) = event { endsCall = true }
        let text = event.text
        for (id, (continuation, budget)) in entry.sidebands {
            var queued = budget.take(text.utf8.count)
            if queued, case .dropped = continuation.yield(SidebandFrame(text: text, endsCall: endsCall, budget: budget)) {
                budget.give(text.utf8.count)
                queued = false
            }
            if !queued {
                // The app's server reads too slowly: it is cut off (and reconnects for the state)
                // rather than missing events unawares or growing memory.
                entry.sidebands[id] = nil
                continuation.finish()
                metrics.sidebandsCutOff.increment()
            }
        }
    }

    enum SendResult { case sent, noSuchCall, noChannel, refused }

    /// A message from the app's server for the client's data channel with that label.
    func sendToClient(callID: String, label: String, binary: Bool, payload: [UInt8]) -> SendResult {
        eventLoop.preconditionInEventLoop()
        guard let key = callKeys[callID], let entry = sessions[key], !entry.session.isClosed else { return .noSuchCall }
        guard let channel = entry.session.openDataChannels.first(where: { $0.value == label })?.key else { return .noChannel }
        let now = monotonicNow()
        let sent = entry.session.sendDataChannelMessage(payload, binary: binary, channel: channel, now: now)
        drain(key: key, now: now)
        flush()
        return sent ? .sent : .refused
    }

    /// New session fields from the app's server: merged, told to the agent and to every sideband.
    func updateSession(callID: String, update: SessionConfiguration) throws(SignalingError) -> Bool {
        eventLoop.preconditionInEventLoop()
        guard let key = callKeys[callID], let entry = sessions[key], !entry.session.isClosed else { return false }
        let current = (JSONValue(parsing: Array(entry.configuration.utf8))?.objectValue).flatMap { try? SessionConfiguration(validating: $0) }
            ?? SessionConfiguration()
        let merged = try current.merging(update)
        let text = merged.json.text
        guard text.utf8.count <= SessionConfiguration.maximumBytes else {
            throw .badRequest("the session would be \(text.utf8.count) bytes; at most \(SessionConfiguration.maximumBytes)",
                              code: "session_too_large")
        }
        entry.configuration = text
        let now = monotonicNow()
        entry.bridge?.updateConfiguration(text, now: now)
        publish(.sessionUpdated(session: text), to: entry)
        drain(key: key, now: now)
        flush()
        return true
    }

    // MARK: External agents

    /// Opens the external agent's connection (the client's first check authenticated).
    private func connectAgent(_ entry: Entry, now: Instant) {
        guard let endpoint = entry.pendingAgent else { return }
        entry.pendingAgent = nil
        let link = WebSocketAgentLink(eventLoop: eventLoop) { [weak self, weak entry] message in
            guard let self, let entry else { return }
            self.agentMessage(message, entry: entry)
        }
        entry.link = link
        entry.agentDeadline = now + Self.agentAcceptTimeout
        let parameters = entry.session.parameters
        let negotiated = parameters.negotiated
        link.connect(to: endpoint, first: AgentWire.sessionStarted(
            callID: parameters.id,
            offer: .init(opusParameters: negotiated.opus.parameters ?? "", dataChannel: negotiated.dataChannelMid != nil),
            session: entry.configuration),
            tls: agentTLS)
        metrics.agentConnections.increment()
    }

    /// How long an external agent has to connect and accept a call.
    static let agentAcceptTimeout: Duration = .seconds(3)
    /// How long a call whose agent failed waits for `oai-events` to tell the client why.
    static let agentFailureNoticeTimeout: Duration = .seconds(5)

    private func agentMessage(_ message: AgentMessage, entry: Entry) {
        let key = entry.key
        guard sessions[key] === entry else { return }
        let now = monotonicNow()
        switch message {
        case .accept(let sampleRate):
            guard entry.bridge == nil, entry.agentFailure == nil, let link = entry.link else { return }
            link.sampleRate = sampleRate
            do {
                let bridge = try AgentBridge(agent: WebSocketVoiceAgent(sampleRate: sampleRate, link: link),
                                             session: entry.session, configuration: entry.configuration, now: now)
                bridge.recordsSentMessages = !entry.sidebands.isEmpty
                entry.bridge = bridge
                entry.agentDeadline = nil
                bridge.catchUp(now: now)
                entry.logger.info("agent accepted", metadata: ["sample_rate": "\(sampleRate.rawValue)"])
            } catch {
                agentFailed(entry, reason: "agent_error", detail: "\(error)", now: now)
            }
        case .audio(let frame):
            guard let output = (entry.bridge?.agent as? WebSocketVoiceAgent)?.output else { return }
            output.sendAudio(frame)
            if !output.wantsMore, !entry.linkPaused {
                entry.linkPaused = true
                entry.link?.setReading(false)
            }
        case .dataChannelSend(let label, let binary, let payload):
            (entry.bridge?.agent as? WebSocketVoiceAgent)?.output?.sendDataChannelMessage(label: label, binary: binary, payload: payload)
        case .clearAudio:
            (entry.bridge?.agent as? WebSocketVoiceAgent)?.output?.clearAudio()
        case .hangUp(let reason):
            guard entry.agentFailure == nil else { break }
            entry.session.close(.agent(reason), now: now)
        case .failed(let detail):
            agentFailed(entry, reason: entry.bridge == nil ? "agent_unavailable" : "agent_disconnected", detail: detail, now: now)
        }
        drain(key: key, now: now)
        flush()
    }

    /// The agent is gone: tell the client on `oai-events` (now, or as soon as the channel opens, for
    /// a few seconds at most), then end the call with the reason.
    private func agentFailed(_ entry: Entry, reason: String, detail: String, now: Instant) {
        guard entry.agentFailure == nil, !entry.session.isClosed else { return }
        metrics.agentFailure(reason)
        entry.logger.warning("agent failed", metadata: ["reason": "\(reason)", "detail": "\(detail)"])
        entry.agentFailure = reason
        entry.agentFailureDetail = detail
        entry.agentFailureDeadline = now + Self.agentFailureNoticeTimeout
        entry.link?.close()
        endFailedCallIfNoticeable(entry, now: now)
    }

    /// Ends a call whose agent failed once the client was told why: the notice on `oai-events` is
    /// acknowledged (SCTP), or could not be sent within the wait.
    private func endFailedCallIfNoticeable(_ entry: Entry, now: Instant) {
        guard let reason = entry.agentFailure, !entry.session.isClosed else { return }
        if let sentAt = entry.agentNoticeSentAt {
            if entry.session.dataChannelBufferedAmount == 0 || now - sentAt >= .seconds(2) {
                entry.session.close(.agent(reason), now: now)
            }
            return
        }
        if let channel = entry.session.openDataChannels.first(where: { $0.value == AgentBridge.eventsLabel })?.key {
            let notice = AgentWire.errorEvent(type: reason, message: entry.agentFailureDetail ?? reason)
            if entry.session.sendDataChannelMessage(Array(notice.utf8), binary: false, channel: channel, now: now) {
                entry.agentNoticeSentAt = now
                return
            }
        }
        let noChannelComing = entry.session.parameters.negotiated.dataChannelMid == nil && entry.session.state == .connected
        if noChannelComing || now >= entry.agentFailureDeadline ?? now {
            entry.session.close(.agent(reason), now: now)
        }
    }

    private func close(key: UInt32, reason: CloseReason, now: Instant) {
        guard let entry = sessions[key] else { return }
        entry.session.close(reason, now: now)
        drain(key: key, now: now)
    }

    // MARK: Datagrams

    func receive(_ buffer: ByteBuffer, from source: SocketAddress) {
        guard let sourceAddress = TransportAddress(source) else { return }
        buffer.withUnsafeReadableBytes { bytes in
            var datagram = bytes
            var path = PeerPath(client: sourceAddress)
            if TunnelHeader.isTunnelDatagram(bytes) {
                guard relayNetworks.contains(where: { $0.contains(sourceAddress) }) else { return dropped(.untrustedTunnel) }
                guard let (header, length) = try? TunnelHeader.decode(bytes), header.direction == .fromClient else {
                    return dropped(.malformedTunnel)
                }
                path = PeerPath(client: header.client, relay: RelayHop(address: sourceAddress, ingressID: header.ingressID,
                                                                          transport: header.transport))
                datagram = UnsafeRawBufferPointer(rebasing: bytes[length...])
            }
            route(datagram, from: path)
        }
    }

    private func route(_ datagram: UnsafeRawBufferPointer, from path: PeerPath) {
        let now = monotonicNow()
        let flow = FlowAddress(path)
        var key = byClient[flow]
        if PacketKind.classify(datagram) == .stun, let message = try? STUNMessage.parse(datagram) {
            if let ufrag = message.usernameRecipientPart(in: datagram) {
                // A check names its session in its USERNAME: the routing token's nonce is the key.
                do {
                    let token = try keyring.open(UnsafeRawBufferPointer(rebasing: datagram[ufrag]), currentHour: currentHour)
                    guard token.worker == endpoint else { return dropped(.badToken) }
                    key = token.nonce
                } catch .unknownKey, .expired {
                    // A live call whose key was retired (or whose token aged out) keeps its checks
                    // from the address it validated: the session authenticates them itself. New
                    // flows need a token the ring opens.
                    guard key != nil else { return dropped(.badToken) }
                } catch {
                    return dropped(.badToken)
                }
            } else if message.type == .bindingSuccess || message.type == .bindingError,
                      let owner = byCheck[message.transactionID] {
                // An answer to one of our checks.
                key = owner.key
            }
        }
        if key == nil, PacketKind.classify(datagram) == .dtls, let pending = checking[flow] { key = pending.key }
        guard let key else { return dropped(.noRoute) }
        deliver(datagram, from: path, key: key, now: now)
    }

    private func deliver(_ datagram: UnsafeRawBufferPointer, from path: PeerPath, key: UInt32, now: Instant) {
        guard let entry = sessions[key] else { return dropped(.unknownSession) }
        entry.session.receive(datagram, from: path, now: now)
        // Every authenticated check (re)claims its address for its session: a stale mapping, or one
        // an attacker with a call of their own set by spoofing the address, lasts until the real
        // client's next check. Each session keeps at most a few addresses.
        let flow = FlowAddress(path)
        if entry.session.hasConsent(from: path), byClient[flow] != key {
            byClient[flow] = key
            entry.clients.insert(flow)
            if entry.clients.count > 8 {
                for stale in entry.clients where !entry.session.hasConsent(from: PeerPath(client: stale.client)) {
                    entry.clients.remove(stale)
                    if byClient[stale] == key { byClient[stale] = nil }
                }
            }
        }
        drain(key: key, now: now)
    }

    /// Runs the session's events through its agent, then sends what the session queued.
    private func drain(key: UInt32, now: Instant) {
        guard let entry = sessions[key] else { return }
        let session = entry.session
        var events = session.takeEvents()
        while !events.isEmpty {
            for event in events {
                switch event {
                case .audio:
                    break
                case .clientAuthenticated:
                    connectAgent(entry, now: now)
                case .iceConnected(let path):
                    entry.logger.info("ICE connected", metadata: ["client": "\(path)"])
                    setState("connecting", of: entry)
                case .pathChanged(let from, let to):
                    entry.logger.info("client moved", metadata: ["from": "\(from)", "to": "\(to)"])
                case .dtlsConnected(let profile):
                    metrics.dtlsHandshakes.increment()
                    metrics.setupSeconds.recordNanoseconds((now - entry.createdAt).nanoseconds)
                    entry.logger.info("DTLS connected", metadata: ["srtp": "\(profile)"])
                    setState("connected", of: entry)
                case .dataChannelOpened(let id, let label):
                    entry.logger.info("data channel open", metadata: ["channel": "\(id)", "label": "\(label)"])
                    if entry.agentFailure != nil { endFailedCallIfNoticeable(entry, now: now) }
                case .dataChannelClosed(let id, let label):
                    entry.logger.info("data channel closed", metadata: ["channel": "\(id)", "label": "\(label)"])
                case .dataChannelTransportClosed(let reason):
                    entry.logger.info("data channels ended", metadata: ["reason": "\(reason)"])
                case .dataChannelMessage(_, let label, let binary, let payload):
                    publish(.clientMessage(label: label, binary: binary, payload: payload), to: entry)
                case .iceRestarted:
                    entry.logger.info("ICE restarted", metadata: ["remote_ufrag": "\(session.parameters.negotiated.remoteUfrag)"])
                case .closed(let reason):
                    entry.logger.info("session closed", metadata: ["reason": "\(reason)"])
                    setState("ended", of: entry, reason: reason.description)
                    // Idempotent: the agent adapter closes it too once its session had started.
                    entry.link?.close(after: AgentWire.sessionEnded(reason: reason.description))
                    if let dropped = entry.link?.audioFramesDropped, dropped > 0 {
                        metrics.agentAudioDropped.increment(by: dropped)
                        entry.logger.warning("agent did not keep up", metadata: ["audio_frames_dropped": "\(dropped)"])
                    }
                }
                entry.echo?.handle(event, session: session, now: now)
                entry.bridge?.handle(event, now: now)
            }
            events = session.takeEvents()
        }
        if let bridge = entry.bridge, !entry.sidebands.isEmpty {
            for message in bridge.takeSentMessages() {
                publish(.agentMessage(label: message.label, binary: message.binary, payload: message.payload), to: entry)
            }
        }
        for transmit in session.takeTransmits() {
            if let check = transmit.check, byCheck.count < Self.maximumChecks {
                byCheck[check] = (key, now)
                // The first session to check an address keeps it (one spoofing the address later cannot take its DTLS).
                let flow = FlowAddress(transmit.path)
                if byClient[flow] == nil, checking[flow].map({ $0.key == key }) ?? true {
                    checking[flow] = (key, now)
                }
            }
            send(transmit)
        }
        if session.isClosed { remove(key: key) }
    }

    private func setState(_ state: String, of entry: Entry, reason: String? = nil) {
        entry.lastState = state
        publish(.state(callID: entry.session.parameters.id, state: state, reason: reason), to: entry)
    }

    private func remove(key: UInt32) {
        guard let entry = sessions.removeValue(forKey: key) else { return }
        if callKeys[entry.session.parameters.id] == key { callKeys[entry.session.parameters.id] = nil }
        for sideband in entry.sidebands.values { sideband.continuation.finish() }
        entry.sidebands.removeAll()
        for client in entry.clients where byClient[client] == key { byClient[client] = nil }
        registry.remove(entry.session.parameters.id)
        report(entry.session.counters, since: entry.reported)
        metrics.sessionsActive.decrement()
        if case .closed(let reason) = entry.session.state { metrics.sessionClosed(reason) }
    }

    private func send(_ transmit: Transmit) {
        guard let channel else { return }
        let header = transmit.path.relay.map {
            TunnelHeader(transport: $0.transport, direction: .toClient, ingressID: $0.ingressID, client: transmit.path.client)
        }
        var buffer = channel.allocator.buffer(capacity: (header?.encodedLength ?? 0) + transmit.bytes.count)
        if let header {
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: header.encodedLength) { bytes in
                (try? header.encode(into: bytes)) ?? 0
            }
        }
        buffer.writeBytes(transmit.bytes)
        let destination = transmit.path.relay?.address ?? transmit.path.client
        channel.write(AddressedEnvelope(remoteAddress: destination.socketAddress, data: buffer), promise: nil)
        pendingWrites = true
    }

    func flush() {
        guard pendingWrites else { return }
        pendingWrites = false
        channel?.flush()
    }

    private func dropped(_ reason: WorkerDropReason) {
        workerDrops[reason, default: 0] += 1
    }

    // MARK: Timers

    private func runTimers() {
        let now = monotonicNow()
        currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        for (key, entry) in sessions {
            var due = false
            if let wake = entry.session.nextWakeup, wake <= now {
                entry.session.handleTimeout(now: now)
                due = true
            }
            if let bridge = entry.bridge, let wake = bridge.nextWakeup, wake <= now {
                bridge.tick(now: now)
                if entry.linkPaused, bridge.outgoing.wantsMore {
                    entry.linkPaused = false
                    entry.link?.setReading(true)
                }
                due = true
            }
            if let deadline = entry.agentDeadline, deadline <= now {
                entry.agentDeadline = nil
                agentFailed(entry, reason: "agent_unavailable", detail: "the agent did not accept the session in time", now: now)
                due = true
            }
            if entry.agentFailure != nil {
                endFailedCallIfNoticeable(entry, now: now)
                due = true
            }
            if due { drain(key: key, now: now) }
        }
        flush()
        reportMetrics()
    }

    private var lastMetricsReport = monotonicNow()

    /// Adds what the sessions counted since the last report to the shared metrics, once a second.
    private func reportMetrics() {
        let now = monotonicNow()
        guard now - lastMetricsReport >= .seconds(1) else { return }
        lastMetricsReport = now
        // Once a second: checks whose answer would no longer count (or whose session ended) are forgotten.
        if !byCheck.isEmpty {
            byCheck = byCheck.filter { now - $0.value.sentAt < Self.checkAnswerLifetime && sessions[$0.value.key] != nil }
        }
        if !checking.isEmpty {
            checking = checking.filter { now - $0.value.sentAt < Self.earlyDTLSLifetime && sessions[$0.value.key] != nil }
        }
        for entry in sessions.values {
            report(entry.session.counters, since: entry.reported)
            entry.reported = entry.session.counters
        }
        for (reason, count) in workerDrops where count > 0 { metrics.workerDrops[reason]?.increment(by: count) }
        workerDrops.removeAll(keepingCapacity: true)
    }

    private func report(_ counters: SessionCounters, since previous: SessionCounters) {
        func add(_ counter: Counter, _ value: Int, _ old: Int) { if value > old { counter.increment(by: value - old) } }
        add(metrics.datagramsReceived, counters.datagramsReceived, previous.datagramsReceived)
        add(metrics.datagramsSent, counters.datagramsSent, previous.datagramsSent)
        add(metrics.rtpReceived, counters.rtpReceived, previous.rtpReceived)
        add(metrics.rtpSent, counters.rtpSent, previous.rtpSent)
        for (reason, count) in counters.drops {
            if let counter = metrics.drops[reason] { add(counter, count, previous.drops[reason] ?? 0) }
        }
    }
}

/// A new session's routing nonce is already taken on its worker (1 in 2³² per live session): draw again.
struct SessionKeyInUse: Error {}

/// What the signaling API shows about a call.
struct SessionSnapshot: Sendable, Codable {
    var id: String
    var state: String
    /// The agent the call talks to, and its session configuration.
    var agent = ""
    /// Left out for a browser's client secret: the app's server may have sealed instructions or
    /// credentials for the agent into it that the browser must not read.
    var session: JSONValue? = .object([:])
    var client: String?
    /// `udp`, or `tcp` for an ICE-TCP client (the relay's tunnel header says which).
    var transport: String?
    var rtpReceived: Int
    var rtpSent: Int
    var checksAnswered: Int
    var iceRestarts: Int
    var dataChannelMessagesReceived: Int
    var dataChannelMessagesSent: Int
    var dataChannelDrops: [String: Int]
    var dataChannelTransportClosed: String?
    var dataChannelStart: String?
    /// `sped` when the client's ClientHello rode its first check (DTLS in STUN), else `direct`.
    var dtlsStart: String?
    /// "DTLS 1.3" or "DTLS 1.2", and the library ("boringssl" or "openssl").
    var dtlsVersion: String?
    var dtlsLibrary: String?
    var dtlsInSTUNReceived: Int
    var dtlsInSTUNSent: Int
    var roundTripTimeMilliseconds: Double?
    /// The round trip Parley's own ICE checks measured (it seeds DTLS's and SCTP's timers).
    var iceRoundTripTimeMilliseconds: Double?
    var drops: [String: Int]

    init(id: String, state: String, client: String?, counters: SessionCounters) {
        self.id = id
        self.state = state
        self.client = client
        rtpReceived = counters.rtpReceived
        rtpSent = counters.rtpSent
        checksAnswered = counters.checksAnswered
        iceRestarts = counters.iceRestarts
        dataChannelMessagesReceived = counters.dataChannelMessagesReceived
        dataChannelMessagesSent = counters.dataChannelMessagesSent
        dataChannelDrops = counters.dataChannelDrops
        dataChannelTransportClosed = counters.dataChannelTransportClosed
        dataChannelStart = counters.dataChannelStart
        dtlsStart = counters.dtlsStart
        dtlsVersion = counters.dtlsVersion
        dtlsLibrary = counters.dtlsLibrary
        dtlsInSTUNReceived = counters.dtlsInSTUNReceived
        dtlsInSTUNSent = counters.dtlsInSTUNSent
        roundTripTimeMilliseconds = counters.roundTripTime.map { Double($0.nanoseconds) / 1e6 }
        iceRoundTripTimeMilliseconds = counters.iceRoundTripTime.map { Double($0.nanoseconds) / 1e6 }
        drops = Dictionary(uniqueKeysWithValues: counters.drops.map { ($0.key.rawValue, $0.value) })
    }
}

/// Hands each datagram batch to the worker and flushes its writes once per batch.
final class MediaChannelHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let worker: MediaWorker

    init(worker: MediaWorker) { self.worker = worker }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        worker.receive(envelope.data, from: envelope.remoteAddress)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        worker.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP port unreachable and the like surface here on a UDP socket; they end nothing.
    }
}

/// A client's flow as the demultiplexer knows it: its address, and whether it arrived over TCP.
/// Behind a carrier-grade NAT one public address and port can be one user's UDP mapping and
/// another's ICE-TCP connection, so the address alone does not name one flow.
struct FlowAddress: Hashable {
    var client: TransportAddress
    var tcp: Bool

    init(_ path: PeerPath) {
        client = path.client
        tcp = path.relay?.transport == .tcp
    }
}
