import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ParleyMedia
import ParleySession
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Why signaling could not create a call; each maps to an HTTP status with the reason as text.
public enum CallSetupError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformedOffer(String)
    case unsupportedOffer(String)
    case atCapacity
    case internalError(String)

    public var description: String {
        switch self {
        case .malformedOffer(let reason): "malformed SDP offer: \(reason)"
        case .unsupportedOffer(let reason): "unsupported SDP offer: \(reason)"
        case .atCapacity: "this transceiver is at its session limit"
        case .internalError(let reason): "internal error: \(reason)"
        }
    }
}

/// A transceiver: media workers (one event loop and one UDP port each) and the calls they own.
/// Signaling creates and ends calls through it from any thread.
public final class Transceiver: Sendable {
    public let configuration: TransceiverConfiguration
    public let certificate: DTLSCertificate
    let dtlsContext: DTLSContext
    let registry: CallRegistry
    let metrics: TransceiverMetrics
    private let group: MultiThreadedEventLoopGroup
    private let workers: [MediaWorker]
    private let logger: Logger
    private let nextWorker = AtomicCounter()

    public init(configuration: TransceiverConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        certificate = try DTLSCertificate(commonName: "parley")
        dtlsContext = try DTLSContext(certificate: certificate, configuration: configuration.dtls)
        let registry = CallRegistry()
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
        for worker in workers { await worker.stop() }
        try? await group.shutdownGracefully()
    }

    public var activeCalls: Int { registry.count }

    /// Creates a call from an SDP offer; returns its id and the SDP answer. `agent` picks a built-in
    /// agent for this call instead of the configured one (the demo page's selector).
    public func createCall(offer bytes: [UInt8], agent: AgentChoice? = nil) async throws(CallSetupError) -> (id: String, answer: String) {
        let offer: SessionDescription
        do { offer = try SessionDescription(parsing: bytes) } catch { throw .malformedOffer(error.description) }
        guard registry.count < configuration.maximumSessions else { throw .atCapacity }

        var generator = SystemRandomNumberGenerator()
        let worker = workers[nextWorker.next() % workers.count]
        let password = ICECredentials.randomString(length: 24, using: &generator)
        let callID = "rtc_" + (0..<16).map { _ in String(UInt8.random(in: 0...15, using: &generator), radix: 16) }.joined()
        let ssrc = UInt32.random(in: 1...UInt32.max, using: &generator)
        let candidates = advertisedCandidates(for: worker)
        let dtlsContext = self.dtlsContext
        let issued = RoutingToken.hour(unixSeconds: Int64(time(nil)))

        // The token's nonce keys the session on its worker; on the rare collision, draw another.
        for _ in 0..<4 {
            let token = RoutingToken.random(keyID: configuration.keyring.currentKeyID, clusterID: configuration.clusterID,
                                            worker: worker.endpoint, issuedHour: issued, using: &generator)
            let ufrag = configuration.keyring.seal(token)
            let negotiated: NegotiatedSession
            do {
                negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
                    iceUfrag: ufrag, icePassword: password, fingerprint: certificate.fingerprint, candidates: candidates,
                    sessionID: UInt64.random(in: 1...UInt64(Int64.max), using: &generator), audioSSRC: ssrc, cname: "parley"))
            } catch {
                throw .unsupportedOffer(error.description)
            }
            var parameters = SessionParameters(id: callID, localUfrag: ufrag, localPassword: password, negotiated: negotiated,
                                               localAudioSSRC: ssrc, cname: "parley")
            parameters.timeouts = configuration.timeouts
            let sessionParameters = parameters
            do {
                try await worker.eventLoop.submit {
                    try worker.createSession(key: token.nonce, parameters: sessionParameters, dtlsContext: dtlsContext,
                                             registry: self.registry, agent: agent.map { .builtIn($0) } ?? self.configuration.agent)
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
    public func renegotiateCall(id: String, offer bytes: [UInt8]) async throws(CallSetupError) -> String? {
        guard let entry = registry.lookup(id) else { return nil }
        let offer: SessionDescription
        do { offer = try SessionDescription(parsing: bytes) } catch { throw .malformedOffer(error.description) }
        let worker = workers[entry.worker]
        guard let current = try? await worker.eventLoop.submit({ worker.negotiationState(key: entry.sessionKey) }).get() else {
            return nil
        }
        var generator = SystemRandomNumberGenerator()
        let candidates = advertisedCandidates(for: worker)
        let issued = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        for _ in 0..<4 {
            let token = RoutingToken.random(keyID: configuration.keyring.currentKeyID, clusterID: configuration.clusterID,
                                            worker: worker.endpoint, issuedHour: issued, using: &generator)
            let probe = try Self.negotiate(offer, ufrag: current.localUfrag, password: current.localPassword,
                                           certificate: certificate, candidates: candidates, ssrc: current.localAudioSSRC)
            guard probe.remoteFingerprints.contains(where: current.negotiated.remoteFingerprints.contains) else {
                throw .unsupportedOffer("a new offer for a call must keep its DTLS certificate")
            }
            // The same ICE credentials: nothing to restart, the answer repeats ours.
            if probe.remoteUfrag == current.negotiated.remoteUfrag { return probe.answer.text }

            let ufrag = configuration.keyring.seal(token)
            let password = ICECredentials.randomString(length: 24, using: &generator)
            let negotiated = try Self.negotiate(offer, ufrag: ufrag, password: password, certificate: certificate,
                                                candidates: candidates, ssrc: current.localAudioSSRC)
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
        candidates: [ICECandidate], ssrc: UInt32
    ) throws(CallSetupError) -> NegotiatedSession {
        var generator = SystemRandomNumberGenerator()
        do {
            return try SessionDescription.iceLiteAnswer(to: offer, parameters: AnswerParameters(
                iceUfrag: ufrag, icePassword: password, fingerprint: certificate.fingerprint, candidates: candidates,
                sessionID: UInt64.random(in: 1...UInt64(Int64.max), using: &generator), audioSSRC: ssrc, cname: "parley"))
        } catch {
            throw .unsupportedOffer(error.description)
        }
    }

    /// Ends a call; false when no such call exists (any more).
    public func endCall(id: String, reason: CloseReason = .hangup) async -> Bool {
        guard let entry = registry.lookup(id) else { return false }
        let worker = workers[entry.worker]
        // The worker unregisters the call when its session closes.
        try? await worker.eventLoop.submit { worker.closeSession(key: entry.sessionKey, reason: reason) }.get()
        return true
    }

    /// A call's state and counters, or nil when no such call exists.
    func describeCall(id: String) async -> SessionSnapshot? {
        guard let entry = registry.lookup(id) else { return nil }
        let worker = workers[entry.worker]
        return try? await worker.eventLoop.submit { worker.describeSession(key: entry.sessionKey) }.get()
    }

    /// One host candidate per advertised address (or the worker's own address), most preferred first.
    private func advertisedCandidates(for worker: MediaWorker) -> [ICECandidate] {
        let addresses = configuration.advertisedAddresses.isEmpty ? [worker.endpoint] : configuration.advertisedAddresses
        return addresses.enumerated().map { index, address in
            let host: String
            switch address {
            case .v4(let ip, _): host = ip.description
            case .v6(let ip, _): host = ip.description
            }
            return ICECandidate(
                foundation: "\(index + 1)", component: 1, transport: "udp",
                priority: ICECandidate.priority(typePreference: 126, localPreference: UInt32(clamping: 65535 - index), component: 1),
                address: host, port: address.port, kind: .host)
        }
    }
}

/// A counter for round-robin choices across threads.
final class AtomicCounter: Sendable {
    private let value = Mutex(0)
    func next() -> Int { value.withLock { current in defer { current &+= 1 }; return current } }
}
