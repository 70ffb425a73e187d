import Foundation
import ParleyMedia
import ParleyWire
import Testing
@testable import ParleySession
@testable import ParleyTransceiver

@Suite struct AudioTests {
    static func tone(_ frames: Int, rate: OpusSampleRate = .hz48000) -> [[Int16]] {
        let perFrame = rate.samplesPer20Milliseconds
        return (0..<frames).map { frame in
            (0..<perFrame).map { Int16(sin(2 * .pi * 440 * Double(frame * perFrame + $0) / Double(rate.rawValue)) * 8000) }
        }
    }

    /// Packets that arrive late, out of order or not at all still give one frame per tick.
    @Test func jitterBufferDeliversEveryTickAndRepairsLoss() throws {
        let encoder = try OpusEncoder(sampleRate: .hz48000, expectedLossPercent: 20)
        let packets = try Self.tone(50).map { try encoder.encode($0) }
        let incoming = try IncomingAudio(sampleRate: .hz16000)
        var now = Instant(nanoseconds: 0)
        var frames = 0
        for tick in 0..<60 {
            // Packet 10 is lost; 21 and 22 arrive swapped; 30 arrives after it was needed.
            let sequence = UInt16(tick)
            if tick < 50, tick != 10, tick != 30 {
                let arriving: UInt16 = tick == 21 ? 22 : tick == 22 ? 21 : sequence
                incoming.receive(sequence: 1000 &+ arriving, payload: packets[Int(arriving)], now: now)
            }
            if tick == 40 { incoming.receive(sequence: 1030, payload: packets[30], now: now) }
            if let frame = incoming.nextFrame(now: now) {
                #expect(frame.count == 320, "20 ms at 16 kHz")
                frames += 1
            }
            now = now + .milliseconds(20)
        }
        #expect(incoming.framesRepaired >= 1, "loss at 10 repaired from 11's FEC")
        #expect(incoming.packetsLate == 1, "30 came too late")
        #expect(frames == incoming.framesPlayed && frames >= 55, "a frame every tick once playout starts")
    }

    /// A sender whose clock runs 3% slow or fast against ours: playout never drifts into
    /// concealing everything (slow) or into an ever-growing delay (fast).
    @Test(arguments: [21_000_000, 19_400_000] as [Int64])
    func jitterBufferFollowsASenderWhoseClockDrifts(senderInterval: Int64) throws {
        let encoder = try OpusEncoder(sampleRate: .hz48000)
        let packets = try Self.tone(600).map { try encoder.encode($0) }
        let incoming = try IncomingAudio(sampleRate: .hz16000)
        var sent = 0, played = 0
        var nextSend = Instant(nanoseconds: 0), tick = Instant(nanoseconds: 0)
        let end = Instant(nanoseconds: 600 * senderInterval)
        while tick < end {
            while nextSend <= tick, sent < packets.count {
                incoming.receive(sequence: UInt16(truncatingIfNeeded: 40_000 + sent), payload: packets[sent], now: nextSend)
                sent += 1
                nextSend = nextSend + .nanoseconds(senderInterval)
            }
            if incoming.nextFrame(now: tick) != nil { played += 1 }
            tick = tick + .milliseconds(20)
        }
        let decoded = played - incoming.framesConcealed - incoming.framesRepaired
        #expect(decoded >= played * 9 / 10, "nearly every frame played is a real packet: \(decoded) of \(played)")
        if senderInterval > 20_000_000 {
            #expect(incoming.framesStretched >= 10 && incoming.packetsLate <= 3, "stretched as the sender fell behind")
        } else {
            #expect(incoming.framesSkipped >= 1, "skipped ahead as the sender ran fast")
        }
    }

    @Test func outputIsPacedWithWallClockTimestampsAndReportsStartStopClear() throws {
        var now = Instant(nanoseconds: 5_000_000_000)
        let outgoing = try OutgoingAudio(sampleRate: .hz24000, initialTimestamp: 1000, now: now)
        // The agent hands over a second of audio at once.
        for frame in Self.tone(50, rate: .hz24000) { #expect(outgoing.enqueue(frame)) }
        #expect(outgoing.queuedFrames == 50)
        var timestamps: [UInt32] = []
        var markers: [Bool] = []
        for _ in 0..<50 {
            let packet = try #require(outgoing.nextPacket(now: now))
            timestamps.append(packet.timestamp)
            markers.append(packet.marker)
            now = now + .milliseconds(20)
        }
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { $1 &- $0 == 960 }, "48 kHz RTP clock, 20 ms apart")
        #expect(markers.first == true && markers.dropFirst().allSatisfy { !$0 })
        #expect(outgoing.nextPacket(now: now) == nil, "drained")
        #expect(outgoing.takeEvents() == [.started, .stopped])

        // Silence for 200 ms, then more: the timestamp jumps by the real gap.
        now = now + .milliseconds(200)
        outgoing.enqueue(Self.tone(1, rate: .hz24000)[0])
        let resumed = try #require(outgoing.nextPacket(now: now))
        #expect(resumed.timestamp &- timestamps.last! == 960 * 11, "the gap is real time")
        #expect(resumed.marker)
        // Barge-in: queued audio is dropped at once.
        for frame in Self.tone(20, rate: .hz24000) { outgoing.enqueue(frame) }
        outgoing.clear()
        #expect(outgoing.queuedFrames == 0)
        #expect(outgoing.takeEvents() == [.started, .cleared])
    }

    /// The media loop's tick runs a few ms early or late; the RTP clock does not follow it.
    @Test func timestampsStayContinuousWhenTicksJitter() throws {
        var now = Instant(nanoseconds: 1_000_000_000)
        let outgoing = try OutgoingAudio(sampleRate: .hz16000, initialTimestamp: 0xFFFF_FF00, now: now)
        for frame in Self.tone(30, rate: .hz16000) { outgoing.enqueue(frame) }
        var random = SystemRandomNumberGenerator()
        var timestamps: [UInt32] = []
        for _ in 0..<30 {
            timestamps.append(try #require(outgoing.nextPacket(now: now)).timestamp)
            now = now + .milliseconds(Int64.random(in: 12...28, using: &random))
        }
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { $1 &- $0 == 960 }, "continuous across the 32-bit wrap")
    }

    @Test func backpressureAndCapacity() throws {
        let outgoing = try OutgoingAudio(sampleRate: .hz16000, initialTimestamp: 0, highWatermark: 5, capacity: 8, now: .zero)
        let frame = Self.tone(1, rate: .hz16000)[0]
        for _ in 0..<5 { outgoing.enqueue(frame) }
        #expect(!outgoing.wantsMore)
        for _ in 0..<3 { #expect(outgoing.enqueue(frame)) }
        #expect(!outgoing.enqueue(frame), "full")
        #expect(!outgoing.enqueue([1, 2, 3]), "not a 20 ms frame")
    }
}
