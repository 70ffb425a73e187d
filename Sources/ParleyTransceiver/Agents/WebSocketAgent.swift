import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ParleyMedia
import ParleySession
import ParleyWire

/// Where an external agent listens: `ws://` or `wss://host[:port][/path]` (docs/agent-protocol.md).
public struct AgentEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var path: String
    /// `wss://`: TLS to the agent, its certificate checked against the host name (or IP address).
    public var tls: Bool

    /// Nil for anything but a `ws://` or `wss://` URL with a host.
    public init?(url: String) {
        if url.hasPrefix("wss://") {
            tls = true
        } else if url.hasPrefix("ws://") {
            tls = false
        } else {
            return nil
        }
        let rest = url.dropFirst(tls ? "wss://".count : "ws://".count)
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        if authority.hasPrefix("[") {
            // An IPv6 literal: [address] or [address]:port.
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.isEmpty {
                port = tls ? 443 : 80
            } else {
                guard after.hasPrefix(":"), let port = Int(after.dropFirst()), (1...65535).contains(port) else { return nil }
                self.port = port
            }
        } else if let colon = authority.lastIndex(of: ":") {
            guard let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            host = String(authority[..<colon])
            self.port = port
        } else {
            host = String(authority)
            port = tls ? 443 : 80
        }
        guard !host.isEmpty else { return nil }
    }

    public var description: String { "\(tls ? "wss" : "ws")://\(hostHeader)\(path)" }

    /// The authority as the `Host` header says it (an IPv6 address in brackets).
    var hostHeader: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension AgentWire {
    /// One binary message from the agent: a 20 ms PCM16 frame.
    static func decode(audio bytes: ByteBuffer, sampleRate: OpusSampleRate) -> AgentMessage {
        bytes.withUnsafeReadableBytes { decode(audio: $0, sampleRate: sampleRate) }
    }

    static func encode(audio frame: [Int16], into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(frame.count * 2)
        for sample in frame { buffer.writeInteger(sample, endianness: .little) }
    }
}

/// One call's WebSocket to its external agent. It lives on the call's media event loop: frames in
/// are handed to `onMessage` there, frames out never wait (audio for an agent that does not keep up
/// is dropped and counted, so a slow agent cannot hold the media loop or grow memory).
final class WebSocketAgentLink: @unchecked Sendable {
    /// Bytes written toward the agent and not yet taken by its socket, past which the agent is
    /// considered gone: it stopped reading (audio alone is dropped sooner, at the channel's watermark).
    static let maximumUnsentBytes = 1 << 20

    private let eventLoop: EventLoop
    private let onMessage: (AgentMessage) -> Void
    private var channel: Channel?
    /// The connection before its upgrade completed: what `close` must close if it comes first.
    private var connecting: Channel?
    private var unsentBytes = 0
    private var pendingText: [String] = []
    private var closing = false
    private var failed = false
    /// Set once the agent accepted: binary frames are decoded at this rate.
    var sampleRate: OpusSampleRate?
    private(set) var audioFramesDropped = 0

    init(eventLoop: EventLoop, onMessage: @escaping (AgentMessage) -> Void) {
        self.eventLoop = eventLoop
        self.onMessage = onMessage
    }

    /// Connects and upgrades; `first` is sent as soon as the WebSocket is open. Failures arrive as `.failed`.
    func connect(to endpoint: AgentEndpoint, first: String, tls: NIOSSLContext?, timeout: TimeAmount = .seconds(2)) {
        eventLoop.preconditionInEventLoop()
        pendingText.append(first)
        let link = self
        guard !endpoint.tls || tls != nil else { return fail("no TLS context for \(endpoint)") }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP (at SOL_SOCKET this would be SO_DEBUG)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    link.connecting = channel
                    if endpoint.tls, let tls {
                        // SNI carries host names only; an IP address is checked against the certificate's IP SANs.
                        let hostname = IPv4Address(endpoint.host) == nil && !endpoint.host.contains(":") ? endpoint.host : nil
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: hostname))
                    }
                    // Frames the agent sends with its 101 are kept (WebSocketClientUpgradeHandler says why not NIO's).
                    let negotiated = try WebSocketClientUpgradeHandler<Void>.install(
                        on: channel, host: endpoint.hostHeader, path: endpoint.path,
                        maxFrameSize: 1 << 20, timeout: timeout
                    ) { channel in
                        try channel.pipeline.syncOperations.addHandler(
                            NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                                                        maxAccumulatedFrameSize: 1 << 20))
                        try channel.pipeline.syncOperations.addHandler(WebSocketAgentHandler(link: link))
                    }
                    negotiated.whenComplete { result in
                        switch result {
                        // Only now is the channel a WebSocket: frames can be written.
                        case .success: link.opened(channel)
                        case .failure(let error): link.fail("agent at \(endpoint) failed the WebSocket upgrade: \(error)")
                        }
                    }
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .whenFailure { error in link.fail("agent at \(endpoint) unreachable: \(error)") }
    }

    fileprivate func opened(_ channel: Channel) {
        self.channel = channel
        if closing {
            channel.close(promise: nil)
            return
        }
        for text in pendingText { write(text: text) }
        pendingText.removeAll()
    }

    fileprivate func received(_ frame: WebSocketFrame) {
        // After a failure or our close, nothing the agent still sends counts.
        guard !failed, !closing else { return }
        switch frame.opcode {
        case .text:
            onMessage(AgentWire.decode(text: String(buffer: frame.unmaskedData)))
        case .binary:
            guard let sampleRate else { return fail("agent sent audio before session.accept") }
            onMessage(AgentWire.decode(audio: frame.unmaskedData, sampleRate: sampleRate))
        case .connectionClose:
            fail("agent closed the WebSocket")
        case .ping:
            send(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
        default:
            break
        }
    }

    fileprivate func inactive() {
        if !closing { fail("agent connection dropped") }
    }

    func fail(_ reason: String) {
        guard !failed, !closing else { return }
        failed = true
        (channel ?? connecting)?.close(promise: nil)
        onMessage(.failed(reason))
    }

    func write(text: String) {
        guard channel != nil else { return pendingText.append(text) }
        send(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)))
    }

    func write(audio frame: [Int16]) {
        guard let channel, !closing else { return }
        // The agent reads too slowly: drop rather than queue without bound.
        guard channel.isWritable else {
            audioFramesDropped += 1
            return
        }
        var buffer = channel.allocator.buffer(capacity: frame.count * 2)
        AgentWire.encode(audio: frame, into: &buffer)
        send(WebSocketFrame(fin: true, opcode: .binary, data: buffer))
    }

    /// Stops or resumes reading the agent's frames: TCP then holds back an agent that sends audio
    /// faster than the queue takes it.
    func setReading(_ reading: Bool) {
        channel?.setOption(.autoRead, value: reading).whenFailure { _ in }
    }

    /// Sends `last` (if any) and a close frame, then closes — at once if the connection is not up
    /// yet, within a second if the agent does not take the close frame. Nothing is reported after this.
    func close(after last: String? = nil) {
        guard !closing else { return }
        if let last { write(text: last) }
        closing = true
        guard let channel else {
            connecting?.close(promise: nil)
            return
        }
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(),
                                             data: ByteBuffer(bytes: [0x03, 0xE8]))).whenComplete { _ in
            channel.close(promise: nil)
        }
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }

    private func send(_ frame: WebSocketFrame) {
        guard let channel else { return }
        var frame = frame
        frame.maskKey = .random()  // RFC 6455 §5.3: every client frame is masked
        let size = frame.length
        unsentBytes += size
        guard unsentBytes <= Self.maximumUnsentBytes else { return fail("agent stopped reading its connection") }
        let link = self
        channel.writeAndFlush(frame).whenComplete { _ in link.unsentBytes -= size }
    }
}

private final class WebSocketAgentHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    let link: WebSocketAgentLink

    init(link: WebSocketAgentLink) { self.link = link }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { link.received(unwrapInboundIn(data)) }

    func channelInactive(context: ChannelHandlerContext) {
        link.inactive()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        link.fail("agent connection error: \(error)")
        context.close(promise: nil)
    }
}

/// The `VoiceAgent` the bridge talks to for an external agent: it forwards over the link.
final class WebSocketVoiceAgent: VoiceAgent {
    let sampleRate: OpusSampleRate
    let link: WebSocketAgentLink
    private(set) var output: AgentOutput?

    init(sampleRate: OpusSampleRate, link: WebSocketAgentLink) {
        self.sampleRate = sampleRate
        self.link = link
    }

    func sessionStarted(_ start: AgentSessionStart, output: AgentOutput, now: Instant) { self.output = output }

    func audio(_ frame: [Int16], now: Instant) { link.write(audio: frame) }

    func dataChannelMessage(label: String, binary: Bool, payload: [UInt8], now: Instant) {
        link.write(text: AgentWire.dataChannelMessage(label: label, binary: binary, payload: payload))
    }

    func sessionEnded(reason: String, now: Instant) {
        output = nil
        link.close(after: AgentWire.sessionEnded(reason: reason))
    }
}
