import ParleyMedia
import ParleyWire

/// The built-in `loopback` agent: each 20 ms PCM frame of the caller's goes straight back as the
/// agent's output, so the caller hears itself through the whole agent path — jitter buffer, Opus
/// decode, the output queue, Opus encode, pacing. `echo` skips all of that; the difference between
/// the two is what the agent path costs in latency and CPU (docs/benchmarks.md).
public final class LoopbackAgent: VoiceAgent {
    public let sampleRate: OpusSampleRate
    private var output: AgentOutput?

    public init(sampleRate: OpusSampleRate = .hz48000) { self.sampleRate = sampleRate }

    public func sessionStarted(_ start: AgentSessionStart, output: AgentOutput, now: Instant) { self.output = output }

    public func audio(_ frame: [Int16], now: Instant) { output?.sendAudio(frame) }

    public func dataChannelMessage(label: String, binary: Bool, payload: [UInt8], now: Instant) {
        output?.sendDataChannelMessage(label: label, binary: binary, payload: payload)
    }

    public func sessionEnded(reason: String, now: Instant) { output = nil }
}
