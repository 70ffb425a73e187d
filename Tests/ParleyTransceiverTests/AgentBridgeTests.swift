import Foundation
import ParleyMedia
import ParleySCTP
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

/// An agent that records what the bridge gives it; tests drive its output by hand.
final class RecordingAgent: VoiceAgent {
    let sampleRate: OpusSampleRate
    var start: AgentSessionStart?
    var output: AgentOutput?
    var frames: [(at: Instant, samples: Int, level: Double)] = []
    var messages: [(label: String, payload: [UInt8])] = []
    var endedReason: String?

    init(sampleRate: OpusSampleRate = .hz16000) { self.sampleRate = sampleRate }

    func sessionStarted(_ start: AgentSessionStart, output: AgentOutput, now: Instant) {
        self.start = start
        self.output = output
    }

    func audio(_ frame: [Int16], now: Instant) {
        frames.append((now, frame.count, VoiceActivityDetector.level(frame)))
    }

    func dataChannelMessage(label: String, binary: Bool, payload: [UInt8], now: Instant) {
        messages.append((label, payload))
    }

    func sessionEnded(reason: String, now: Instant) { endedReason = reason }
}

/// The call between the in-memory client and the session with an agent behind a bridge: the
/// agent protocol's guarantees (steady input clock, paced output with continuous timestamps,
/// barge-in within a frame, events on oai-events), on a virtual clock.
@Suite struct AgentBridgeTests {
    static func call(agent: VoiceAgent, openEvents: Bool = true) throws -> SessionTests.Call {
        let call = try SessionTests.Call()
        call.bridge = try AgentBridge(agent: agent, session: call.session, now: call.now)
        call.connect()
        if openEvents {
            // The client opens oai-events as browsers do: SCTP, then DCEP OPEN on stream 0.
            call.deliver(fromClient: call.client.startSCTP(now: call.now))
            let label = Array("oai-events".utf8)
            let open: [UInt8] = [0x03, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, UInt8(label.count), 0, 0] + label
            call.client.sctp?.send(stream: 0, protocolIdentifier: 50, payload: open, unordered: false, now: call.now)
            call.deliver(fromClient: call.client.sctpOutgoing())
        }
        return call
    }

    /// Text messages the client got on its data channels (DCEP ACKs left out).
    static func clientMessages(_ call: SessionTests.Call) -> [String] {
        (call.client.sctp?.takeEvents() ?? []).compactMap { event in
            guard case .message(_, let identifier, let payload, _) = event, identifier == 51 else { return nil }
            return String(decoding: payload, as: UTF8.self)
        }
    }

    static func types(_ messages: [String]) -> [String] {
        messages.compactMap { text in
            (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["type"] as? String
        }
    }

    static func tone(_ frames: Int, rate: OpusSampleRate, amplitude: Double = 8000, frequency: Double = 440) -> [[Int16]] {
        let perFrame = rate.samplesPer20Milliseconds
        return (0..<frames).map { frame in
            (0..<perFrame).map { Int16(sin(2 * .pi * frequency * Double(frame * perFrame + $0) / Double(rate.rawValue)) * amplitude) }
        }
    }

    @Test func sessionStartTellsTheAgentItsRateAndTheOffer() throws {
        let agent = RecordingAgent(sampleRate: .hz24000)
        let call = try Self.call(agent: agent, openEvents: false)
        let start = try #require(agent.start)
        #expect(start.callID == "call-1")
        #expect(start.sampleRate == 24000 && start.frameSamples == 480)
        #expect(start.offer.opusParameters.contains("useinbandfec=1"))
        call.session.close(.hangup, now: call.now)
        call.collectEvents()
        #expect(agent.endedReason == "hangup")
        #expect(agent.output?.sendAudio([Int16](repeating: 0, count: 480)) == false, "nothing after the end")
    }

    /// Packets lost, swapped and late: the agent still gets exactly one frame every 20 ms.
    @Test func callerAudioReachesTheAgentOnASteadyClock() throws {
        let agent = RecordingAgent()
        let call = try Self.call(agent: agent, openEvents: false)
        let encoder = try OpusEncoder(sampleRate: .hz48000, expectedLossPercent: 20)
        let packets = try Self.tone(100, rate: .hz48000).enumerated().map { index, frame in
            call.client.audioPacket(timestamp: UInt32(index * 960), payload: try encoder.encode(frame))
        }
        for step in 0..<100 {
            var arriving: [[UInt8]] = []
            switch step {
            case 10, 40: break                           // lost
            case 20: arriving = [packets[21]]            // 20 and 21 swapped
            case 21: arriving = [packets[20]]
            case 30: break                               // 30 arrives 100 ms late
            case 35: arriving = [packets[35], packets[30]]
            default: arriving = [packets[step]]
            }
            call.deliver(fromClient: arriving)
            call.advance(by: .milliseconds(20))
        }
        call.advance(by: .milliseconds(200))
        #expect(agent.frames.count >= 100, "playout runs on after the last packet: concealed frames")
        #expect(agent.frames.allSatisfy { $0.samples == 320 })
        let gaps = zip(agent.frames, agent.frames.dropFirst()).map { $1.at - $0.at }
        #expect(gaps.allSatisfy { $0 == .milliseconds(20) }, "one frame every 20 ms, never two at once or a gap")
        let bridge = try #require(call.bridge)
        #expect(bridge.incoming.framesRepaired + bridge.incoming.framesConcealed >= 2, "the two lost packets were filled in")
        #expect(bridge.incoming.packetsLate == 1)
        // The tone came through the codec: the frames carry its energy, not silence.
        #expect(agent.frames[20...80].filter { $0.level > -25 }.count >= 55)
    }

    /// A second of audio handed over at once leaves at one packet per 20 ms with continuous RTP
    /// timestamps, framed by output_audio_buffer.started and .stopped on oai-events.
    @Test func agentAudioIsPacedWithContinuousTimestampsAndReported() throws {
        let agent = RecordingAgent()
        let call = try Self.call(agent: agent)
        _ = Self.clientMessages(call)
        let output = try #require(agent.output)
        for frame in Self.tone(50, rate: .hz16000) { #expect(output.sendAudio(frame)) }
        #expect(output.queuedFrames == 50)
        var received: [Int] = []
        for _ in 0..<60 {
            call.advance(by: .milliseconds(20))
            received.append(call.client.audio.count)
        }
        #expect(call.client.audio.count == 50)
        #expect(zip(received, received.dropFirst()).allSatisfy { $1 - $0 <= 1 }, "never more than one packet per 20 ms")
        let timestamps = call.client.audio.map(\.timestamp)
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { $1 &- $0 == 960 })
        let sequences = call.client.audio.map(\.sequence)
        #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $1 &- $0 == 1 })
        #expect(Self.types(Self.clientMessages(call)) == ["output_audio_buffer.started", "output_audio_buffer.stopped"])
    }

    @Test func clearDuringPlaybackStopsOutputWithinOneFrame() throws {
        let agent = RecordingAgent()
        let call = try Self.call(agent: agent)
        _ = Self.clientMessages(call)
        let output = try #require(agent.output)
        for frame in Self.tone(100, rate: .hz16000) { output.sendAudio(frame) }
        call.advance(by: .milliseconds(300))
        let before = call.client.audio.count
        #expect((14...16).contains(before))
        output.clearAudio()
        #expect(output.queuedFrames == 0)
        call.advance(by: .milliseconds(500))
        #expect(call.client.audio.count <= before + 1)
        #expect(Self.types(Self.clientMessages(call)) == ["output_audio_buffer.started", "output_audio_buffer.cleared"])
    }

    @Test func dataChannelMessagesReachTheAgentAndItsRepliesTheClient() throws {
        let agent = RecordingAgent()
        let call = try Self.call(agent: agent)
        _ = Self.clientMessages(call)
        call.client.sctp?.send(stream: 0, protocolIdentifier: 51, payload: Array(#"{"type":"hello"}"#.utf8), unordered: false, now: call.now)
        call.deliver(fromClient: call.client.sctpOutgoing())
        #expect(agent.messages.map(\.label) == ["oai-events"])
        #expect(agent.messages.first.map { String(decoding: $0.payload, as: UTF8.self) } == #"{"type":"hello"}"#)
        #expect(agent.output?.sendDataChannelMessage(label: "oai-events", payload: Array(#"{"type":"reply"}"#.utf8)) == true)
        #expect(agent.output?.sendDataChannelMessage(label: "no-such-channel", payload: [1]) == false)
        call.deliver(fromClient: [])
        #expect(Self.clientMessages(call) == [#"{"type":"reply"}"#])
    }

    @Test func agentHangUpEndsTheCallWithItsReason() throws {
        let agent = RecordingAgent()
        let call = try Self.call(agent: agent, openEvents: false)
        agent.output?.hangUp(reason: "goodbye")
        call.collectEvents()
        #expect(call.session.isClosed)
        #expect(call.events.contains(.closed(.agent("goodbye"))))
        #expect(agent.endedReason == CloseReason.agent("goodbye").description)
    }

    // MARK: parrot

    /// Speech-like bursts: the parrot waits for the end of each turn (500 ms of hangover), plays the
    /// utterance back, reports the turn; speaking during playback clears it (barge-in).
    @Test func parrotPlaysEachTurnBackAndYieldsToBargeIn() throws {
        let parrot = ParrotAgent()
        let call = try Self.call(agent: parrot)
        _ = Self.clientMessages(call)
        let encoder = try OpusEncoder(sampleRate: .hz48000)
        let quiet = Self.tone(1, rate: .hz48000, amplitude: 20, frequency: 97)[0]
        let loud = Self.tone(60, rate: .hz48000, amplitude: 9000, frequency: 220)
        // 1 s quiet, 1.2 s speech, 1.2 s quiet: the turn ends 500 ms after the speech and its reply starts.
        let script: [[Int16]] = Array(repeating: quiet, count: 50) + loud + Array(repeating: quiet, count: 60)
        var frame = 0
        func send(_ frames: [[Int16]]) throws {
            for pcm in frames {
                call.deliver(fromClient: [call.client.audioPacket(timestamp: UInt32(frame * 960), payload: try encoder.encode(pcm))])
                call.advance(by: .milliseconds(20))
                frame += 1
            }
        }
        try send(script)
        #expect(parrot.turns == 1)
        let firstTurn = Self.clientMessages(call)
        #expect(Self.types(firstTurn).prefix(2) == ["parrot.turn", "output_audio_buffer.started"])
        let turn = try #require(firstTurn.first.flatMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        #expect(turn["turn_detection_ms"] as? Int == 500, "25 frames of hangover")
        #expect((1100...1300).contains(turn["speech_ms"] as? Int ?? 0))
        // The reply (preroll + speech + hangover, about 1.9 s) plays out in full, then stops.
        var messages: [String] = []
        for _ in 0..<100 where !Self.types(messages).contains("output_audio_buffer.stopped") {
            try send([quiet])
            messages += Self.clientMessages(call)
        }
        #expect(Self.types(messages) == ["output_audio_buffer.stopped"])
        let played = call.client.audio.count
        #expect((85...100).contains(played), "the whole utterance: \(played) frames")
        let timestamps = call.client.audio.map(\.timestamp)
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { $1 &- $0 == 960 })

        // A second turn (the jitter buffer holds 40 ms, so the agent hears it 2 frames later);
        // 400 ms into its reply the caller speaks again: the reply is cleared at once.
        try send(loud + Array(repeating: quiet, count: 30))
        #expect(parrot.turns == 2)
        try send(Array(repeating: quiet, count: 20))
        #expect(call.client.audio.count > played + 15, "the second reply is playing")
        var spoken = 0
        while parrot.bargeIns == 0, spoken < 10 {
            try send([loud[spoken]])
            spoken += 1
        }
        #expect(parrot.bargeIns == 1)
        #expect((3...5).contains(spoken), "three voiced frames confirm the onset (plus the jitter buffer's delay)")
        let afterBargeIn = call.client.audio.count
        try send(Array(loud[spoken..<(spoken + 5)]) + Array(repeating: quiet, count: 10))
        #expect(call.client.audio.count <= afterBargeIn + 1, "output stopped within a frame")
        let types = Self.types(Self.clientMessages(call))
        #expect(types.contains("parrot.barge_in") && types.contains("output_audio_buffer.cleared"))
    }

    @Test func voiceActivityDetectorNeedsAnOnsetAndAHangover() {
        var detector = VoiceActivityDetector()
        let quiet = Self.tone(1, rate: .hz16000, amplitude: 30)[0]
        let loud = Self.tone(1, rate: .hz16000, amplitude: 8000)[0]
        var transitions: [(Int, VoiceActivityDetector.Transition)] = []
        // Quiet, a 40 ms click (too short), quiet, 1 s speech with a 300 ms pause inside, quiet.
        let frames = Array(repeating: quiet, count: 50) + [loud, loud] + Array(repeating: quiet, count: 20)
            + Array(repeating: loud, count: 20) + Array(repeating: quiet, count: 15) + Array(repeating: loud, count: 20)
            + Array(repeating: quiet, count: 40)
        for (index, frame) in frames.enumerated() {
            if let transition = detector.process(frame) { transitions.append((index, transition)) }
        }
        #expect(transitions.map(\.1) == [.speechStarted, .speechEnded], "the click and the pause are not turns")
        #expect(transitions.first?.0 == 72 + 2, "onset confirmed on the third voiced frame")
        #expect(transitions.last?.0 == 72 + 20 + 15 + 20 + 24, "ended after 25 unvoiced frames")
    }
}
