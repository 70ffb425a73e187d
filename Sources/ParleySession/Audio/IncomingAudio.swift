import ParleyMedia
import ParleyWire

/// The client's audio as an agent wants it: one PCM frame every 20 ms, whatever the network did.
/// A small jitter buffer holds RTP Opus packets by sequence number; each 20 ms tick plays the next
/// one, repairs a missing one from the following packet's FEC, or conceals it. The sender's clock
/// is not ours: a slot whose packet has not arrived while nothing newer has either is concealed
/// and the packet still awaited (a slow sender stretches playout instead of losing packets); when
/// playout has nevertheless run ahead (several packets in a row arrive after their slot) it
/// re-anchors on the newest; when the sender runs fast (more than `maximumDepth` packets wait) it
/// skips ahead, so latency stays bounded either way. Sans-IO: packets and ticks
/// come with the time. Confined to one thread.
public final class IncomingAudio {
    /// How long the first packet waits before playout starts, to absorb jitter.
    public let playoutDelay: Duration
    public static let maximumPackets = 50
    /// Packets waiting beyond this (160 ms) mean the sender runs fast: playout skips ahead.
    public static let maximumDepth = 8
    /// This many late packets in a row mean playout runs ahead of the sender: it re-anchors.
    public static let lateRunToResync = 3

    private let decoder: OpusDecoder
    private var packets: [UInt16: [UInt8]] = [:]
    private var nextSequence: UInt16?
    private var startAt: Instant?
    public private(set) var framesPlayed = 0
    public private(set) var framesRepaired = 0
    public private(set) var framesConcealed = 0
    public private(set) var packetsLate = 0
    public private(set) var resyncs = 0
    public private(set) var framesSkipped = 0
    /// Slots filled while waiting for a late packet (a slow sender, or a pause in its stream).
    public private(set) var framesStretched = 0
    private var lateRun = 0

    public init(sampleRate: OpusSampleRate, playoutDelay: Duration = .milliseconds(40)) throws(OpusError) {
        decoder = try OpusDecoder(sampleRate: sampleRate)
        self.playoutDelay = playoutDelay
    }

    /// Takes an Opus packet that arrived at `now`.
    public func receive(sequence: UInt16, payload: [UInt8], now: Instant) {
        if let next = nextSequence {
            // Behind what already played: too late to use, unless playout has run ahead of the sender.
            if sequence.isBefore(next) {
                packetsLate += 1
                lateRun += 1
                guard lateRun >= Self.lateRunToResync else { return }
                resyncs += 1
                lateRun = 0
                packets.removeAll(keepingCapacity: true)
                nextSequence = sequence
            } else {
                lateRun = 0
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
        guard let start = startAt, now >= start, var sequence = nextSequence else { return nil }
        if packets.count > Self.maximumDepth, let newest = packets.keys.max(by: { $0.isBefore($1) }) {
            // The sender runs fast: drop the oldest so that `maximumDepth / 2` packets wait.
            // At most `maximumPackets` entries are looked at, however far ahead the sender jumped.
            let target = newest &- UInt16(truncatingIfNeeded: Self.maximumDepth / 2)
            for skipped in packets.keys where skipped.isBefore(target) && !skipped.isBefore(sequence) {
                packets[skipped] = nil
                framesSkipped += 1
            }
            sequence = target
        }
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
        // Nothing newer has arrived either: the sender is late (or slow), not lossy. Fill this slot
        // and wait for its packet rather than skip it.
        if packets.isEmpty {
            nextSequence = sequence
            framesStretched += 1
        }
        return (try? decoder.conceal()) ?? [Int16](repeating: 0, count: decoder.sampleRate.samplesPer20Milliseconds)
    }
}

extension UInt16 {
    /// Sequence-number order with wrap-around (RFC 3550).
    func isBefore(_ other: UInt16) -> Bool { self != other && other &- self < 0x8000 }
}
