import NIOCore
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// `--agent` URLs and the agent protocol's JSON from the agent: what is accepted, what fails the link.
@Suite struct AgentEndpointTests {
    @Test func urlsParseToHostPortPathAndTLS() {
        #expect(AgentEndpoint(url: "ws://127.0.0.1:9000/") == AgentEndpoint(url: "ws://127.0.0.1:9000"))
        let plain = AgentEndpoint(url: "ws://agents.internal/v1/voice")
        #expect(plain?.host == "agents.internal" && plain?.port == 80 && plain?.path == "/v1/voice" && plain?.tls == false)
        let secure = AgentEndpoint(url: "wss://agents.internal:8443/x")
        #expect(secure?.port == 8443 && secure?.tls == true && secure?.description == "wss://agents.internal:8443/x")
        #expect(AgentEndpoint(url: "wss://agents.internal")?.port == 443)
        let v6 = AgentEndpoint(url: "ws://[::1]:9000/a")
        #expect(v6?.host == "::1" && v6?.port == 9000 && v6?.path == "/a")
        #expect(v6?.hostHeader == "[::1]:9000" && v6?.description == "ws://[::1]:9000/a")
        #expect(AgentEndpoint(url: "wss://[2001:db8::1]")?.port == 443)
        for bad in ["http://x/", "ws://", "ws://:80/", "ws://host:0/", "ws://host:70000/", "ws://[::1/", "ws://[::1]x/", "parrot"] {
            #expect(AgentEndpoint(url: bad) == nil, "\(bad)")
        }
    }

    @Test func agentMessagesDecodeOrFailTheLink() {
        #expect(AgentWire.decode(text: #"{"type":"session.accept","sample_rate":24000}"#) == .accept(.hz24000))
        #expect(AgentWire.decode(text: #"{"type":"audio.clear"}"#) == .clearAudio)
        #expect(AgentWire.decode(text: #"{"type":"session.hangup","reason":"bye"}"#) == .hangUp("bye"))
        #expect(AgentWire.decode(text: #"{"type":"data_channel.send","label":"oai-events","data":"{}"}"#)
                == .dataChannelSend(label: "oai-events", binary: false, payload: Array("{}".utf8)))
        #expect(AgentWire.decode(text: #"{"type":"data_channel.send","label":"x","binary":true,"data":"AAEC"}"#)
                == .dataChannelSend(label: "x", binary: true, payload: [0, 1, 2]))
        for bad in [#"{"type":"session.accept","sample_rate":44100}"#, #"{"type":"session.accept","sample_rate":99999999999}"#,
                    #"{"type":"data_channel.send","label":"x","binary":true,"data":"***"}"#, #"{"type":"nope"}"#, "[1,2]", "not json"] {
            guard case .failed = AgentWire.decode(text: bad) else {
                Issue.record("accepted \(bad)")
                continue
            }
        }
    }

    /// Agent audio: one 20 ms frame of PCM16 little-endian per binary message, at the accepted rate.
    @Test func audioFramesAreExactlyOneFrameOfLittleEndianPCM() {
        var buffer = ByteBuffer()
        let frame = (0..<320).map { Int16(truncatingIfNeeded: $0 * 97 - 15000) }
        AgentWire.encode(audio: frame, into: &buffer)
        #expect(buffer.readableBytes == 640)
        #expect(buffer.getInteger(at: 0, endianness: .little, as: Int16.self) == frame[0])
        #expect(AgentWire.decode(audio: buffer, sampleRate: .hz16000) == .audio(frame))
        for wrong in [0, 1, 639, 641, 960] {
            guard case .failed(let reason) = AgentWire.decode(audio: ByteBuffer(bytes: [UInt8](repeating: 1, count: wrong)),
                                                              sampleRate: .hz16000) else {
                Issue.record("accepted \(wrong) bytes")
                continue
            }
            #expect(reason.contains("640"))
        }
    }
}
