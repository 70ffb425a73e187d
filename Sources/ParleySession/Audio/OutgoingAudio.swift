import ParleyMedia
import ParleyWire

/// An agent's audio on its way to the client: PCM frames queue (the agent may produce faster than
/// real time), and each 20 ms tick encodes one into Opus. RTP timestamps run on continuously (960
/// per frame) while output plays, however late a tick ran; output that starts after silence takes
/// the wall clock's timestamp, so gaps between utterances are real gaps to the client's jitter
/// buffer. Reports when
/// output starts, stops (drained) and is cleared (barge-in), as OpenAI's Realtime API does with
/// `output_audio_buffer.started` / `.stopped` / `.cleared`. Sans-IO. Confined to one thread.
public final class OutgoingAudio {
    public enum Event: Equatable, Sendable {
        case started
        case stopped
        case cleared
    }

    /// Frames queued beyond this make `wantsMore` false: the agent should wait (backpressure).
    public let highWatermark: Int
    /// Frames queued beyond this are refused.
    public let capacity: Int

    private let encoder: OpusEncoder
    private var queue: [[Int16]] = []
    private var head = 0
    private var playing = false
    private var clock: (start: Instant, timestamp: UInt32)?
    private var lastTimestamp: UInt32?
    private var events: [Event] = []

    public init(sampleRate: OpusSampleRate, initialTimestamp: UInt32, highWatermark: Int = 250, capacity: Int = 1500,
                now: Instant) throws(OpusError) {
        encoder = try OpusEncoder(sampleRate: sampleRate)
        self.highWatermark = highWatermark
        self.capacity = capacity
        clock = (now, initialTimestamp)
    }

    public var queuedFrames: Int { queue.count - head }
    public var wantsMore: Bool { queuedFrames < highWatermark }

    /// Queues one 20 ms frame; false (and nothing queued) when the queue is full.
    @discardableResult
    public func enqueue(_ frame: [Int16]) -> Bool {
        guard queuedFrames < capacity, frame.count == encoder.sampleRate.samplesPer20Milliseconds else { return false }
        queue.append(frame)
        return true
    }

    /// Drops everything queued (barge-in).
    public func clear() {
        let hadOutput = playing || queuedFrames > 0
        queue.removeAll(keepingCapacity: true)
        head = 0
        if hadOutput {
            playing = false
            events.append(.cleared)
        }
    }

    /// The packet for this 20 ms tick, if a frame is queued: Opus payload and its RTP timestamp
    /// (48 kHz clock, whatever the agent's rate).
    public func nextPacket(now: Instant) -> (payload: [UInt8], timestamp: UInt32, marker: Bool)? {
        guard head < queue.count else {
            if playing {
                playing = false
                events.append(.stopped)
            }
            return nil
        }
        let frame = queue[head]
        head += 1
        if head > 256, head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        guard let payload = try? encoder.encode(frame), let clock else { return nil }
        let elapsed = max(0, (now - clock.start).nanoseconds)
        let wallClock = clock.timestamp &+ UInt32(truncatingIfNeeded: elapsed / 1_000_000 * 48)
        let timestamp: UInt32
        if let last = lastTimestamp {
            let following = last &+ 960
            // After silence, the real gap; never behind the previous frame's end.
            timestamp = !playing && Int32(bitPattern: wallClock &- following) > 0 ? wallClock : following
        } else {
            timestamp = wallClock
        }
        lastTimestamp = timestamp
        let marker = !playing  // RFC 3551: the first packet after silence carries the marker bit
        if !playing {
            playing = true
            events.append(.started)
        }
        return (payload, timestamp, marker)
    }

    public func takeEvents() -> [Event] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }
}
