import Foundation
import NIOCore
import NIOPosix
import NIOWebSocket
import ParleySignaling
import Synchronization
import Testing
@testable import ParleyTransceiver

/// The WebSocket client's upgrade over real sockets, against a server that sends its frames and
/// its FIN right behind the 101 — what a transceiver refusing a forwarded sideband does. Every
/// frame must reach the reader, in order, before the end of the stream, however the bytes are cut
/// into segments and reads.
@Suite struct WebSocketClientUpgradeTests {
    /// How the eager server writes its answer.
    enum Cut: Sendable, CaseIterable {
        case oneWrite        // 101, frames and FIN in one segment
        case headThenFrames  // 101, then each frame in its own write a moment later, then FIN
        case byteByByte      // every byte its own write, after an interim 100 Continue
    }

    /// Answers one upgrade with a 101 (or `status`), a text frame, a close frame 4404, and FIN.
    final class EagerServer: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let cut: Cut
        let status: Int
        let answer: Bool
        /// Sent instead of a well-formed answer (then FIN), when given.
        let raw: [UInt8]?
        let delay: TimeAmount
        var request: [UInt8] = []
        var answered = false

        init(cut: Cut, status: Int = 101, answer: Bool = true, raw: [UInt8]? = nil, delay: TimeAmount = .zero) {
            self.cut = cut
            self.status = status
            self.answer = answer
            self.raw = raw
            self.delay = delay
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            guard !answered, answer else { return }
            request += buffer.readBytes(length: buffer.readableBytes) ?? []
            let text = String(decoding: request, as: UTF8.self)
            guard text.contains("\r\n\r\n") else { return }
            answered = true
            let keyLine = text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }
            let key = keyLine.map { String($0.dropFirst("sec-websocket-key:".count).drop { $0 == " " }) } ?? ""
            let nonce = Data(base64Encoded: key).map { Array($0) } ?? []
            let accept = nonce.count == 16 ? WebSocketClientHandshake(nonce: nonce).expectedAccept : "none"
            let head = status == 101
                ? "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n"
                : "HTTP/1.1 \(status) Nope\r\nContent-Length: 0\r\n\r\n"
            let frames: [[UInt8]] = status == 101 ? [[0x81, 5] + Array("hello".utf8), [0x82, 3, 1, 2, 3], [0x88, 2, 0x11, 0x34]] : []
            let channel = context.channel
            if let raw {
                channel.writeAndFlush(ByteBuffer(bytes: raw), promise: nil)
                channel.close(mode: .output, promise: nil)
                return
            }
            @Sendable func write(_ bytes: [UInt8]) { channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil) }
            switch cut {
            case .oneWrite:
                write(Array(head.utf8) + frames.joined())
                channel.close(mode: .output, promise: nil)
            case .headThenFrames:
                write(Array(head.utf8))
                channel.eventLoop.scheduleTask(in: delay) {
                    for frame in frames { write(frame) }
                    channel.close(mode: .output, promise: nil)
                }
            case .byteByByte:
                for byte in Array(("HTTP/1.1 100 Continue\r\n\r\n" + head).utf8) + frames.joined() { write([byte]) }
                channel.close(mode: .output, promise: nil)
            }
        }
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
    }

    static func server(_ make: @escaping @Sendable () -> EagerServer) async throws -> Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(make()) } }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    static func dial(_ port: Int, timeout: TimeAmount = .seconds(5)) async throws -> NIOAsyncChannel<WebSocketFrame, WebSocketFrame> {
        let upgrade = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try WebSocketClientUpgradeHandler<NIOAsyncChannel<WebSocketFrame, WebSocketFrame>>.install(
                        on: channel, host: "127.0.0.1:\(port)", path: "/v1/realtime?call_id=rtc_x", maxFrameSize: 1 << 16, timeout: timeout
                    ) { channel in try NIOAsyncChannel(wrappingChannelSynchronously: channel) }
                }
            }
        return try await upgrade.get()
    }

    /// A lost frame or EOF would leave the reader waiting: the time limit turns that into a failure.
    @Test(.timeLimit(.minutes(1)), arguments: Cut.allCases)
    func framesThatCameWithThe101AndTheFINAreAllRead(cut: Cut) async throws {
        let attempts = Counter()
        // The pause between the 101 and the frames steps through 0-300 µs (the same each run).
        let server = try await Self.server { EagerServer(cut: cut, delay: .microseconds(Int64(attempts.next() % 16) * 20)) }
        let port = try #require(server.localAddress?.port)
        for attempt in 0..<(cut == .byteByByte ? 20 : 200) {
            let link = try await Self.dial(port)
            let received = try await link.executeThenClose { inbound, _ in
                var frames: [String] = []
                for try await frame in inbound {
                    var data = frame.unmaskedData
                    frames.append("\(frame.opcode):\(data.readBytes(length: data.readableBytes) ?? [])")
                }
                return frames
            }
            #expect(received == ["WebSocketOpcode.text:\(Array("hello".utf8))", "WebSocketOpcode.binary:[1, 2, 3]",
                                 "WebSocketOpcode.connectionClose:[17, 52]"], "attempt \(attempt)")
        }
        try await server.close()
    }

    @Test(.timeLimit(.minutes(1)))
    func aRefusalSilenceOrAnythingButAnUpgradeFailsTheDial() async throws {
        func fails(answering raw: [UInt8], with reason: String) async throws {
            let server = try await Self.server { EagerServer(cut: .oneWrite, raw: raw) }
            await #expect { try await Self.dial(server.localAddress!.port!) } throws: { "\($0)".contains(reason) }
            try await server.close()
        }
        try await fails(answering: Array("SSH-2.0-OpenSSH_9.2\r\n\r\n".utf8), with: "not an HTTP/1.1 status line")
        try await fails(answering: Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8),
                        with: "Sec-WebSocket-Accept")
        try await fails(answering: Array("HTTP/1.1 101 Switching Protocols\r\nX: ".utf8) + [UInt8](repeating: 0x61, count: 20_000),
                        with: "longer than")
        try await fails(answering: Array("HTTP/1.1 101 Switch".utf8), with: "closed")  // FIN before the head ends

        let refusing = try await Self.server { EagerServer(cut: .oneWrite, status: 403) }
        await #expect { try await Self.dial(refusing.localAddress!.port!) } throws: { "\($0)".contains("answered 403") }
        // A server that sends nothing but FIN.
        try await fails(answering: [], with: "closed")
        try await refusing.close()

        let silent = try await Self.server { EagerServer(cut: .oneWrite, answer: false) }
        await #expect { try await Self.dial(silent.localAddress!.port!, timeout: .milliseconds(200)) } throws: {
            "\($0)".contains("no WebSocket upgrade within")
        }
        try await silent.close()
    }
}
