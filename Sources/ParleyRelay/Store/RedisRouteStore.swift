import Logging
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import ParleyIO
import ParleyWire
import Synchronization

/// The route store on Redis, through a small RESP client on SwiftNIO (see docs/relay.md for why
/// not hiredis): one pipelined connection, replies matched to requests in order, reconnect with
/// backoff. Each connection is set up before it carries anything: TLS for `rediss://` (swift-nio-ssl,
/// the certificate verified against the system's roots or `--redis-ca`, and the host name or IP
/// address checked), then `RedisEndpoint.setupCommands` (AUTH, SELECT, PING). While Redis is
/// unreachable or refuses the setup, saves are dropped and lookups answer nil at once, so the relay
/// keeps forwarding what it knows and rebuilds routes from the next checks.
///
/// Failures are logged once per change of state (a wrong password is one line, not one per retry)
/// and counted on every attempt: `parley_relay_store_auth_failures_total`,
/// `parley_relay_store_tls_failures_total`. The password is never logged.
public final class RedisRouteStore: RouteStore, @unchecked Sendable {
    public let endpoint: RedisEndpoint
    private let tls: NIOSSLContext?
    private let tlsServerName: String?
    private let eventLoop: EventLoop
    private let logger: Logger

    /// One TCP connection, from its first byte to its close. Touched only on `eventLoop`.
    fileprivate final class Connection: @unchecked Sendable {
        var channel: Channel?
        var ready = false
        var tlsEstablished = false
        let startedAt = NIODeadline.now()
        /// Why the setup failed, when it did (the first reason seen wins: a TLS error comes before the close it causes).
        var failure: (state: RouteStoreState, detail: String)?
    }

    /// Touched only on `eventLoop`.
    private var connection: Connection?
    private var pending: CircularBuffer<(promise: EventLoopPromise<RESPValue>, sentAt: NIODeadline)> = []
    /// A reply slower than this means Redis hangs: the connection is dropped and made again, and
    /// everything waiting on it fails (the relay then treats those flows as unknown).
    public static let replyTimeout: TimeAmount = .milliseconds(250)
    /// A connection whose TLS handshake and setup commands are not done by then is given up.
    public static let setupTimeout: TimeAmount = .seconds(2)
    private var watchdog: RepeatedTask?
    /// Commands issued while a connection is being made and set up, sent once it is ready.
    private var waitingForConnection: [(command: [String], promise: EventLoopPromise<RESPValue>)] = []
    private var backoff: TimeAmount = .milliseconds(100)
    private var stopped = false
    /// Whether this connection's first refused command was logged (later ones are at debug level).
    private var loggedRefusal = false
    private let currentState = Mutex<RouteStoreState>(.connecting)
    private let maximumPending = 10_000
    private let authFailures = Counter(label: "parley_relay_store_auth_failures_total")
    private let tlsFailures = Counter(label: "parley_relay_store_tls_failures_total")

    /// - Parameters:
    ///   - trustRootsFile: for `rediss://`, PEM certificates the server's may chain to (default: the
    ///     system's roots). Read now: a file that cannot be used throws, naming it.
    ///   - tlsServerName: for `rediss://`, the name to send as SNI and verify the certificate against,
    ///     instead of the URL's host.
    public convenience init(endpoint: RedisEndpoint, trustRootsFile: String? = nil, tlsServerName: String? = nil,
                            eventLoop: EventLoop, logger: Logger) throws {
        let tls = endpoint.tls ? try Self.makeTLSContext(trustRootsFile: trustRootsFile) : nil
        self.init(endpoint: endpoint, tls: tls, tlsServerName: tlsServerName, eventLoop: eventLoop, logger: logger)
    }

    /// Plain TCP to `host:port`, no credentials (tests, and the bare `--redis host:port`).
    public convenience init(host: String, port: Int, eventLoop: EventLoop, logger: Logger) {
        let endpoint = (try? RedisEndpoint(parsing: "\(host.contains(":") ? "[\(host)]" : host):\(port)"))
            ?? RedisEndpoint(host: .name(host), port: UInt16(clamping: port))
        self.init(endpoint: endpoint, tls: nil, tlsServerName: nil, eventLoop: eventLoop, logger: logger)
    }

    private init(endpoint: RedisEndpoint, tls: NIOSSLContext?, tlsServerName: String?, eventLoop: EventLoop, logger: Logger) {
        self.endpoint = endpoint
        self.tls = tls
        self.tlsServerName = tlsServerName ?? endpoint.tlsServerName
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "redis"] = "\(endpoint.redacted)"
        self.logger = logger
        eventLoop.execute {
            self.connect()
            self.watchdog = eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
                self.checkTimeouts()
            }
        }
    }

    /// The TLS client context for `rediss://`: the certificate verified (chain and host name or IP
    /// address) against `trustRootsFile` (PEM) or, without it, the system's roots.
    static func makeTLSContext(trustRootsFile: String?) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        if let trustRootsFile {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(trustRootsFile)
            } catch {
                throw RedisConfigurationError("cannot read PEM certificates from \(trustRootsFile): \(error)")
            }
            guard !certificates.isEmpty else { throw RedisConfigurationError("\(trustRootsFile) holds no PEM certificate") }
            configuration.trustRoots = .certificates(certificates)
        }
        return try NIOSSLContext(configuration: configuration)
    }

    public var state: RouteStoreState { currentState.withLock { $0 } }
    public var isConnected: Bool { state == .connected }

    public func save(client: TransportAddress, route: StoredRoute, lifetime: Duration) {
        let seconds = max(1, lifetime.components.seconds)
        _ = send(["SET", client.storeKey, "\(route)", "EX", "\(seconds)"])
    }

    public func lookup(client: TransportAddress, on callerLoop: EventLoop) -> EventLoopFuture<StoredRoute?> {
        send(["GET", client.storeKey]).map { reply -> StoredRoute? in
            if case .bulk(let text?) = reply { return StoredRoute(text) }
            return nil
        }.recover { _ in nil }.hop(to: callerLoop)
    }

    /// PING, for health checks and tests.
    public func ping() -> EventLoopFuture<Bool> {
        send(["PING"]).map { reply in
            if case .simple("PONG") = reply { return true }
            return false
        }.recover { _ in false }
    }

    public func shutdown() {
        eventLoop.execute {
            self.stopped = true
            self.watchdog?.cancel()
            self.connection?.channel?.close(promise: nil)
        }
    }

    // MARK: Commands

    private func send(_ command: [String]) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        eventLoop.execute {
            guard let connection = self.connection else {
                promise.fail(RedisError.unavailable)
                return
            }
            guard connection.ready, let channel = connection.channel else {
                // A connection being made: hold the command briefly, so a relay that just started
                // can answer its first lookups.
                if self.waitingForConnection.count < 1024 {
                    self.waitingForConnection.append((command, promise))
                } else {
                    promise.fail(RedisError.unavailable)
                }
                return
            }
            self.write(command, promise: promise, on: channel)
        }
        return promise.futureResult
    }

    private func write(_ command: [String], promise: EventLoopPromise<RESPValue>, on channel: Channel) {
        guard pending.count < maximumPending else {
            promise.fail(RedisError.unavailable)
            return
        }
        pending.append((promise, NIODeadline.now()))
        var buffer = channel.allocator.buffer(capacity: 64)
        buffer.writeBytes(RESPValue.encode(command: command))
        channel.writeAndFlush(buffer, promise: nil)
    }

    // MARK: Connecting

    private func connect() {
        guard !stopped, connection == nil else { return }
        let connection = Connection()
        self.connection = connection
        let tls = self.tls
        let serverName = tlsServerName
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(1))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Known before any event of the channel's can reach the handlers below.
                    connection.channel = channel
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler(store: self, connection: connection))
                }
            }
            .connect(host: endpoint.connectHost, port: Int(endpoint.port))
            .whenComplete { result in
                switch result {
                case .success:
                    // TLS: the setup starts when the handshake completes (ReplyHandler).
                    if tls == nil { self.transportReady(connection) }
                case .failure(let error):
                    connection.failure = connection.failure ?? (.unreachable, "\(error)")
                    self.finishSetup(connection)
                }
            }
    }

    /// TCP (and TLS) are up: send the setup commands, then whatever waited for the connection.
    fileprivate func transportReady(_ connection: Connection) {
        guard self.connection === connection, let channel = connection.channel, !connection.ready else { return }
        let commands = endpoint.setupCommands
        let replies = commands.map { command in
            let promise = eventLoop.makePromise(of: RESPValue.self)
            write(command, promise: promise, on: channel)
            return promise.futureResult
        }
        EventLoopFuture.whenAllComplete(replies, on: eventLoop).whenSuccess { results in
            let values = results.map { result -> RESPValue? in
                switch result {
                case .success(let value): value
                case .failure(RedisError.server(let message)): .error(message)
                case .failure: nil
                }
            }
            switch RedisSetupOutcome(commands: commands, replies: values) {
            case .ready:
                self.setupSucceeded(connection)
            case .authenticationFailed(let reply):
                self.setupFailed(connection, .authFailed, reply)
            case .refused(let reply):
                self.setupFailed(connection, .refused, reply)
            case .noReply:
                break  // the connection closed or timed out; its close finishes the attempt
            }
        }
    }

    private func setupSucceeded(_ connection: Connection) {
        guard self.connection === connection, let channel = connection.channel else { return }
        connection.ready = true
        backoff = .milliseconds(100)
        loggedRefusal = false
        enter(.connected, detail: nil)
        for (command, promise) in waitingForConnection { write(command, promise: promise, on: channel) }
        waitingForConnection.removeAll()
    }

    /// Records why the setup failed and closes the connection; its close finishes the attempt.
    private func setupFailed(_ connection: Connection, _ state: RouteStoreState, _ detail: String) {
        connection.failure = connection.failure ?? (state, detail)
        connection.channel?.close(promise: nil)
    }

    fileprivate func transportError(_ connection: Connection, _ error: Error) {
        if !connection.tlsEstablished, tls != nil, Self.isTLSError(error) {
            connection.failure = connection.failure ?? (.tlsFailed, describeTLSFailure(error))
        }
    }

    /// A TLS error as the operator needs it: what to fix first, then swift-nio-ssl's own words.
    private func describeTLSFailure(_ error: Error) -> String {
        if (error as? NIOSSLExtraError) == .failedToValidateHostname {
            // swift-nio-ssl accepts a certificate that names either the server name or the peer's address.
            if let tlsServerName {
                return "the certificate names neither \(tlsServerName) nor the address connected to"
            }
            return "the certificate does not name \(endpoint.connectHost) (--redis-tls-server-name checks another name it has)"
        }
        let text = "\(error)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "the certificate does not chain to a trusted root (--redis-ca, or the system's roots): \(text)"
        }
        return text
    }

    fileprivate func tlsHandshakeCompleted(_ connection: Connection) {
        connection.tlsEstablished = true
        transportReady(connection)
    }

    static func isTLSError(_ error: Error) -> Bool {
        error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError
    }

    /// The connection closed: a setup that never finished is a failed attempt; a ready connection
    /// that went away is a disconnection. Either way, everything waiting on it fails and a new
    /// connection is made after the backoff.
    fileprivate func closed(_ connection: Connection) {
        guard self.connection === connection else { return }
        while let entry = pending.popFirst() { entry.promise.fail(RedisError.unavailable) }
        guard !stopped else {
            self.connection = nil
            return
        }
        guard connection.ready else { return finishSetup(connection) }
        self.connection = nil
        enter(.disconnected, detail: connection.failure?.detail)
        scheduleReconnect()
    }

    private func finishSetup(_ connection: Connection) {
        guard self.connection === connection else { return }
        self.connection = nil
        for (_, promise) in waitingForConnection { promise.fail(RedisError.unavailable) }
        waitingForConnection.removeAll()
        guard !stopped else { return }
        let (state, detail) = connection.failure ?? (.unreachable, "the connection closed during its setup")
        switch state {
        case .authFailed: authFailures.increment()
        case .tlsFailed: tlsFailures.increment()
        default: break
        }
        enter(state, detail: detail)
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        let delay = backoff
        backoff = min(backoff * 2, .seconds(2))
        eventLoop.scheduleTask(in: delay) { self.connect() }
    }

    private func checkTimeouts() {
        guard let connection, let channel = connection.channel else { return }
        let now = NIODeadline.now()
        if let oldest = pending.first, now - oldest.sentAt > Self.replyTimeout {
            connection.failure = connection.failure ?? (connection.ready ? .disconnected : .unreachable,
                                                        "no reply within \(Self.replyTimeout.nanoseconds / 1_000_000) ms")
            channel.close(promise: nil)
        } else if !connection.ready, now - connection.startedAt > Self.setupTimeout {
            let what = tls != nil && !connection.tlsEstablished ? "TLS handshake" : "setup"
            connection.failure = connection.failure ?? (tls != nil && !connection.tlsEstablished ? .tlsFailed : .unreachable,
                                                        "no \(what) within \(Self.setupTimeout.nanoseconds / 1_000_000_000) s")
            channel.close(promise: nil)
        }
    }

    /// Moves to `state`, logging only a change: a Redis that refuses a wrong password is one line
    /// however often the relay retries, and a second line when it finally accepts.
    private func enter(_ state: RouteStoreState, detail: String?) {
        let previous = currentState.withLock { current in
            defer { current = state }
            return current
        }
        guard previous != state else { return }
        let detail = detail.map(endpoint.scrubbed)
        var metadata: Logger.Metadata = [:]
        if let detail { metadata["reason"] = "\(detail)" }
        switch state {
        case .connected:
            logger.info("route store connected", metadata: ["tls": "\(tls != nil)", "database": "\(endpoint.database)"])
        case .authFailed:
            logger.error("route store authentication failed: check the user and password of --redis or PARLEY_REDIS_URL; retrying with backoff, routes are not stored meanwhile",
                         metadata: metadata)
        case .tlsFailed:
            logger.error("route store TLS handshake failed: check --redis-ca and the certificate's names; retrying with backoff, routes are not stored meanwhile",
                         metadata: metadata)
        case .refused:
            logger.error("route store refused the connection's setup (the database index?); retrying with backoff",
                         metadata: metadata)
        case .disconnected:
            logger.warning("route store disconnected", metadata: metadata)
        case .unreachable:
            logger.warning("route store unreachable; retrying with backoff", metadata: metadata)
        case .connecting, .memory:
            break
        }
    }

    // MARK: Replies

    fileprivate func received(_ reply: RESPValue, on connection: Connection) {
        guard self.connection === connection, let promise = pending.popFirst()?.promise else { return }
        guard case .error(let message) = reply else { return promise.succeed(reply) }
        promise.fail(RedisError.server(message))
        guard connection.ready else { return }
        // A ready connection whose commands are refused: say so once (NOPERM: the ACL user may not
        // GET or SET parley:route:* keys; see docs/relay.md), and on an authentication error make
        // the connection again, so its setup reports it and counts it.
        let code = message.prefix(while: { $0 != " " })
        if code == "NOAUTH" || code == "WRONGPASS" {
            setupFailed(connection, .authFailed, message)
        } else if !loggedRefusal {
            loggedRefusal = true
            logger.warning("route store refused a command", metadata: ["reply": "\(endpoint.scrubbed(message))"])
        }
    }

    private final class ReplyHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = RESPValue
        let store: RedisRouteStore
        let connection: Connection

        init(store: RedisRouteStore, connection: Connection) {
            self.store = store
            self.connection = connection
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) { store.received(unwrapInboundIn(data), on: connection) }
        func channelInactive(context: ChannelHandlerContext) { store.closed(connection) }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent { store.tlsHandshakeCompleted(connection) }
            context.fireUserInboundEventTriggered(event)
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            store.transportError(connection, error)
            context.close(promise: nil)
        }
    }
}

public enum RedisError: Error, Equatable {
    case unavailable
    case server(String)
}

/// A `--redis-ca` that cannot be used, said plainly.
public struct RedisConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Decodes RESP2 replies with ParleyWire's `RESPReader`; waits for more bytes when a reply is
/// incomplete, and gives up on a connection whose unfinished reply grows past any it could send.
struct RESPDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue
    static let maximumPending = 2 * RESPReader.maximumBulk + 65536

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let read = try buffer.withUnsafeReadableBytes { bytes throws(RESPError) in try RESPReader.read(bytes) }
        guard let (value, length) = read else {
            if buffer.readableBytes > Self.maximumPending { throw RedisError.server("reply too large") }
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: length)
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }
}
