import NIOCore
import NIOPosix
import ParleyMedia
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

/// What `parley load` does: opens sessions against an endpoint that takes an SDP offer, sends
/// Opus-sized RTP every 20 ms on each, and measures setup time, echo ratio and echo latency.
public struct LoadConfiguration: Sendable {
    /// The endpoint that takes offers (`http://host:port/v1/realtime/calls`).
    public var url: String
    public var sessions: Int
    /// How long each session sends audio once connected.
    public var duration: Duration
    /// Sessions start evenly spread over this time (zero: all at once).
    public var ramp: Duration
    /// RTP payload size (an Opus voice frame at 32 kb/s is about 80 bytes).
    public var payloadBytes = 80

    public init(url: String, sessions: Int, duration: Duration, ramp: Duration) {
        self.url = url
        self.sessions = sessions
        self.duration = duration
        self.ramp = ramp
    }
}

/// A run's figures. Latencies are in milliseconds.
public struct LoadReport: Codable, Sendable {
    public var sessions: Int
    public var connected: Int
    public var failed: Int
    public var failures: [String]
    public var setupMilliseconds: Percentiles?
    public var firstEchoMilliseconds: Percentiles?
    public var packetsSent: Int
    public var packetsEchoed: Int
    public var echoRatio: Double
    public var echoLatencyMilliseconds: Percentiles?
    public var clientCPUSeconds: Double
    public var wallSeconds: Double

    public struct Percentiles: Codable, Sendable {
        public var p50: Double
        public var p95: Double
        public var p99: Double
        public var max: Double

        init?(_ samples: [Double]) {
            guard !samples.isEmpty else { return nil }
            let sorted = samples.sorted()
            func at(_ fraction: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))] }
            p50 = at(0.5)
            p95 = at(0.95)
            p99 = at(0.99)
            max = sorted.last!
        }
    }
}

/// Runs the load on one event loop (one thread), with one UDP socket per session like real clients.
public final class LoadGenerator: @unchecked Sendable {
    private let configuration: LoadConfiguration
    private let eventLoop: EventLoop
    private let dtlsContext: DTLSContext
    private var clients: [Client] = []
    private var failures: [String] = []
    private var echoLatencies: [Double] = []
    private var progress: (@Sendable (String) -> Void)?

    /// One session's client; touched only on the generator's event loop.
    fileprivate final class Client: @unchecked Sendable {
        let session: ClientSession
        let startedAt: Instant
        var channel: Channel?
        var connectedAt: Instant?
        var firstEchoAt: Instant?
        var nextFrame: Instant?
        var stopAt: Instant?
        var timestamp: UInt32 = 0
        var sent = 0
        var echoed = 0
        var failed = false

        init(session: ClientSession, startedAt: Instant) {
            self.session = session
            self.startedAt = startedAt
        }
    }

    public init(configuration: LoadConfiguration, eventLoop: EventLoop) throws {
        self.configuration = configuration
        self.eventLoop = eventLoop
        dtlsContext = try DTLSContext(certificate: DTLSCertificate(commonName: "parley-load"))
    }

    /// Runs the whole load and returns its report. `progress` gets a line about once a second.
    public func run(progress: (@Sendable (String) -> Void)? = nil) async throws -> LoadReport {
        self.progress = progress
        let started = Self.now()
        let cpuStart = Self.processCPUSeconds()
        let tick = try await eventLoop.submit {
            self.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(5), delay: .milliseconds(5)) { _ in self.tick() }
        }.get()
        let spacing = configuration.sessions > 1 ? configuration.ramp / (configuration.sessions - 1) : .zero
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<configuration.sessions {
                let delay = spacing * index
                group.addTask {
                    try? await Task.sleep(for: delay)
                    await self.startSession()
                }
            }
        }
        // Let the last sessions finish their audio, plus a moment for the last echoes.
        let end = Self.now() + configuration.duration + .seconds(5)
        while Self.now() < end {
            try await Task.sleep(for: .milliseconds(200))
            let busy = try await eventLoop.submit {
                self.clients.contains { !$0.failed && ($0.stopAt == nil || Self.now() < $0.stopAt! + .milliseconds(300)) }
            }.get()
            if !busy { break }
        }
        tick.cancel()
        return try await eventLoop.submit { () -> LoadReport in
            for client in self.clients { client.channel?.close(promise: nil) }
            return self.report(wall: Self.now() - started, cpu: Self.processCPUSeconds() - cpuStart)
        }.get()
    }

    private func startSession() async {
        let client: Client
        do {
            client = try await eventLoop.submit { () -> Client in
                let client = Client(session: ClientSession(dtlsContext: self.dtlsContext), startedAt: Self.now())
                self.clients.append(client)
                return client
            }.get()
        } catch { return }
        do {
            let channel = try await DatagramBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ClientHandler(generator: self, client: client))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            let response = try await SignalingClient.send(
                method: "POST", url: configuration.url, contentType: "application/sdp", body: client.session.offer, on: eventLoop)
            guard response.status == 201 else {
                throw ClientError.unusableAnswer("HTTP \(response.status): \(response.body.prefix(200))")
            }
            try await eventLoop.submit {
                client.channel = channel
                try client.session.accept(answer: response.body, now: Self.now())
                self.flush(client)
            }.get()
        } catch {
            try? await eventLoop.submit { self.fail(client, "\(error)") }.get()
        }
    }

    fileprivate func receive(_ buffer: ByteBuffer, client: Client) {
        let now = Self.now()
        buffer.withUnsafeReadableBytes { client.session.receive($0, now: now) }
        for event in client.session.takeEvents() {
            switch event {
            case .dtlsConnected:
                client.connectedAt = now
                client.nextFrame = now
                client.stopAt = now + configuration.duration
            case .audio(_, _, let payload):
                guard payload.count >= 8 else { break }
                let sentAt = payload.withUnsafeBytes { Int64(bigEndian: $0.loadUnaligned(as: Int64.self)) }
                client.echoed += 1
                if client.firstEchoAt == nil { client.firstEchoAt = now }
                echoLatencies.append(Double(now.nanoseconds - sentAt) / 1e6)
            case .failed(let reason):
                fail(client, reason)
            case .iceConnected:
                break
            }
        }
        flush(client)
    }

    private func tick() {
        let now = Self.now()
        for client in clients where !client.failed && client.channel != nil {
            client.session.handleTimeout(now: now)
            if client.connectedAt == nil, now - client.startedAt > .seconds(20) {
                fail(client, "not connected within 20 s")
                continue
            }
            while let due = client.nextFrame, due <= now, let stop = client.stopAt, due < stop {
                var payload = [UInt8](repeating: 0x5A, count: max(8, configuration.payloadBytes))
                withUnsafeBytes(of: now.nanoseconds.bigEndian) { for index in 0..<8 { payload[index] = $0[index] } }
                client.session.sendAudio(payload, timestamp: client.timestamp)
                client.timestamp &+= 960
                client.sent += 1
                client.nextFrame = due + .milliseconds(20)
            }
            flush(client)
        }
        reportProgress(now: now)
    }

    private var lastProgress = Instant.zero

    private func reportProgress(now: Instant) {
        guard let progress, now - lastProgress >= .seconds(1) else { return }
        lastProgress = now
        let connected = clients.filter { $0.connectedAt != nil }.count
        let sent = clients.reduce(0) { $0 + $1.sent }, echoed = clients.reduce(0) { $0 + $1.echoed }
        progress("sessions \(clients.count)/\(configuration.sessions) connected \(connected) failed \(failures.count) "
                 + "packets sent \(sent) echoed \(echoed)")
    }

    private func flush(_ client: Client) {
        guard let channel = client.channel, let server = client.session.serverAddress else { return }
        let transmits = client.session.takeTransmits()
        guard !transmits.isEmpty else { return }
        let destination = Self.socketAddress(server)
        for bytes in transmits {
            channel.write(AddressedEnvelope(remoteAddress: destination, data: channel.allocator.buffer(bytes: bytes)), promise: nil)
        }
        channel.flush()
    }

    private func fail(_ client: Client, _ reason: String) {
        guard !client.failed else { return }
        client.failed = true
        failures.append(reason)
        client.channel?.close(promise: nil)
    }

    private func report(wall: Duration, cpu: Double) -> LoadReport {
        let connected = clients.filter { $0.connectedAt != nil }
        let sent = clients.reduce(0) { $0 + $1.sent }, echoed = clients.reduce(0) { $0 + $1.echoed }
        return LoadReport(
            sessions: configuration.sessions, connected: connected.count, failed: failures.count,
            failures: Array(Set(failures)).sorted().prefix(10).map { String($0) },
            setupMilliseconds: .init(connected.map { Double(($0.connectedAt! - $0.startedAt).nanoseconds) / 1e6 }),
            firstEchoMilliseconds: .init(connected.compactMap { client in
                client.firstEchoAt.map { Double(($0 - client.startedAt).nanoseconds) / 1e6 } }),
            packetsSent: sent, packetsEchoed: echoed, echoRatio: sent == 0 ? 0 : Double(echoed) / Double(sent),
            echoLatencyMilliseconds: .init(echoLatencies), clientCPUSeconds: cpu,
            wallSeconds: Double(wall.nanoseconds) / 1e9)
    }

    static func now() -> Instant { Instant(nanoseconds: Int64(NIODeadline.now().uptimeNanoseconds)) }

    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    static func socketAddress(_ address: TransportAddress) -> SocketAddress {
        switch address {
        case .v4(let ip, let port):
            return try! SocketAddress(ipAddress: ip.description, port: Int(port))
        case .v6(let ip, let port):
            return try! SocketAddress(ipAddress: ip.description, port: Int(port))
        }
    }

    private final class ClientHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let generator: LoadGenerator
        let client: Client

        init(generator: LoadGenerator, client: Client) {
            self.generator = generator
            self.client = client
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            generator.receive(unwrapInboundIn(data).data, client: client)
        }
    }
}
