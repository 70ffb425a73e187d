import ParleyMedia
import ParleyWire

/// Joins one call's session to a `VoiceAgent`: the caller's Opus decoded to PCM on a steady 20 ms
/// clock (jitter buffer, FEC, concealment), the agent's PCM queued and paced out as Opus,
/// `output_audio_buffer.started` / `.stopped` / `.cleared` told to the client on `oai-events`, and
/// data-channel messages both ways. Sans-IO: the media worker feeds it session events and calls
/// `tick` at least every 10 ms. Confined to the call's media thread.
public final class AgentBridge {
    public static let frameInterval: Duration = .milliseconds(20)
    /// The channel output events go to (OpenAI's Realtime API over WebRTC uses this label).
    public static let eventsLabel = "oai-events"

    public let agent: VoiceAgent
    let session: WebRTCSession
    let incoming: IncomingAudio
    public let outgoing: OutgoingAudio
    private var output: AgentOutput?
    /// Open channels by label (the client's `oai-events` among them).
    private var channels: [String: UInt16] = [:]
    private var nextTick: Instant?
    private var lastNow: Instant
    private var eventCounter = 0
    public private(set) var isStarted = false
    public private(set) var isEnded = false

    /// The call's session configuration (a JSON object as text), as `session.started` tells the agent.
    public private(set) var configuration: String

    public init(agent: VoiceAgent, session: WebRTCSession, configuration: String = "{}", now: Instant) throws(OpusError) {
        self.agent = agent
        self.session = session
        self.configuration = configuration
        lastNow = now
        incoming = try IncomingAudio(sampleRate: agent.sampleRate)
        var generator = SystemRandomNumberGenerator()
        outgoing = try OutgoingAudio(sampleRate: agent.sampleRate, initialTimestamp: generator.next(), now: now)
        output = AgentOutput(bridge: self)
    }

    /// For a bridge made after the call began (an external agent accepts later): takes the state
    /// its events would have told it.
    public func catchUp(now: Instant) {
        for (id, label) in session.openDataChannels { channels[label] = id }
        if session.state == .connected { start(now: now) }
    }

    /// Takes one session event (after the session produced it).
    public func handle(_ event: SessionEvent, now: Instant) {
        lastNow = now
        switch event {
        case .dtlsConnected:
            start(now: now)
        case .audio(_, let sequenceNumber, _, let payload):
            incoming.receive(sequence: sequenceNumber, payload: payload, now: now)
        case .dataChannelOpened(let id, let label):
            channels[label] = id
        case .dataChannelClosed(let id, let label):
            if channels[label] == id { channels[label] = nil }
        case .dataChannelTransportClosed:
            channels.removeAll()
        case .dataChannelMessage(_, let label, let binary, let payload):
            guard isStarted, !isEnded else { return }
            agent.dataChannelMessage(label: label, binary: binary, payload: payload, now: now)
        case .closed(let reason):
            end(reason: reason.description, now: now)
        case .clientAuthenticated, .iceConnected, .pathChanged, .iceRestarted:
            break
        }
    }

    /// The app's server changed the session configuration: the agent hears of it once it started.
    public func updateConfiguration(_ configuration: String, now: Instant) {
        self.configuration = configuration
        if isStarted, !isEnded { agent.sessionUpdated(configuration, now: now) }
    }

    /// Runs every 20 ms step that is due: one frame to the agent, one packet to the client.
    public func tick(now: Instant) {
        lastNow = now
        guard isStarted, !isEnded, var due = nextTick else { return }
        var steps = 0
        while due <= now, steps < 5 {
            if let frame = incoming.nextFrame(now: due) { agent.audio(frame, now: now) }
            if isEnded { return }
            if let packet = outgoing.nextPacket(now: due) {
                session.sendAudio(packet.payload, timestamp: packet.timestamp, marker: packet.marker, now: now)
            }
            publishOutputEvents()
            due = due + Self.frameInterval
            steps += 1
        }
        // After a stall longer than 100 ms, restart the clock rather than rush the backlog out.
        nextTick = due <= now ? now + Self.frameInterval : due
    }

    /// When the bridge next needs `tick`.
    public var nextWakeup: Instant? { isStarted && !isEnded ? nextTick : nil }

    // MARK: What AgentOutput does

    func enqueue(_ frame: [Int16]) -> Bool {
        guard isStarted, !isEnded else { return false }
        return outgoing.enqueue(frame)
    }

    func clearAudio() {
        guard isStarted, !isEnded else { return }
        outgoing.clear()
        publishOutputEvents()
    }

    func send(label: String, binary: Bool, payload: [UInt8]) -> Bool {
        guard !isEnded, let channel = channels[label] else { return false }
        let sent = session.sendDataChannelMessage(payload, binary: binary, channel: channel, now: lastNow)
        if sent, recordsSentMessages {
            if sentMessages.count == Self.maximumRecordedMessages { sentMessages.removeFirst() }
            sentMessages.append(DataChannelMessage(label: label, binary: binary, payload: payload))
        }
        return sent
    }

    // MARK: What the app's server watches

    /// A message the agent sent the client.
    public struct DataChannelMessage: Sendable, Equatable {
        public var label: String
        public var binary: Bool
        public var payload: [UInt8]
    }

    /// True while the app's server watches the call (a sideband is open): what the agent sends the
    /// client is kept until `takeSentMessages`, at most `maximumRecordedMessages` (the oldest go).
    public var recordsSentMessages = false {
        didSet { if !recordsSentMessages { sentMessages.removeAll() } }
    }
    private var sentMessages: [DataChannelMessage] = []
    public static let maximumRecordedMessages = 256

    public func takeSentMessages() -> [DataChannelMessage] {
        guard !sentMessages.isEmpty else { return [] }
        defer { sentMessages.removeAll(keepingCapacity: true) }
        return sentMessages
    }

    func hangUp(reason: String) {
        guard !isEnded else { return }
        session.close(.agent(reason), now: lastNow)
        // The session reports `.closed`, which ends the agent through `handle`; make sure even if not.
        end(reason: CloseReason.agent(reason).description, now: lastNow)
    }

    // MARK: Lifecycle

    private func start(now: Instant) {
        guard !isStarted, let output else { return }
        isStarted = true
        nextTick = now + Self.frameInterval
        let negotiated = session.parameters.negotiated
        agent.sessionStarted(AgentSessionStart(
            callID: session.parameters.id, sampleRate: Int(agent.sampleRate.rawValue),
            frameSamples: agent.sampleRate.samplesPer20Milliseconds,
            offer: .init(opusParameters: negotiated.opus.parameters ?? "", dataChannel: negotiated.dataChannelMid != nil),
            session: configuration),
            output: output, now: now)
    }

    private func end(reason: String, now: Instant) {
        guard !isEnded else { return }
        isEnded = true
        if isStarted { agent.sessionEnded(reason: reason, now: now) }
        output = nil
    }

    /// `output_audio_buffer.*` on `oai-events`, shaped as OpenAI's Realtime API sends them.
    private func publishOutputEvents() {
        for event in outgoing.takeEvents() {
            let type: String
            switch event {
            case .started: type = "output_audio_buffer.started"
            case .stopped: type = "output_audio_buffer.stopped"
            case .cleared: type = "output_audio_buffer.cleared"
            }
            eventCounter += 1
            let json = #"{"type":"\#(type)","event_id":"event_parley_\#(eventCounter)"}"#
            _ = send(label: Self.eventsLabel, binary: false, payload: Array(json.utf8))
        }
    }
}
