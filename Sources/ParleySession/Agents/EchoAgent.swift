import ParleyWire

/// The built-in `echo` agent: every Opus frame the client sends goes straight back to it,
/// re-packetized on Parley's own SSRC and sequence numbers (the session does that) with the
/// client's timing kept (its timestamps, shifted onto a random base of ours). It adds no
/// buffering, so it is also the instrument for measuring media latency.
public struct EchoAgent: Sendable {
    private let timestampOffset: UInt32

    public init<G: RandomNumberGenerator>(using generator: inout G) {
        timestampOffset = generator.next()
    }

    public init() {
        var generator = SystemRandomNumberGenerator()
        self.init(using: &generator)
    }

    /// Reacts to one session event.
    public func handle(_ event: SessionEvent, session: WebRTCSession, now: Instant) {
        switch event {
        case .audio(let timestamp, _, let marker, let payload):
            session.sendAudio(payload, timestamp: timestamp &+ timestampOffset, marker: marker, now: now)
        case .dataChannelMessage(let channel, _, let binary, let payload):
            // Every data-channel message goes back unchanged: same bytes, same type, same channel.
            session.sendDataChannelMessage(payload, binary: binary, channel: channel, now: now)
        default:
            break
        }
    }
}
