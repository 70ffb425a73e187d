import Foundation
import ParleyMedia
import ParleyWire

/// Energy-based voice-activity detection with hangover, per 20 ms frame (docs/agent-protocol.md):
/// - a frame's level is its RMS in dBFS;
/// - the noise floor follows the quietest level at once and rises 0.05 dB per frame (2.5 dB/s), so
///   steady background noise is learnt within seconds and speech does not raise it much;
/// - a frame is voiced when its level is 10 dB over the floor and over -55 dBFS;
/// - speech starts after 3 voiced frames in a row (60 ms: clicks do not count) and its turn ends
///   after `hangover` of unvoiced frames (500 ms: pauses between words do not end it).
public struct VoiceActivityDetector: Sendable {
    public enum Transition: Equatable, Sendable {
        case speechStarted
        /// Speech ended: the last voiced frame was `hangoverFrames` ago.
        case speechEnded
    }

    public var onsetFrames = 3
    public var hangoverFrames = 25
    public var marginDecibels = 10.0
    public var minimumLevel = -55.0
    public private(set) var noiseFloor = -70.0
    public private(set) var isSpeaking = false
    /// Whether the last frame processed was voiced.
    public private(set) var lastFrameVoiced = false
    private var voicedRun = 0
    private var unvoicedRun = 0

    public init() {}

    public static func level(_ frame: [Int16]) -> Double {
        guard !frame.isEmpty else { return -120 }
        var sum = 0.0
        for sample in frame { sum += Double(sample) * Double(sample) }
        let rms = (sum / Double(frame.count)).squareRoot() / 32768
        return rms > 0 ? 20 * log10(rms) : -120
    }

    /// Classifies one frame; returns a transition when speech starts or ends on it.
    public mutating func process(_ frame: [Int16]) -> Transition? {
        let level = Self.level(frame)
        let voiced = level > max(noiseFloor + marginDecibels, minimumLevel)
        lastFrameVoiced = voiced
        noiseFloor = level < noiseFloor ? level : min(noiseFloor + 0.05, -20)
        if voiced {
            voicedRun += 1
            unvoicedRun = 0
            if !isSpeaking, voicedRun >= onsetFrames {
                isSpeaking = true
                return .speechStarted
            }
        } else {
            voicedRun = 0
            unvoicedRun += 1
            if isSpeaking, unvoicedRun >= hangoverFrames {
                isSpeaking = false
                return .speechEnded
            }
        }
        return nil
    }
}

/// The built-in `parrot` agent: listens until the caller speaks and stops, then plays the
/// utterance back; if the caller speaks during playback, it clears its output at once (barge-in).
/// It reports each turn on `oai-events`: `parrot.turn` with the speech's length and the turn
/// detection latency (last voiced frame → end of turn decided), and `parrot.barge_in`.
public final class ParrotAgent: VoiceAgent {
    public let sampleRate: OpusSampleRate = .hz16000
    /// Frames kept from before the onset was confirmed, so the utterance's start is not cut.
    public static let prerollFrames = 10
    /// The longest utterance kept (30 s).
    public static let maximumFrames = 1500

    private var detector = VoiceActivityDetector()
    private var output: AgentOutput?
    private var recent: [[Int16]] = []
    private var utterance: [[Int16]] = []
    private var lastVoicedAt: Instant?
    private var utteranceStartedAt: Instant?
    private var pending: [[Int16]] = []
    private var pendingIndex = 0
    public private(set) var turns = 0
    public private(set) var bargeIns = 0

    public init() {}

    public func sessionStarted(_ start: AgentSessionStart, output: AgentOutput, now: Instant) {
        self.output = output
    }

    public func audio(_ frame: [Int16], now: Instant) {
        let transition = detector.process(frame)
        if detector.lastFrameVoiced { lastVoicedAt = now }
        switch transition {
        case .speechStarted:
            if let output, output.queuedFrames > 0 || pendingIndex < pending.count {
                output.clearAudio()
                pending.removeAll()
                pendingIndex = 0
                bargeIns += 1
                send(#"{"type":"parrot.barge_in"}"#)
            }
            utterance = recent
            utteranceStartedAt = now
        case .speechEnded:
            utterance.append(frame)
            let detection = lastVoicedAt.map { now - $0 } ?? .zero
            let speech = utteranceStartedAt.flatMap { start in lastVoicedAt.map { $0 - start } } ?? .zero
            turns += 1
            send(#"{"type":"parrot.turn","turn":\#(turns),"speech_ms":\#(speech.milliseconds),"#
                 + #""turn_detection_ms":\#(detection.milliseconds),"frames":\#(utterance.count)}"#)
            pending = utterance
            pendingIndex = 0
            utterance = []
        case nil:
            if detector.isSpeaking, utterance.count < Self.maximumFrames { utterance.append(frame) }
        }
        recent.append(frame)
        if recent.count > Self.prerollFrames { recent.removeFirst(recent.count - Self.prerollFrames) }
        feed()
    }

    public func dataChannelMessage(label: String, binary: Bool, payload: [UInt8], now: Instant) {}

    public func sessionEnded(reason: String, now: Instant) {
        output = nil
        pending.removeAll()
    }

    /// Hands queued playback to the output as fast as its backpressure allows.
    private func feed() {
        guard let output else { return }
        while pendingIndex < pending.count, output.wantsMore {
            guard output.sendAudio(pending[pendingIndex]) else { break }
            pendingIndex += 1
        }
        if pendingIndex == pending.count, !pending.isEmpty {
            pending.removeAll()
            pendingIndex = 0
        }
    }

    private func send(_ json: String) {
        output?.sendDataChannelMessage(label: AgentBridge.eventsLabel, payload: Array(json.utf8))
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
