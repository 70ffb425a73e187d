import ParleyMedia
import ParleyWire

/// The client's audio as an agent wants it: one PCM frame every 20 ms, whatever the network did.
/// A small jitter buffer holds RTP Opus packets by sequence number; each 20 ms tick plays the next
/// one, repairs a missing one from the following packet's FEC, or conceals it. Sans-IO: packets and
/// ticks come with the time. Confined to one thread.
public final class IncomingAudio {
    /// How long the first packet waits before playout starts, to absorb jitter.
    public let playoutDelay: Duration
    public static let maximumPackets = 50

    private let decoder: OpusDecoder
    private var packets: [UInt16: [UInt8]] = [:]
    private var nextSequence: UInt16?
    private var startAt: Instant?
    public private(set) var framesPlayed = 0
    public private(set) var framesRepaired = 0
    public private(set) var framesConcealed = 0
    public private(set) var packetsLate = 0

    public init(sampleRate: OpusSampleRate, playoutDelay: Duration = .milliseconds(40)) throws(OpusError) {
        decoder = try OpusDecoder(sampleRate: sampleRate)
        self.playoutDelay = playoutDelay
    }

    /// Takes an Opus packet that arrived at `now`.
    public func receive(sequence: UInt16, payload: [UInt8], now: Instant) {
        if let next = nextSequence {
            // Behind what already played: too late to use.
            guard !sequence.isBefore(next) else {
                packetsLate += 1
                return
            }
        } else if startAt == nil {
            startAt = now + playoutDelay
            nextSequence = sequence
        }
        guard packets.count < Self.maximumPackets else { return }
        packets[sequence] = payload
    }

    /// Once playout has started, the frame for this 20 ms tick (nil before the first packet's delay).
    public func nextFrame(now: Instant) -> [Int16]? {
        guard let start = startAt, now >= start, let sequence = nextSequence else { return nil }
        nextSequence = sequence &+ 1
        framesPlayed += 1
        if let packet = packets.removeValue(forKey: sequence), let pcm = try? decoder.decode(packet), !pcm.isEmpty {
            return pcm
        }
        if let following = packets[sequence &+ 1], let repaired = try? decoder.conceal(next: following) {
            framesRepaired += 1
            return repaired
        }
        framesConcealed += 1
        return (try? decoder.conceal()) ?? [Int16](repeating: 0, count: decoder.sampleRate.samplesPer20Milliseconds)
    }
}

extension UInt16 {
    /// Sequence-number order with wrap-around (RFC 3550).
    func isBefore(_ other: UInt16) -> Bool { self != other && other &- self < 0x8000 }
}
