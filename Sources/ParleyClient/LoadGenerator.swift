import Foundation
import NIOCore
import NIOPosix
import ParleyIO
import ParleyDTLSLibrary
import ParleyMedia
import ParleySession
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

/// What `parley load` does: opens sessions against an endpoint that takes an SDP offer, sends
/// Opus-sized RTP every 20 ms on each and a JSON event on `oai-events` every second, and measures
/// every setup step, echo ratio, loss, jitter, round-trip time and its own CPU.
public struct LoadConfiguration: Sendable {
    /// The endpoint that takes offers (`http://host:port/v1/realtime/calls`).
    public var url: String
    public var sessions: Int
    /// How long each session sends audio once connected.
    public var duration: Duration
    /// Sessions start evenly spread over this time (zero: all at once, a burst).
    public var ramp: Duration
    /// RTP payload size (an Opus voice frame at 32 kb/s is about 80 bytes).
    public var payloadBytes = 80
    /// Offer a data channel and open `oai-events` on it.
    public var dataChannel = true
    /// How often each session sends a JSON event on its data channel (and expects it back).
    public var dataChannelInterval: Duration = .seconds(1)
    /// A session that has not reached DTLS by then is counted as failed.
    public var setupTimeout: Duration = .seconds(20)
    /// Send real Opus — silence with a loud 20 ms pulse once a second — and decode what comes
    /// back, timing each pulse from send to heard. Works through agents that decode and re-encode
    /// (the payload's embedded send time does not survive them); costs a decode per received frame.
    public var opusPulses = false
    /// The API key (or a client secret) each offer's `Authorization: Bearer` carries; none when nil.
    public var apiKey: String?
    /// WARP's client side: SNAP (`a=sctp-init` in the offer) and `oai-events` negotiated on stream 0
    /// (`?dcid=0`): no SCTP or DCEP handshake when the server answers in kind.
    public var warp = false
    /// The DTLS library the clients use: BoringSSL offers DTLS 1.3 (and 1.2), OpenSSL only 1.2.
    public var dtlsLibrary = DTLSLibrary.boringssl

    public init(url: String, sessions: Int, duration: Duration, ramp: Duration) {
        self.url = url
        self.sessions = sessions
        self.duration = duration
        self.ramp = ramp
    }
}

/// A run's figures. Latencies are in milliseconds; setup steps count from the offer's POST.
public struct LoadReport: Codable, Sendable {
    public var sessions: Int
    public var connected: Int
    public var failed: Int
    public var failures: [String]
    public var setup: Setup
    public var audio: Audio
    /// Round trip of ICE consent checks (the network and the server's STUN path, no media processing).
    public var roundTripMilliseconds: Percentiles?
    public var dataChannel: DataChannelFigures
    public var client: Client

    public struct Setup: Codable, Sendable {
        public var answer: Percentiles?
        public var ice: Percentiles?
        public var dtls: Percentiles?
        public var firstEchoedAudio: Percentiles?
        public var dataChannelOpen: Percentiles?
    }

    public struct Audio: Codable, Sendable {
        public var packetsSent: Int
        public var packetsEchoed: Int
        public var echoRatio: Double
        /// Gaps in the echoed stream's sequence numbers.
        public var packetsLost: Int
        /// RFC 3550 interarrival jitter of each session's echoed stream at the end of the run.
        public var jitterMilliseconds: Percentiles?
        /// Client send → client receive of the same frame (its send time rides in the payload).
        public var echoLatencyMilliseconds: Percentiles?
        /// With `--opus-pulses`: a pulse's send → the first loud frame decoded from what came back.
        public var pulseLatencyMilliseconds: Percentiles?
    }

    /// Connected sessions by the DTLS version their handshake agreed ("DTLS 1.3": n).
    public var dtlsVersions: [String: Int]

    public struct DataChannelFigures: Codable, Sendable {
        public var opened: Int
        /// Sessions whose answer took up SNAP (with `--warp`): their SCTP started with DTLS.
        public var startedWithSNAP: Int
        public var messagesSent: Int
        public var messagesEchoed: Int
        public var echoLatencyMilliseconds: Percentiles?
    }

    public struct Client: Codable, Sendable {
        /// The whole generator process (its event loop, HTTP, start-up).
        public var cpuSeconds: Double
        public var wallSeconds: Double
        /// The busiest second of the generator's one thread once every session is up, in percent of a core.
        public var peakCPUPercent: Double
        /// How late 20 ms frames left (the generator's timer runs every 1 ms).
        public var sendLagMilliseconds: Percentiles?
        /// Set when the generator itself was the bottleneck: the figures then show its limit, not the server's.
        public var saturated: Bool
        public var warning: String?
    }

    public struct Percentiles: Codable, Sendable {
        public var p50: Double
        public var p95: Double
        public var p99: Double
        public var max: Double

        public init?(_ samples: [Double]) {
            guard !samples.isEmpty else { return nil }
            let sorted = samples.sorted()
            func at(_ fraction: Double) -> Double { sorted[min(sorted.count - 1, Int(saturating: Double(sorted.count) * fraction))] }
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
    private let dtlsContext: any DTLSContext
    private var clients: [Client] = []
    private var failures: [String] = []
    private var echoLatencies: [Double] = []
    private var dataChannelLatencies: [Double] = []
    private var sendLags: [Double] = []
    private var progress: (@Sendable (String) -> Void)?
    private var audioPayload: [UInt8]
    /// With `opusPulses`: one second of Opus, a pulse then 49 frames of silence, sent in a loop.
    private var pulsePackets: [[UInt8]] = []
    private var pulseLatencies: [Double] = []

    /// One session's client; touched only on the generator's event loop.
    fileprivate final class Client: @unchecked Sendable {
        let session: ClientSession
        let startedAt: Instant
        var channel: Channel?
        var answerAt: Instant?
        var iceAt: Instant?
        var connectedAt: Instant?
        var firstEchoAt: Instant?
        var dataChannelOpenAt: Instant?
        var nextFrame: Instant?
        var nextEvent: Instant?
        var stopAt: Instant?
        var timestamp: UInt32 = 0
        var sent = 0
        var echoed = 0
        var eventsSent = 0
        var eventsEchoed = 0
        /// Loss and jitter of the echoed stream, as an RTCP receiver counts them (48 kHz RTP clock).
        var stream = RTPReceiveStatistics(clockRate: 48000)
        var failed = false
        var decoder: OpusDecoder?
        var lastPulseSentAt: Instant?
        var pulseHeard = true

        init(session: ClientSession, startedAt: Instant) {
            self.session = session
            self.startedAt = startedAt
        }
    }

    public init(configuration: LoadConfiguration, eventLoop: EventLoop) throws {
        self.configuration = configuration
        self.eventLoop = eventLoop
        dtlsContext = try configuration.dtlsLibrary.makeContext(certificate: DTLSCertificate(commonName: "parley-load"))
        audioPayload = [UInt8](repeating: 0x5A, count: max(8, configuration.payloadBytes))
        if configuration.opusPulses {
            let encoder = try OpusEncoder(sampleRate: .hz48000)
            let samples = OpusSampleRate.hz48000.samplesPer20Milliseconds
            pulsePackets = try (0..<50).map { index in
                let pcm: [Int16] = index == 0
                    ? (0..<samples).map { Int16(saturating: sin(2 * Double.pi * 1000 * Double($0) / 48000) * 16000) }
                    : [Int16](repeating: 0, count: samples)
                return try encoder.encode(pcm)
            }
        }
    }

    /// Runs the whole load and returns its report. `progress` gets a line about once a second.
    public func run(progress: (@Sendable (String) -> Void)? = nil) async throws -> LoadReport {
        self.progress = progress
        let started = Self.now()
        let cpuStart = Self.processCPUSeconds()
        let tick = try await eventLoop.submit {
            self.runStartedAt = started
            self.lastProgressCPU = Self.threadCPUSeconds()
            self.lastProgress = Self.now()
            return self.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(1), delay: .milliseconds(1)) { _ in self.tick() }
        }.get()
        let spacing = configuration.sessions > 1 ? configuration.ramp / (configuration.sessions - 1) : .zero
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<configuration.sessions {
                let delay = spacing * index
                group.addTask {
                    if delay > .zero { try? await Task.sleep(for: delay) }
                    await self.startSession()
                }
            }
        }
        // Wait for every session to connect (or time out), send its audio and get the last echoes.
        while true {
            try await Task.sleep(for: .milliseconds(100))
            let busy = try await eventLoop.submit {
                let now = Self.now()
                return self.clients.contains { client in
                    guard !client.failed else { return false }
                    guard let stop = client.stopAt else { return true }
                    return now < stop + .milliseconds(500)
                }
            }.get()
            if !busy { break }
        }
        tick.cancel()
        return try await eventLoop.submit { () -> LoadReport in
            for client in self.clients { client.channel?.close(promise: nil) }
            return self.report(wall: Self.now() - started, cpu: Self.processCPUSeconds() - cpuStart)
        }.get()
    }

    /// The offer's URL, with `dcid` when the channel is negotiated.
    static func offerURL(_ url: String, negotiatedChannel: UInt16?) -> String {
        guard let id = negotiatedChannel else { return url }
        return url + (url.contains("?") ? "&" : "?") + "dcid=\(id)"
    }

    private func startSession() async {
        let client: Client
        do {
            client = try await eventLoop.submit { () -> Client in
                let session = ClientSession(dtlsContext: self.dtlsContext,
                                            dataChannelLabel: self.configuration.dataChannel ? "oai-events" : nil,
                                            warp: self.configuration.warp)
                let client = Client(session: session, startedAt: Self.now())
                if self.configuration.opusPulses { client.decoder = try OpusDecoder(sampleRate: .hz48000) }
                session.audioHandler = { [unowned self, unowned client] sequenceNumber, timestamp, payload in
                    self.receiveAudio(client, sequenceNumber: sequenceNumber, timestamp: timestamp, payload: payload)
                }
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
                .bind(host: "0.0.0.0", port: 0).get()  // the route to the server picks the source address
            let response = try await SignalingClient.send(
                method: "POST", url: Self.offerURL(configuration.url, negotiatedChannel: client.session.negotiatedChannelID),
                contentType: "application/sdp", body: client.session.offer,
                bearer: configuration.apiKey, on: eventLoop)
            guard response.status == 201 || response.status == 200 else {
                throw ClientError.unusableAnswer("HTTP \(response.status): \(response.body.prefix(200))")
            }
            try await eventLoop.submit {
                let now = Self.now()
                client.answerAt = now
                client.channel = channel
                try client.session.accept(answer: response.body, now: now)
                self.flush(client)
            }.get()
        } catch {
            try? await eventLoop.submit { self.fail(client, "\(error)") }.get()
        }
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>, client: Client) {
        let now = Self.now()
        let source = TransportAddress(envelope.remoteAddress)
        envelope.data.withUnsafeReadableBytes { client.session.receive($0, from: source, now: now) }
        for event in client.session.takeEvents() {
            switch event {
            case .iceConnected:
                client.iceAt = now
            case .dtlsConnected:
                client.connectedAt = now
                // Frames fall due on whole milliseconds, the tick's resolution: a tick in the
                // frame's millisecond always finds it due.
                let due = Instant(nanoseconds: now.nanoseconds / 1_000_000 * 1_000_000)
                client.nextFrame = due
                client.stopAt = due + configuration.duration
                schedule(client, at: due)
                // DTLS 1.3: the client's Finished goes first, or the server, which connects on it,
                // could not yet read the first frame.
                flush(client)
                // The first frame leaves now: this millisecond's tick may already have run.
                _ = sendFrames(client, now: now)
            case .audio(let sequenceNumber, let timestamp, let payload):
                payload.withUnsafeBytes { receiveAudio(client, sequenceNumber: sequenceNumber, timestamp: timestamp, payload: $0) }
            case .dataChannelOpen:
                client.dataChannelOpenAt = now
                client.nextEvent = now
            case .dataChannelMessage(_, _, let payload):
                if let sentAt = Self.sentNanoseconds(inEvent: payload) {
                    client.eventsEchoed += 1
                    dataChannelLatencies.append(Double(now.nanoseconds - sentAt) / 1e6)
                }
            case .dataChannelClosed(let reason):
                if client.stopAt.map({ now < $0 }) ?? true { fail(client, "data channel closed: \(reason)") }
            case .failed(let reason):
                fail(client, reason)
            }
        }
        flush(client)
    }

    private func receiveAudio(_ client: Client, sequenceNumber: UInt16, timestamp: UInt32, payload: UnsafeRawBufferPointer) {
        if let decoder = client.decoder {
            return receivePulse(client, decoder: decoder, sequenceNumber: sequenceNumber, timestamp: timestamp, payload: payload)
        }
        guard payload.count >= 8 else { return }
        let now = Self.now()
        let sentAt = Int64(bigEndian: payload.loadUnaligned(as: Int64.self))
        client.echoed += 1
        client.stream.record(sequence: sequenceNumber, timestamp: timestamp, ssrc: Self.echoedStream, arrival: .nanoseconds(now.nanoseconds))
        if client.firstEchoAt == nil { client.firstEchoAt = now }
        echoLatencies.append(Double(now.nanoseconds - sentAt) / 1e6)
    }

    /// Decodes an echoed frame; the first loud one after a pulse was sent times that pulse.
    private func receivePulse(_ client: Client, decoder: OpusDecoder, sequenceNumber: UInt16, timestamp: UInt32,
                              payload: UnsafeRawBufferPointer) {
        let now = Self.now()
        client.echoed += 1
        client.stream.record(sequence: sequenceNumber, timestamp: timestamp, ssrc: Self.echoedStream, arrival: .nanoseconds(now.nanoseconds))
        if client.firstEchoAt == nil { client.firstEchoAt = now }
        guard let pcm = try? decoder.decode(Array(payload)), !pcm.isEmpty else { return }
        var energy = 0.0
        for sample in pcm { energy += Double(sample) * Double(sample) }
        let loud = (energy / Double(pcm.count)).squareRoot() > 1000
        if loud, !client.pulseHeard, let sentAt = client.lastPulseSentAt {
            client.pulseHeard = true
            pulseLatencies.append(Double((now - sentAt).nanoseconds) / 1e6)
        }
    }

    /// Sessions by the millisecond (mod 20) their frames fall due in: each 1 ms tick visits only the
    /// sessions due then, so frames leave spread over the 20 ms like independent clients' would,
    /// not in bursts, and the tick does not walk every session.
    private var wheel = [[Client]](repeating: [], count: 20)
    private var lastWheelMillisecond: Int64?
    private var ticks = 0

    private func schedule(_ client: Client, at due: Instant) {
        wheel[Int((due.nanoseconds / 1_000_000) % 20)].append(client)
    }

    private func tick() {
        let now = Self.now()
        let millisecond = now.nanoseconds / 1_000_000
        let first = max((lastWheelMillisecond ?? millisecond - 1) + 1, millisecond - 19)
        lastWheelMillisecond = millisecond
        if first <= millisecond {
            for slotTime in first...millisecond {
                let slot = Int(slotTime % 20)
                wheel[slot].removeAll { client in !sendFrames(client, now: now) }
            }
        }
        ticks += 1
        // Timers (ICE checks, DTLS and SCTP retransmissions, events, setup timeouts) every 5 ms.
        guard ticks % 5 == 0 else { return }
        for client in clients where !client.failed && client.channel != nil {
            client.session.handleTimeout(now: now)
            if client.connectedAt == nil, now - client.startedAt > configuration.setupTimeout {
                fail(client, "not connected within \(configuration.setupTimeout)")
                continue
            }
            if let due = client.nextEvent, due <= now, let stop = client.stopAt, due < stop {
                let event = #"{"type":"parley.load.ping","sent_ns":\#(now.nanoseconds)}"#
                if client.session.sendDataChannelMessage(Array(event.utf8), binary: false, now: now) { client.eventsSent += 1 }
                client.nextEvent = due + configuration.dataChannelInterval
            }
            flush(client)
        }
        reportProgress(now: now)
    }

    /// Sends the client's due frames straight into a datagram each; false once it is done sending.
    private func sendFrames(_ client: Client, now: Instant) -> Bool {
        guard !client.failed, let channel = client.channel, let server = client.session.serverAddress,
              let stop = client.stopAt else { return false }
        while let due = client.nextFrame, due <= now {
            guard due < stop else { return false }
            let frame: [UInt8]
            if pulsePackets.isEmpty {
                withUnsafeBytes(of: now.nanoseconds.bigEndian) { time in
                    audioPayload.withUnsafeMutableBytes { $0.copyMemory(from: time) }
                }
                frame = audioPayload
            } else {
                frame = pulsePackets[client.sent % pulsePackets.count]
                if client.sent % pulsePackets.count == 0 {
                    client.lastPulseSentAt = now
                    client.pulseHeard = false
                }
            }
            var buffer = channel.allocator.buffer(capacity: RTPHeader.fixedLength + frame.count + SRTPContext.maximumOverhead)
            let written = frame.withUnsafeBytes { payload in
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: buffer.capacity) { bytes in
                    client.session.writeAudio(payload, timestamp: client.timestamp, into: bytes) ?? 0
                }
            }
            guard written > 0 else { return false }
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: server.socketAddress, data: buffer), promise: nil)
            sendLags.append(Double((now - due).nanoseconds) / 1e6)
            client.timestamp &+= 960
            client.sent += 1
            client.nextFrame = due + .milliseconds(20)
        }
        return true
    }

    private var lastProgress = Instant.zero
    private var runStartedAt = Instant.zero
    private var lastProgressCPU = 0.0
    private var peakCPU = 0.0

    private func reportProgress(now: Instant) {
        guard now - lastProgress >= .seconds(1) else { return }
        let cpu = Self.threadCPUSeconds()
        let fraction = (cpu - lastProgressCPU) / (Double((now - lastProgress).nanoseconds) / 1e9)
        // Saturation is judged on steady media: handshakes while sessions start cost more, briefly.
        let settled = clients.count == configuration.sessions && clients.allSatisfy { $0.failed || $0.connectedAt != nil }
        if settled { peakCPU = max(peakCPU, fraction) }
        lastProgress = now
        lastProgressCPU = cpu
        guard let progress else { return }
        let connected = clients.filter { $0.connectedAt != nil }.count
        let connecting = clients.filter { $0.connectedAt == nil && !$0.failed }.count
        let open = clients.filter { $0.dataChannelOpenAt != nil }.count
        let sent = clients.reduce(0) { $0 + $1.sent }, echoed = clients.reduce(0) { $0 + $1.echoed }
        let elapsed = Double((now - runStartedAt).nanoseconds) / 1e9
        // A session counts as failed once it gave up (refused, or not connected within the setup timeout).
        progress(String(format: "%5.1fs ", elapsed)
                 + "sessions \(clients.count)/\(configuration.sessions) connecting \(connecting) connected \(connected) "
                 + "channels \(open) failed \(failures.count) packets sent \(sent) echoed \(echoed) "
                 + "client CPU \(Int(saturating: fraction * 100))%")
    }

    private func flush(_ client: Client) {
        guard let channel = client.channel, let server = client.session.serverAddress else { return }
        let transmits = client.session.takeTransmits()
        guard !transmits.isEmpty else { return }
        let destination = server.socketAddress
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
        func steps(_ at: (Client) -> Instant?) -> LoadReport.Percentiles? {
            .init(clients.compactMap { client in at(client).map { Double(($0 - client.startedAt).nanoseconds) / 1e6 } })
        }
        let sent = clients.reduce(0) { $0 + $1.sent }, echoed = clients.reduce(0) { $0 + $1.echoed }
        let lag = LoadReport.Percentiles(sendLags)
        // Frames leave on a 1 ms tick, so up to about 1 ms late by design; far more means the
        // generator's thread could not keep up.
        let saturated = peakCPU >= 0.9 || (lag?.p99 ?? 0) > 10
        return LoadReport(
            sessions: configuration.sessions, connected: connected.count, failed: failures.count,
            failures: Array(Set(failures)).sorted().prefix(10).map { String($0) },
            setup: .init(answer: steps(\.answerAt), ice: steps(\.iceAt), dtls: steps(\.connectedAt),
                         firstEchoedAudio: steps(\.firstEchoAt), dataChannelOpen: steps(\.dataChannelOpenAt)),
            audio: .init(packetsSent: sent, packetsEchoed: echoed, echoRatio: sent == 0 ? 0 : Double(echoed) / Double(sent),
                         packetsLost: clients.reduce(0) { $0 + max(0, Int($1.stream.cumulativeLost)) },
                         jitterMilliseconds: .init(connected.filter { $0.stream.packetsReceived > 1 }
                             .map { Double($0.stream.jitterInTimestampUnits) / 48 }),
                         echoLatencyMilliseconds: .init(echoLatencies),
                         pulseLatencyMilliseconds: .init(pulseLatencies)),
            roundTripMilliseconds: .init(connected.compactMap { $0.session.roundTripTime.map { Double($0.nanoseconds) / 1e6 } }),
            dataChannel: .init(opened: clients.filter { $0.dataChannelOpenAt != nil }.count,
                               startedWithSNAP: clients.filter(\.session.answeredSNAP).count,
                               messagesSent: clients.reduce(0) { $0 + $1.eventsSent },
                               messagesEchoed: clients.reduce(0) { $0 + $1.eventsEchoed },
                               echoLatencyMilliseconds: .init(dataChannelLatencies)),
            client: .init(cpuSeconds: cpu, wallSeconds: Double(wall.nanoseconds) / 1e9, peakCPUPercent: peakCPU * 100,
                          sendLagMilliseconds: lag, saturated: saturated,
                          warning: saturated ? "the load generator saturated its core (peak \(Int(saturating: peakCPU * 100))% CPU, "
                              + "p99 send lag \(String(format: "%.1f", lag?.p99 ?? 0)) ms): figures show its limit, not the server's" : nil),
            dtlsVersions: connected.reduce(into: [:]) { counts, client in
                if let version = client.session.dtlsVersion { counts[version.description, default: 0] += 1 }
            })
    }

    /// The send time a `parley.load.ping` event carries back.
    static func sentNanoseconds(inEvent payload: [UInt8]) -> Int64? {
        let key = Array(#""sent_ns":"#.utf8)
        guard let start = payload.firstRange(of: key)?.upperBound else { return nil }
        var value: Int64 = 0
        var index = start
        while index < payload.count, payload[index] >= 0x30, payload[index] <= 0x39 {
            value = value * 10 + Int64(payload[index] - 0x30)
            index += 1
        }
        return index > start ? value : nil
    }

    /// Each session receives one audio stream; its SSRC is not needed to tell streams apart.
    static let echoedStream: UInt32 = 1

    static func now() -> Instant { Instant(nanoseconds: Int64(clamping: NIODeadline.now().uptimeNanoseconds)) }

    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// CPU time of the calling thread: the generator runs on one, and its share of a core is what saturates.
    static func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
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
            generator.receive(unwrapInboundIn(data), client: client)
        }
    }
}
