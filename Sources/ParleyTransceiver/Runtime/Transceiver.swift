import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ParleyIO
import ParleyDTLSLibrary
import ParleyMedia
import ParleySession
import ParleySignaling
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Why signaling could not create a call; each maps to an HTTP status with the reason as text.
public enum CallSetupError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformedOffer(String)
    case unsupportedOffer(String)
    /// `?dcid=` names no usable stream.
    case invalidChannel(String)
    case atCapacity
    case internalError(String)

    public var description: String {
        switch self {
        case .malformedOffer(let reason): "malformed SDP offer: \(reason)"
        case .unsupportedOffer(let reason): "unsupported SDP offer: \(reason)"
        case .invalidChannel(let reason): reason
        case .atCapacity: "this transceiver is at its session limit"
        case .internalError(let reason): "internal error: \(reason)"
        }
    }
}

extension CallSetupError {
    /// The error as the signaling API answers it.
    var signalingError: SignalingError {
        switch self {
        case .malformedOffer: .badRequest(description, code: "invalid_offer")
        case .unsupportedOffer: .badRequest(description, code: "unsupported_offer")
        case .invalidChannel: .badRequest(description, code: "invalid_dcid")
        case .atCapacity: .atCapacity
        case .internalError: SignalingError(statusCode: 500, type: "server_error", code: "internal_error", message: description)
        }
    }
}

/// A transceiver: media workers (one event loop and one UDP port each) and the calls they own.
/// Signaling creates and ends calls through it from any thread.
public final class Transceiver: Sendable {
    public let configuration: TransceiverConfiguration
    public let certificate: DTLSCertificate
    let dtlsContext: any DTLSContext
    let registry: CallRegistry
    let metrics: TransceiverMetrics
    private let group: MultiThreadedEventLoopGroup
    private let workers: [MediaWorker]
    private let logger: Logger
    private let nextWorker = AtomicCounter()
    /// The routing keys (reloaded on SIGHUP): new tokens are sealed with the current one.
    private let keys: Mutex<RoutingKeyring>
    /// API keys and client secrets (reloaded with the keys).
    private let credentials: Mutex<Authenticator>
    /// Requests about calls other transceivers of the cluster own go there.
    let forwarder: CallForwarder
    /// The transceivers' own keys (the client-secret keyring, else the routing keyring), which
    /// relays do not hold: call ids and forwarded requests are sealed with them.
    private let transceiverKeys: Mutex<(ring: RoutingKeyring, forwards: ForwardedRequest)>

    public init(configuration: TransceiverConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        keys = Mutex(configuration.keyring)
        let ownRing = configuration.clientSecretKeyring ?? configuration.keyring
        transceiverKeys = Mutex((ownRing, ForwardedRequest(keyring: ownRing)))
        credentials = Mutex(Authenticator(
            apiKeys: try APIKeys(configuration.apiKeys), secrets: ClientSecrets(keyring: configuration.clientSecretKeyring ?? configuration.keyring),
            requireCredentials: configuration.requireAuthentication))
        certificate = try DTLSCertificate(commonName: "parley")
        dtlsContext = try configuration.dtlsLibrary.makeContext(certificate: certificate, configuration: configuration.dtls)
        let registry = CallRegistry(limits: configuration.admission)
        let metrics = TransceiverMetrics()
        self.registry = registry
        self.metrics = metrics
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.workers))
        let loops = Array(group.makeIterator())
        let host = configuration.workerEndpointHost ?? IPv4Address(configuration.mediaHost) ?? IPv4Address(127, 0, 0, 1)
        workers = loops.enumerated().map { index, loop in
            MediaWorker(index: index, eventLoop: loop,
                        endpoint: .v4(host, port: configuration.mediaPort == 0 ? 0 : UInt16(clamping: configuration.mediaPort + index)),
                        keyring: configuration.keyring, relayNetworks: configuration.relayNetworks,
                        registry: registry, metrics: metrics,
                        logger: logger)
        }
        if case .webSocket(let endpoint) = configuration.agent, endpoint.tls {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let file = configuration.agentTrustRootsFile { tls.trustRoots = .file(file) }
            let context = try NIOSSLContext(configuration: tls)
            for worker in workers { worker.agentTLS = context }
        }
        // Last: its HTTP client must be shut down once made, and nothing above may throw after it.
        forwarder = CallForwarder(logger: logger, metrics: metrics)
    }

    /// Binds every worker's socket.
    public func start() async throws {
        for worker in workers {
            try await worker.start(bindHost: configuration.mediaHost,
                                   port: configuration.mediaPort == 0 ? 0 : configuration.mediaPort + worker.index,
                                   receiveBufferBytes: configuration.socketBufferBytes)
        }
        logger.info("media workers listening", metadata: [
            "workers": "\(workers.count)", "address": "\(configuration.mediaHost):\(configuration.mediaPort)",
            "fingerprint": "\(certificate.fingerprint)",
        ])
    }

    /// Ends every call (DTLS close_notify, RTCP BYE) and stops the workers.
    public func shutdown() async {
        await forwarder.shutdown()
        for worker in workers { await worker.stop() }
        try? await group.shutdownGracefully()
    }

    public var activeCalls: Int { registry.count }

    /// Where a request about call `id` is answered: here, by the transceiver its id names, or
    /// nowhere. `forwarded`: the request is already another transceiver's forward.
    public func location(ofCall id: String, forwarded: Bool) -> CallLocation {
        CallLocation.of(callID: id, heldHere: registry.lookup(id) != nil, forwarded: forwarded, keyring: transceiverKeys.withLock { $0.ring },
                        clusterID: configuration.clusterID, ownEndpoint: configuration.signalingEndpoint,
                        peers: configuration.trustedProxies)
    }

    /// Ends the sidebands this process forwards for other transceivers' calls (1012: connect again).
    public func closeForwardedSidebands() async { await forwarder.closeSidebands() }

    /// Seals what the owner of a call needs to answer a forwarded request (`ForwardedRequest`).
    func sealForward(credential: Credential, method: String, target: String, client: TransportAddress,
                     region: String?) -> (text: String, nonce: String) {
        transceiverKeys.withLock { $0.forwards }.seal(credential: credential, method: method, target: target, client: client,
                                                      region: region, unixSeconds: Int64(time(nil)))
    }

    /// Opens a forward another transceiver sealed for this request. Its credential must be one this
    /// process accepts too (a key removed here, or anonymity where credentials are required, is not).
    func openForward(_ text: String, method: String, target: String) throws(SignalingError) -> ForwardedRequest.Claims {
        let claims = try transceiverKeys.withLock { $0.forwards }.open(text, method: method, target: target, unixSeconds: Int64(time(nil)))
        let accepted = credentials.withLock { auth -> Bool in
            switch claims.credential {
            case .apiKey(let id)?: auth.apiKeys.contains(id: id) || !auth.requireCredentials
            case .clientSecret(let secret)?: auth.apiKeys.contains(id: secret.owner) || !auth.requireCredentials
            case .anonymous?: !auth.requireCredentials
            case nil: false
            }
        }
        guard accepted else { throw .invalidForward }
        return claims
    }
    /// Live calls and offers being answered: a drain ends only when both are gone.
    public var callsInProgress: Int { registry.liveOrReserved }

    /// Creates a call from an SDP offer for `credential`, with the session it resolved to; returns
    /// its id and the SDP answer. The call's place is reserved first (limits, session cap, drain).
    /// `relays`: the addresses the answer advertises, most preferred first (the relays nearest the
    /// client, then others for failover); nil: the configured `advertisedAddresses`.
    /// `eventsChannel`: the client opened `oai-events` as a negotiated channel on this stream (`?dcid=`).
    public func createCall(offer bytes: [UInt8], session: SessionConfiguration = SessionConfiguration(),
                           credential: Credential = .anonymous, relays: [TransportAddress]? = nil,
                           eventsChannel: UInt16? = nil) async throws(SignalingError) -> (id: String, answer: String) {
        let offer: SessionDescription
        do { offer = try SessionDescription(parsing: bytes) } catch { throw CallSetupError.malformedOffer(error.description).signalingError }
        guard let agent = configuration.agent(named: session.agent) else {
            throw .badRequest("unknown agent \(session.agent ?? "")", code: "unknown_agent")
        }
        let owner = credential.owner
        try registry.reserve(keyID: owner.keyID, now: monotonicNow())
        do {
            return try await makeCall(offer: offer, agent: agent, session: session, owner: owner, relays: relays,
                                      eventsChannel: eventsChannel)
        } catch {
            registry.cancel(keyID: owner.keyID)
            throw error.signalingError
        }
    }

    private func makeCall(offer: SessionDescription, agent: AgentTarget, session: SessionConfiguration,
                          owner: CallOwner, relays: [TransportAddress]?,
                          eventsChannel: UInt16?) async throws(CallSetupError) -> (id: String, answer: String) {
        var generator = SystemRandomNumberGenerator()
        let worker = workers[nextWorker.next() % workers.count]
        let password = ICECredentials.randomString(length: 24, using: &generator)
        let ssrc = UInt32.random(in: 1...UInt32.max, using: &generator)
        let candidates = advertisedCandidates(for: worker, relays: relays)
        let dtlsContext = self.dtlsContext
        let issued = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        let keyring = keys.withLock { $0 }
        let sessionText = session.json.text
        let sctpInit = SNAPInits.draw(using: &generator)

        // The token's nonce keys the session on its worker, and the call id must be unique in the
        // process: on the rare collision of either, draw both again.
        for _ in 0..<4 {
            let callID = CallID.make(keyring: transceiverKeys.withLock { $0.ring }, clusterID: configuration.clusterID,
                                     owner: configuration.signalingEndpoint, issuedHour: issued, using: &generator)
            let token = RoutingToken.random(keyID: keyring.currentKeyID, clusterID: configuration.clusterID,
                                            worker: worker.endpoint, issuedHour: issued, using: &generator)
            let ufrag = keyring.seal(token)
            let negotiated: NegotiatedSession
            do {
                negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
                    iceUfrag: ufrag, icePassword: password, fingerprint: certificate.fingerprint, candidates: candidates,
                    sessionID: UInt64.random(in: 1...(UInt64.max >> 1), using: &generator), audioSSRC: ssrc, cname: "parley",
                    sctpInit: sctpInit))
            } catch {
                throw .unsupportedOffer(error.description)
            }
            var parameters = SessionParameters(id: callID, localUfrag: ufrag, localPassword: password, negotiated: negotiated,
                                               localAudioSSRC: ssrc, cname: "parley")
            if let remote = negotiated.remoteSCTPInit, let local = negotiated.localSCTPInit {
                do { parameters.snap = try SNAPInits(local: local, remote: remote) } catch { throw .unsupportedOffer(error.description) }
            }
            if let eventsChannel {
                guard negotiated.dataChannelMid != nil else { throw .invalidChannel("dcid names a data channel, and the offer has none") }
                // Under SNAP the client's INIT says its streams: a channel must fit both ways.
                if let peer = parameters.snap?.remote.initiation,
                   eventsChannel >= min(peer.inboundStreams, peer.outboundStreams, SNAPInits.configuration.streams) {
                    throw .invalidChannel("dcid \(eventsChannel) is beyond the streams the offer's a=sctp-init has")
                }
                parameters.negotiatedEventsChannel = eventsChannel
            }
            parameters.timeouts = configuration.timeouts
            let sessionParameters = parameters
            do {
                try await worker.eventLoop.submit {
                    try worker.createSession(key: token.nonce, parameters: sessionParameters, dtlsContext: dtlsContext,
                                             registry: self.registry, agent: agent, agentName: session.agent,
                                             session: sessionText, owner: owner)
                }.get()
            } catch is SessionKeyInUse {
                continue
            } catch {
                throw .internalError("\(error)")
            }
            return (callID, negotiated.answer.text)
        }
        throw .internalError("no free session key")
    }

    /// Answers a new offer for an existing call. New ICE credentials in the offer restart ICE
    /// (RFC 8445 §9) on the same DTLS association: the call gets a new token ufrag and password.
    /// The client's certificate must not change. Nil when no such call exists.
    public func renegotiateCall(id: String, offer bytes: [UInt8], credential: Credential = .anonymous,
                                relays: [TransportAddress]? = nil) async throws(CallSetupError) -> String? {
        guard let entry = registry.lookup(id), credential.mayAccess(entry.owner) else { return nil }
        let offer: SessionDescription
        do { offer = try SessionDescription(parsing: bytes) } catch { throw .malformedOffer(error.description) }
        let worker = workers[entry.worker]
        guard let current = try? await worker.eventLoop.submit({ worker.negotiationState(key: entry.sessionKey) }).get() else {
            return nil
        }
        var generator = SystemRandomNumberGenerator()
        let candidates = advertisedCandidates(for: worker, relays: relays)
        let issued = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        let keyring = keys.withLock { $0 }
        for _ in 0..<4 {
            let token = RoutingToken.random(keyID: keyring.currentKeyID, clusterID: configuration.clusterID,
                                            worker: worker.endpoint, issuedHour: issued, using: &generator)
            let probe = try Self.negotiate(offer, ufrag: current.localUfrag, password: current.localPassword,
                                           certificate: certificate, candidates: candidates, ssrc: current.localAudioSSRC,
                                           sctpInit: current.negotiated.localSCTPInit)
            guard probe.remoteFingerprints.contains(where: current.negotiated.remoteFingerprints.contains) else {
                throw .unsupportedOffer("a new offer for a call must keep its DTLS certificate")
            }
            // SNAP: one SCTP association per DTLS association, so a re-offer repeats its INIT (the
            // draft makes a changed or missing one an error). A call without SNAP ignores a late one.
            if let started = current.snap {
                guard let repeated = probe.remoteSCTPInit, (try? SNAPInits.decode(repeated)) == started.remote else {
                    throw .unsupportedOffer("a new offer for a call must repeat its a=sctp-init (one SCTP association per call)")
                }
            }
            // The same ICE credentials: nothing to restart, the answer repeats ours.
            if probe.remoteUfrag == current.negotiated.remoteUfrag { return probe.answer.text }

            let ufrag = keyring.seal(token)
            let password = ICECredentials.randomString(length: 24, using: &generator)
            let negotiated = try Self.negotiate(offer, ufrag: ufrag, password: password, certificate: certificate,
                                                candidates: candidates, ssrc: current.localAudioSSRC,
                                                sctpInit: current.negotiated.localSCTPInit)
            do {
                let restarted = try await worker.eventLoop.submit {
                    try worker.restartSession(key: entry.sessionKey, newKey: token.nonce, localUfrag: ufrag, localPassword: password,
                                              remoteUfrag: negotiated.remoteUfrag, remotePassword: negotiated.remotePassword,
                                              renegotiated: negotiated)
                }.get()
                guard restarted else { return nil }
            } catch is SessionKeyInUse {
                continue
            } catch {
                throw .internalError("\(error)")
            }
            return negotiated.answer.text
        }
        throw .internalError("no free session key")
    }

    private static func negotiate(
        _ offer: SessionDescription, ufrag: String, password: String, certificate: DTLSCertificate,
        candidates: [ICECandidate], ssrc: UInt32, sctpInit: String?
    ) throws(CallSetupError) -> NegotiatedSession {
        var generator = SystemRandomNumberGenerator()
        do {
            return try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
                iceUfrag: ufrag, icePassword: password, fingerprint: certificate.fingerprint, candidates: candidates,
                sessionID: UInt64.random(in: 1...(UInt64.max >> 1), using: &generator), audioSSRC: ssrc, cname: "parley",
                sctpInit: sctpInit))
        } catch {
            throw .unsupportedOffer(error.description)
        }
    }

    /// Ends a call; false when no such call exists (any more) or `credential` may not touch it.
    public func endCall(id: String, reason: CloseReason = .hangup, credential: Credential = .anonymous) async -> Bool {
        guard let entry = registry.lookup(id), credential.mayAccess(entry.owner) else { return false }
        let worker = workers[entry.worker]
        // The worker unregisters the call when its session closes.
        try? await worker.eventLoop.submit { worker.closeSession(key: entry.sessionKey, reason: reason) }.get()
        return true
    }

    /// A call's state and counters, or nil when no such call exists.
    func describeCall(id: String, credential: Credential = .anonymous) async -> SessionSnapshot? {
        guard let entry = registry.lookup(id), credential.mayAccess(entry.owner) else { return nil }
        let worker = workers[entry.worker]
        guard var snapshot = try? await worker.eventLoop.submit({ worker.describeSession(key: entry.sessionKey) }).get() else {
            return nil
        }
        if !credential.isAPIKey { snapshot.session = nil }
        return snapshot
    }

    // MARK: The sideband

    /// The events of a call `credential` owns (an API key's), from its current state on; nil when
    /// there is no such call for it. The stream ends when the call does, or when the reader falls
    /// more than `MediaWorker.sidebandBacklog` events (or `SidebandBudget.limit` bytes) behind.
    /// A call takes at most `MediaWorker.maximumSidebandsPerCall` at once (429 past it).
    public func openSideband(callID: String, credential: Credential) async throws(SignalingError) -> AsyncStream<SidebandFrame>? {
        guard let entry = registry.lookup(callID), credential.mayAccess(entry.owner) else { return nil }
        let worker = workers[entry.worker]
        let (stream, continuation) = AsyncStream<SidebandFrame>.makeStream(bufferingPolicy: .bufferingOldest(MediaWorker.sidebandBacklog))
        let subscribed = try? await worker.eventLoop.submit {
            worker.addSideband(callID: callID, continuation: continuation)
        }.get()
        switch subscribed {
        case .added?:
            return stream
        case .full?:
            continuation.finish()
            throw .rateLimited("the call already has \(MediaWorker.maximumSidebandsPerCall) sidebands open: close one first",
                               retryAfterSeconds: 1)
        case .noSuchCall?, nil:
            continuation.finish()
            return nil
        }
    }

    /// Carries out a sideband command for a call; false when the call is gone.
    public func sidebandCommand(_ command: SidebandCommand, callID: String, credential: Credential) async throws(SignalingError) -> Bool {
        guard let entry = registry.lookup(callID), credential.mayAccess(entry.owner) else { return false }
        let worker = workers[entry.worker]
        switch command {
        case .hangUp(let reason):
            return await endCall(id: callID, reason: .agent(reason), credential: credential)
        case .send(let label, let binary, let payload):
            let result = try? await worker.eventLoop.submit {
                worker.sendToClient(callID: callID, label: label, binary: binary, payload: payload)
            }.get()
            switch result {
            case .sent?: return true
            case .noSuchCall?, nil: return false
            case .noChannel?: throw .badRequest("the client has no open data channel labelled \(label)", code: "no_channel")
            case .refused?: throw .badRequest("the message could not be queued (too large, or the channel's buffer is full)",
                                              code: "send_refused")
            }
        case .updateSession(let update):
            let result = try? await worker.eventLoop.submit { () -> Result<Bool, SignalingError> in
                Result { () throws(SignalingError) in try worker.updateSession(callID: callID, update: update) }
            }.get()
            switch result {
            case .success(let found)?: return found
            case .failure(let error)?: throw error
            case nil: return false
            }
        }
    }

    // MARK: Credentials

    /// Who a request's `Authorization` header says it is from.
    public func authenticate(authorization: String?) throws(SignalingError) -> Credential {
        try credentials.withLock { (auth: inout Authenticator) throws(SignalingError) in
            try auth.authenticate(authorization: authorization, unixSeconds: Int64(time(nil)))
        }
    }

    /// Mints a client secret for an API key (docs/api.md): the session it fixes (its agent must be
    /// one this transceiver has) and how long it works.
    public func mintClientSecret(for credential: Credential, session: SessionConfiguration,
                                 lifetimeSeconds: Int64) throws(SignalingError) -> MintedClientSecret {
        guard credential.isAPIKey else {
            throw .forbidden("a client secret cannot mint client secrets: the app's server mints them with its API key",
                             code: "api_key_required")
        }
        guard ClientSecrets.lifetimes.contains(lifetimeSeconds) else {
            throw .badRequest("expires_after.seconds must be \(ClientSecrets.lifetimes.lowerBound)–\(ClientSecrets.lifetimes.upperBound)",
                              code: "invalid_expiry")
        }
        let session = try SessionConfiguration.resolve(requested: session, credential: credential, agents: configuration.agentNames)
        guard session.json.text.utf8.count <= ClientSecrets.maximumSessionBytes else {
            throw .badRequest("a client secret's session is at most \(ClientSecrets.maximumSessionBytes) bytes of JSON "
                              + "(it travels in a header); send larger settings over the sideband's session.update",
                              code: "session_too_large")
        }
        var generator = SystemRandomNumberGenerator()
        let now = Int64(time(nil))
        let claims = ClientSecretClaims(
            id: "cs_" + (0..<16).map { _ in String(UInt8.random(in: 0...15, using: &generator), radix: 16) }.joined(),
            owner: credential.keyID, createdAt: now, expiresAt: now + lifetimeSeconds, session: session.json)
        let value = credentials.withLock { $0.secrets.seal(claims) }
        return MintedClientSecret(value: value, claims: claims)
    }

    /// New routing keys (SIGHUP): every worker opens tokens with the new ring from its next
    /// datagram, new calls are sealed with its current key, client secrets follow.
    /// New keys (SIGHUP): the routing keyring, the client-secret keyring if secrets have their own
    /// (nil: sealed with the routing keyring), and the API keys (nil: unchanged). Refused as a whole,
    /// with the old keys kept, when the API keys are malformed or none would be left.
    public func reload(keyring: RoutingKeyring, secretKeyring: RoutingKeyring? = nil, apiKeys: [String]?) throws(SignalingError) {
        let newKeys = try apiKeys.map { (keys: [String]) throws(SignalingError) in try APIKeys(keys) }
        if let newKeys, newKeys.isEmpty, configuration.requireAuthentication {
            throw .badRequest("the reloaded key files hold no API key: every request would be refused")
        }
        keys.withLock { $0 = keyring }
        let ownRing = secretKeyring ?? keyring  // as client secrets are sealed
        transceiverKeys.withLock { $0 = (ownRing, ForwardedRequest(keyring: ownRing)) }
        credentials.withLock { auth in
            auth.secrets = ClientSecrets(keyring: secretKeyring ?? keyring)
            if let newKeys { auth.apiKeys = newKeys }
        }
        for worker in workers { worker.eventLoop.execute { worker.keyring = keyring } }
    }

    // MARK: Drain

    /// From now on new calls are refused (503); live ones go on.
    public func startDraining() { registry.startDraining() }

    public var isDraining: Bool { registry.isDraining }

    /// Counts an attempt from a client address (calls, failed credentials) against its rate.
    public func admit(address: TransportAddress) throws(SignalingError) {
        try registry.admit(address: address, now: monotonicNow())
    }

    /// One host candidate per advertised address (`relays`, or the configured ones, or the worker's
    /// own address), most preferred first; with a TCP port, a passive TCP candidate per relay
    /// address after them (never for a worker's own address: workers take no TCP).
    private func advertisedCandidates(for worker: MediaWorker, relays: [TransportAddress]? = nil) -> [ICECandidate] {
        let configured = relays.flatMap { $0.isEmpty ? nil : $0 } ?? configuration.advertisedAddresses
        guard !configured.isEmpty else { return ICECandidate.advertised([worker.endpoint], tcpPort: nil) }
        return ICECandidate.advertised(configured, tcpPort: configuration.advertisedTCPPort)
    }
}

/// One event for a sideband, as its text; `endsCall` on the last one of a call (its `ended` state).
public struct SidebandFrame: Sendable {
    public var text: String
    public var endsCall: Bool
    var budget: SidebandBudget?

    /// The frame was written (or will never be): its bytes leave the sideband's budget.
    public func delivered() { budget?.give(text.utf8.count) }
}

/// The bytes of one sideband's frames queued and not yet written. Counted as well as frames: a
/// client's data-channel message may be 256 KiB, so 1,024 queued frames could be far too many
/// bytes for a reader that stalls; past `limit` it is cut off like one that fell behind in frames.
final class SidebandBudget: Sendable {
    static let limit = 4 << 20
    private let queued = Atomic<Int>(0)

    /// Takes `bytes` for a frame about to be queued; false (nothing taken) when that would pass the limit.
    func take(_ bytes: Int) -> Bool {
        let after = queued.add(bytes, ordering: .relaxed).newValue
        guard after > Self.limit else { return true }
        queued.subtract(bytes, ordering: .relaxed)
        return false
    }

    func give(_ bytes: Int) { queued.subtract(bytes, ordering: .relaxed) }
}

/// A client secret and what it says.
public struct MintedClientSecret: Sendable {
    public var value: String
    public var claims: ClientSecretClaims
}

/// A counter for round-robin choices across threads.
final class AtomicCounter: Sendable {
    private let value = Mutex(0)
    func next() -> Int { value.withLock { current in defer { current &+= 1 }; return current } }
}
