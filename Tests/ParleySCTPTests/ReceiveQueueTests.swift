import ParleyTestSupport
import ParleyWire
import Testing
@testable import ParleySCTP

/// The receive side against a hostile peer: every chunk buys bounded work (counted in `steps`, not
/// timed) and bounded memory, and messages still come out exactly once and in order.
@Suite struct ReceiveQueueTests {
    static let start: UInt32 = 0xFFFF_FF00  // close to the wrap, so every TSN comparison is modular
    /// The peer's TSNs, counted from 1 (the first it sends).
    static func tsn(_ offset: UInt32) -> UInt32 { start &+ offset &- 1 }

    final class Peer {
        var queue = SCTPReceiveQueue(initialTSN: ReceiveQueueTests.start, inboundStreams: 1024)
        var delivered: [SCTPReceiveQueue.Message] = []

        @discardableResult
        func send(_ offset: UInt32, stream: UInt16 = 0, ssn: UInt16 = 0, flags: UInt8 = 0x03, payload: [UInt8] = [7],
                  window: Int = 1 << 20) -> SCTPReceiveQueue.Outcome {
            let outcome = payload.withUnsafeBytes {
                queue.receive(tsn: ReceiveQueueTests.tsn(offset), stream: stream, ssn: ssn, protocolIdentifier: 53,
                              flags: flags, payload: $0, window: window)
            }
            delivered += queue.takeMessages()
            return outcome
        }

        func forward(_ offset: UInt32, streams: [(UInt16, UInt16)] = []) {
            queue.forward(to: ReceiveQueueTests.tsn(offset), streams: streams.map { ($0.0, $0.1) })
            delivered += queue.takeMessages()
        }
    }

    /// Today's SACK path sorted every out-of-order TSN on every packet (up to 65,535). Now the TSNs
    /// above the cumulative one are a capped list of ranges; a chunk that would open one more gap
    /// past the cap is refused (the peer resends it), and each chunk costs at most a few hundred steps.
    @Test func everyOtherTSNOutOfOrderIsBoundedPerChunk() {
        let peer = Peer()
        var worst = 0, refused = 0
        for offset in stride(from: UInt32(2), through: 60_000, by: 2) {
            let before = peer.queue.steps
            if peer.send(offset, flags: 0x07) == .refused { refused += 1 }
            worst = max(worst, peer.queue.steps - before)
        }
        #expect(peer.queue.gapBlocks(limit: .max).count == SCTPReceiveQueue.maximumRanges)
        #expect(refused == 30_000 - SCTPReceiveQueue.maximumRanges)
        #expect(worst <= 2 * SCTPReceiveQueue.maximumRanges, "steps for one chunk: \(worst)")
        #expect(peer.queue.gapBlocks(limit: 64).count == 64)
        // The missing TSNs arrive: the cumulative TSN sweeps up, in work linear in what arrived.
        let before = peer.queue.steps
        for offset in stride(from: UInt32(1), through: 513, by: 2) { peer.send(offset, flags: 0x07) }
        #expect(!peer.queue.hasGaps)
        #expect(peer.queue.cumulativeTSN == Self.tsn(513))
        #expect(peer.queue.steps - before <= 8 * 513)
        #expect(peer.delivered.count == 513, "each one-chunk message once")
    }

    /// Today's reassembly walked every fragment a new one touched: a message sent middle first cost
    /// n² steps. Linked runs make each fragment O(1), in any order.
    @Test(arguments: [("forward", 7000), ("backward", 7000), ("middlesFirst", 7000), ("shuffled", 400)] as [(String, UInt32)])
    func reassemblyIsLinearInAnyOrder(order: String, count: UInt32) {
        let peer = Peer()
        var offsets = Array(UInt32(1)...count)
        switch order {
        case "backward": offsets.reverse()
        case "middlesFirst": offsets = Array(2..<count) + [count, 1]
        case "shuffled":
            var generator = SplitMix64(seed: 3)
            offsets.shuffle(using: &generator)
        default: break
        }
        for offset in offsets {
            let flags: UInt8 = (offset == 1 ? 0x02 : 0) | (offset == count ? 0x01 : 0)
            #expect(peer.send(offset, flags: flags, payload: [UInt8(truncatingIfNeeded: offset)], window: 1 << 24) == .accepted)
        }
        #expect(peer.delivered.count == 1)
        #expect(peer.delivered.first?.payload == (1...count).map { UInt8(truncatingIfNeeded: $0) })
        // A few steps per fragment; out of order, also shifting the gap list (at most half its
        // entries per chunk; here some tens). Walking fragments would cost n²/2 = 80,000 at n = 400.
        let bound = order == "shuffled" ? 24 * Int(count) : 8 * Int(count)
        #expect(peer.queue.steps <= bound, "\(peer.queue.steps) steps for \(count) fragments")
        #expect(peer.queue.bufferedBytes == 0)
    }

    /// Fragments parked far ahead used to be walked again by every FORWARD-TSN. Now a FORWARD-TSN
    /// visits only what arrived below its new point.
    @Test func forwardTSNReplayCostsNothingForFragmentsAhead() {
        let peer = Peer()
        // 4,000 middle fragments far ahead, never completable.
        for offset in UInt32(40_001)...44_000 { peer.send(offset, flags: 0) }
        var worst = 0
        for point in UInt32(1)...5000 {
            let before = peer.queue.steps
            peer.forward(point)
            worst = max(worst, peer.queue.steps - before)
        }
        #expect(worst <= 4, "steps for one FORWARD-TSN: \(worst)")
        #expect(peer.queue.cumulativeTSN == Self.tsn(5000))
        // Skipping past them removes them, once.
        let before = peer.queue.steps
        peer.forward(50_000)
        #expect(peer.queue.steps - before <= 2 * 4000 + 8)
        #expect(peer.queue.bufferedBytes == 0)
        #expect(!peer.queue.hasGaps)
    }

    /// Fragments that can no longer become a message (their start was skipped, or what follows them
    /// arrived and does not continue them) go as the cumulative TSN passes them: memory does not
    /// fill with junk that holds the window shut.
    @Test func hopelessFragmentsAreDropped() {
        let peer = Peer()
        peer.send(1, flags: 0)               // a middle with no beginning before it
        peer.send(2, flags: 0x02)            // a beginning ...
        peer.send(3, stream: 9, flags: 0x01) // ... followed by another stream's end
        peer.send(4, flags: 0x03)            // a whole message
        #expect(peer.queue.cumulativeTSN == Self.tsn(4))
        #expect(peer.delivered.count == 1)
        #expect(peer.queue.bufferedBytes == 0, "nothing left that could still complete")
        // A beginning at the cumulative TSN still waits for its continuation.
        peer.send(5, ssn: 1, flags: 0x02)
        #expect(peer.queue.bufferedBytes == 1)
        peer.send(6, ssn: 1, flags: 0x01)
        #expect(peer.delivered.count == 2 && peer.delivered.last?.payload == [7, 7])
    }

    /// Ordered messages held for a missing predecessor were bounded only by bytes: tiny messages on
    /// every stream id could pile up by the hundred thousand. Now they are counted and capped, and a
    /// stream id the association does not have is acknowledged and discarded.
    @Test func heldOrderedMessagesAreCappedByCount() {
        let peer = Peer()
        var outcomes: [SCTPReceiveQueue.Outcome: Int] = [:]
        var offset: UInt32 = 1
        for stream in UInt16(0)..<1024 {
            for ssn in UInt16(1)...2 {  // SSN 0 never comes: everything waits
                outcomes[peer.send(offset, stream: stream, ssn: ssn), default: 0] += 1
                offset += 1
            }
        }
        #expect(peer.queue.heldMessages == SCTPReceiveQueue.maximumHeldMessages)
        #expect(outcomes[.refused] == 2048 - SCTPReceiveQueue.maximumHeldMessages)
        #expect(peer.send(offset, stream: 5000) == .invalidStream)
        #expect(peer.delivered.isEmpty)
        // The missing first message of stream 0 arrives: stream 0's held ones follow, in order.
        peer.send(offset + 1, stream: 0, ssn: 0, payload: [0])
        #expect(peer.delivered.map(\.stream) == [0, 0, 0])
    }

    /// FORWARD-TSN naming one stream again and again, with messages held far ahead on it: each entry
    /// costs a heap look, not a scan of what is held.
    @Test func forwardTSNStreamEntriesCostLogarithmicWork() {
        let peer = Peer()
        for index in UInt32(0)..<1000 { peer.send(1 + index, stream: 3, ssn: UInt16(30_000 + index)) }
        #expect(peer.queue.heldMessages == 1000)
        let before = peer.queue.steps
        let entries = (0..<280).map { (UInt16(3), UInt16($0)) }  // as many as fit in one chunk
        peer.forward(2000, streams: entries)
        #expect(peer.queue.steps - before <= 1000 + 300, "\(peer.queue.steps - before) steps")
        #expect(peer.delivered.isEmpty, "still ahead of every skipped sequence number")
        peer.forward(2001, streams: [(3, 30_999)])
        #expect(peer.delivered.count == 1000)
        #expect(peer.delivered.map(\.payload) == Array(repeating: [7], count: 1000))
        #expect(peer.queue.heldMessages == 0 && peer.queue.bufferedBytes == 0)
    }

    /// Whatever the order and the duplicates, each message is delivered once, ordered ones in
    /// sequence per stream, across the TSN and SSN wraps.
    @Test func randomOrderAndDuplicatesDeliverEachMessageOnceInOrder() {
        var generator = SplitMix64(seed: 17)
        let peer = Peer()
        struct Chunk { var offset: UInt32; var stream: UInt16; var ssn: UInt16; var flags: UInt8; var byte: UInt8 }
        var chunks: [Chunk] = []
        var nextSSN: [UInt16: UInt16] = [0: 65_530, 1: 0]
        var expected: [UInt16: [[UInt8]]] = [:]
        var unorderedExpected: [[UInt8]] = []
        // Stream 0 starts near its SSN wrap: FORWARD-TSNs over the first TSNs skip it there (each
        // may move a stream's sequence number by less than half the space).
        peer.forward(1, streams: [(0, 30_000)])
        peer.forward(2, streams: [(0, 60_000)])
        peer.forward(3, streams: [(0, 65_529)])
        var offset: UInt32 = 4
        for message in 0..<400 {
            let stream = UInt16(message % 2)
            let unordered = message % 7 == 0
            let length = Int(generator.next() % 4) + 1
            let ssn = unordered ? 0 : nextSSN[stream]!
            if !unordered { nextSSN[stream] = ssn &+ 1 }
            var bytes: [UInt8] = []
            for piece in 0..<length {
                let byte = UInt8(truncatingIfNeeded: generator.next())
                bytes.append(byte)
                let flags: UInt8 = (unordered ? 0x04 : 0) | (piece == 0 ? 0x02 : 0) | (piece == length - 1 ? 0x01 : 0)
                chunks.append(Chunk(offset: offset, stream: stream, ssn: ssn, flags: flags, byte: byte))
                offset += 1
            }
            if unordered { unorderedExpected.append(bytes) } else { expected[stream, default: []].append(bytes) }
        }
        var arrivals = chunks + chunks.filter { _ in generator.next() % 5 == 0 }
        arrivals.shuffle(using: &generator)
        for chunk in arrivals {
            _ = peer.send(chunk.offset, stream: chunk.stream, ssn: chunk.ssn, flags: chunk.flags, payload: [chunk.byte])
        }
        #expect(!peer.queue.hasGaps)
        #expect(peer.queue.bufferedBytes == 0)
        for stream in UInt16(0)...1 {
            #expect(peer.delivered.filter { $0.stream == stream && !$0.unordered }.map(\.payload) == expected[stream])
        }
        #expect(Set(peer.delivered.filter(\.unordered).map(\.payload)) == Set(unorderedExpected))
        #expect(peer.delivered.filter(\.unordered).count == unorderedExpected.count)
    }
}
