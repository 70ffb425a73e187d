import ParleyMedia
import ParleyWire

/// What the transceiver tells an agent when its call starts (the `session.started` event of
/// docs/agent-protocol.md).
public struct AgentSessionStart: Sendable, Equatable, Codable {
    /// The call's id (the signaling API's, also in logs and metrics).
    public var callID: String
    /// PCM rate of every frame both ways: what the agent asked for.
    public var sampleRate: Int
    /// Samples per 20 ms frame at that rate.
    public var frameSamples: Int
    /// What the client offered: its Opus parameters (`a=fmtp`), whether it asked for a data channel.
    public var offer: Offer
    /// The call's session configuration (docs/api.md): a JSON object as text, `{}` when none was
    /// given. The app's server chose it (with its API key, or in the client secret it minted).
    public var session: String = "{}"

    public struct Offer: Sendable, Equatable, Codable {
        public var opusParameters: String
        public var dataChannel: Bool

        public init(opusParameters: String, dataChannel: Bool) {
            self.opusParameters = opusParameters
            self.dataChannel = dataChannel
        }
    }
}

/// A voice agent in the transceiver's process. The transceiver calls it on the call's media
/// thread: it must not block (hand slow work to another thread and come back through `AgentOutput`
/// on the same thread, or use the WebSocket protocol). The same protocol as over the WebSocket,
/// as Swift calls.
public protocol VoiceAgent: AnyObject {
    /// The PCM rate the agent works at; libopus decodes and encodes it natively.
    var sampleRate: OpusSampleRate { get }
    func sessionStarted(_ start: AgentSessionStart, output: AgentOutput, now: Instant)
    /// The caller's audio: one 20 ms frame of `frameSamples` PCM samples every 20 ms once audio
    /// flows, whatever the network did (late or lost packets are repaired or concealed).
    func audio(_ frame: [Int16], now: Instant)
    /// A message the client sent on one of its data channels.
    func dataChannelMessage(label: String, binary: Bool, payload: [UInt8], now: Instant)
    /// The call ended (the agent's `output` does nothing from now on).
    func sessionEnded(reason: String, now: Instant)
    /// The app's server changed the session configuration (the sideband's `session.update`): the
    /// whole new configuration, a JSON object as text.
    func sessionUpdated(_ session: String, now: Instant)
}

extension VoiceAgent {
    /// Built-in agents have no settings to change.
    public func sessionUpdated(_ session: String, now: Instant) {}
}

/// What an agent can do to its call. Confined to the call's media thread.
public final class AgentOutput {
    private weak var bridge: AgentBridge?

    init(bridge: AgentBridge) {
        self.bridge = bridge
    }

    /// Queues one 20 ms PCM frame at the agent's rate for paced playout; false (frame dropped) when
    /// the queue is full. The agent may send faster than real time up to `wantsMore`.
    @discardableResult
    public func sendAudio(_ frame: [Int16]) -> Bool { bridge?.enqueue(frame) ?? false }

    /// False once `AgentBridge.highWatermark` frames wait: the agent should pause until it is true again.
    public var wantsMore: Bool { bridge?.outgoing.wantsMore ?? false }

    /// Frames queued and not yet played.
    public var queuedFrames: Int { bridge?.outgoing.queuedFrames ?? 0 }

    /// Drops all queued audio at once (barge-in); the client gets `output_audio_buffer.cleared`.
    public func clearAudio() { bridge?.clearAudio() }

    /// Sends a message on the client's data channel with that label; false when no such channel is open.
    @discardableResult
    public func sendDataChannelMessage(label: String, binary: Bool = false, payload: [UInt8]) -> Bool {
        bridge?.send(label: label, binary: binary, payload: payload) ?? false
    }

    /// Ends the call with this reason.
    public func hangUp(reason: String) { bridge?.hangUp(reason: reason) }
}
