import DequeModule
import HeapModule
import ParleyWire

/// The receive side of an association: which TSNs arrived (the cumulative TSN and the gaps above it),
/// fragments waiting for the rest of their message, and ordered messages waiting for their turn.
/// Sans-IO, and built so that a hostile peer buys bounded work and memory with every chunk:
///
/// - TSNs above the cumulative one are kept as at most `maximumRanges` sorted, disjoint ranges (a
///   binary search finds a TSN; a SACK reports them without sorting anything).
/// - A fragment joins its neighbours in O(1): each run of fragments that can belong to one message
///   knows its two ends, so the message is complete exactly when its ends carry the B and E flags,
///   and is then copied out once. Fragments that can no longer complete (what lies before or after
///   them arrived and does not fit) are dropped as the cumulative TSN passes them, and FORWARD-TSN
///   visits only what arrived; every fragment is visited a constant number of times in all.
/// - Ordered messages that came early wait in a heap per stream (O(log n) in, O(log n) out),
///   however far a FORWARD-TSN or a peer's choice of sequence numbers jumps.
/// - Counts are capped as well as bytes (`maximumFragments`, `maximumHeldMessages`): a one-byte
///   chunk costs far more memory than its payload.
///
/// `steps` counts the inner steps all this took (range entries moved, fragments visited, heap
/// operations), so tests can hold the work per packet to a bound.
struct SCTPReceiveQueue {
    static let maximumRanges = 256
    static let maximumFragments = 8192
    static let reservedForInSequence = 1024
    static let maximumHeldMessages = 1024
    /// TSNs further ahead than a SACK's 16-bit gap offsets can report are refused.
    static let maximumAhead: UInt32 = 65535

    /// A delivered message.
    struct Message: Equatable {
        var stream: UInt16
        var protocolIdentifier: UInt32
        var payload: [UInt8]
        var unordered: Bool
    }

    enum Outcome: Equatable {
        case accepted
        /// At or below the cumulative TSN, or already received: a SACK should follow.
        case duplicate
        /// Not taken (window, counts, or too many gaps): not acknowledged, so the peer sends it again.
        case refused
        /// Taken and acknowledged, but for a stream the association does not have: discarded.
        case invalidStream
    }

    private(set) var cumulativeTSN: UInt32
    /// Received TSNs above `cumulativeTSN`, ascending, disjoint, not adjacent.
    private var ranges = Deque<(first: UInt32, last: UInt32)>()
    private var fragments: [UInt32: Fragment] = [:]
    private var streams: [UInt16: InboundStream] = [:]
    /// Bytes held: fragments and complete ordered messages waiting for their turn.
    private(set) var bufferedBytes = 0
    private(set) var heldMessages = 0
    /// Streams the peer may send on (ours and its own limits, from the handshake).
    var inboundStreams: UInt16
    private(set) var messages: [Message] = []
    private(set) var steps = 0

    struct Fragment {
        var stream: UInt16
        var ssn: UInt16
        var protocolIdentifier: UInt32
        var flags: UInt8
        var payload: [UInt8]
        /// At either end of a run of linked fragments: the TSN at its other end (else stale).
        var otherEnd: UInt32

        var unordered: Bool { flags & 0x04 != 0 }
        var isBeginning: Bool { flags & 0x02 != 0 }
        var isEnd: Bool { flags & 0x01 != 0 }

        /// Whether `next`, one TSN later, continues the same message.
        func continues(into next: Fragment) -> Bool {
            !isEnd && !next.isBeginning && next.stream == stream && next.unordered == unordered && (unordered || next.ssn == ssn)
        }
    }

    struct HeldMessage: Comparable {
        /// The sequence number unwrapped to 64 bits on its stream (monotonic across wraps).
        var key: Int64
        var protocolIdentifier: UInt32
        var payload: [UInt8]

        static func < (lhs: Self, rhs: Self) -> Bool { lhs.key < rhs.key }
        static func == (lhs: Self, rhs: Self) -> Bool { lhs.key == rhs.key }
    }

    struct InboundStream {
        var nextSSN: UInt16 = 0
        /// `nextSSN` unwrapped: held messages are keyed relative to it.
        var nextKey: Int64 = 0
        var held = Heap<HeldMessage>()

        /// The unwrapped key of `ssn`: within 2^15 behind or ahead of the next expected.
        func key(of ssn: UInt16) -> Int64 { nextKey + Int64(Int16(bitPattern: ssn &- nextSSN)) }
    }

    init(initialTSN: UInt32, inboundStreams: UInt16) {
        cumulativeTSN = initialTSN &- 1
        self.inboundStreams = inboundStreams
    }

    /// Whether TSNs above the cumulative one arrived (a SACK then carries gap blocks).
    var hasGaps: Bool { !ranges.isEmpty }

    mutating func takeMessages() -> [Message] {
        defer { messages.removeAll(keepingCapacity: true) }
        return messages
    }

    /// Gap ack blocks (RFC 9260 §3.3.4): offsets from the cumulative TSN, at most `limit`.
    func gapBlocks(limit: Int) -> [(start: UInt16, end: UInt16)] {
        ranges.prefix(limit).map { (UInt16(truncatingIfNeeded: $0.first &- cumulativeTSN),
                                    UInt16(truncatingIfNeeded: $0.last &- cumulativeTSN)) }
    }

    /// Takes one DATA chunk. `window` bounds the bytes held (the in-sequence TSN may use twice it,
    /// or a window filled with out-of-order data would never drain).
    mutating func receive(tsn: UInt32, stream: UInt16, ssn: UInt16, protocolIdentifier: UInt32, flags: UInt8,
                          payload: UnsafeRawBufferPointer, window: Int) -> Outcome {
        let ahead = tsn &- cumulativeTSN
        guard ahead != 0, ahead < 0x8000_0000, !contains(tsn) else { return .duplicate }
        guard ahead <= Self.maximumAhead, canRecord(tsn) else { return .refused }
        guard stream < inboundStreams else {
            record(tsn)
            advance()
            return .invalidStream
        }
        let inSequence = ahead == 1
        // Out-of-order fragments may fill only part of the fragment cap: the rest is kept for the next
        // in-sequence TSN, which what waits ahead could otherwise stall.
        guard bufferedBytes + payload.count <= (inSequence ? 2 * window : window),
              fragments.count < (inSequence ? Self.maximumFragments : Self.maximumFragments - Self.reservedForInSequence)
        else { return .refused }
        let unordered = flags & 0x04 != 0
        // A message that would wait for its turn needs room among the held ones.
        if !unordered, heldMessages >= Self.maximumHeldMessages, streams[stream].map({ ssn != $0.nextSSN }) ?? (ssn != 0) {
            return .refused
        }
        record(tsn)
        insertFragment(Fragment(stream: stream, ssn: ssn, protocolIdentifier: protocolIdentifier, flags: flags,
                                payload: Array(payload), otherEnd: tsn), at: tsn)
        advance()
        return .accepted
    }

    /// FORWARD-TSN (RFC 3758 §3.6): everything up to `newCumulativeTSN` is skipped; ordered streams
    /// deliver what waited up to each given sequence number and go on after it.
    mutating func forward(to newCumulativeTSN: UInt32, streams skipped: [(stream: UInt16, sequence: UInt16)]) {
        guard cumulativeTSN.tsnLessThan(newCumulativeTSN) else { return }
        // Only the run that ends at the cumulative TSN can hold fragments at or below it.
        if fragments[cumulativeTSN] != nil { removeRun(endingAt: cumulativeTSN) }
        // Fragments that arrived between the two points are abandoned; ranges there are covered.
        while let first = ranges.first, first.first.tsnAtMost(newCumulativeTSN) {
            let last = first.last.tsnAtMost(newCumulativeTSN) ? first.last : newCumulativeTSN
            var tsn = first.first
            while true {
                steps += 1
                if let fragment = fragments.removeValue(forKey: tsn) { bufferedBytes -= fragment.payload.count }
                if tsn == last { break }
                tsn &+= 1
            }
            if last == first.last {
                removeFirstRange()
            } else {
                ranges[0].first = newCumulativeTSN &+ 1
                break
            }
        }
        cumulativeTSN = newCumulativeTSN
        // What follows the new point without a B flag belonged to a skipped message (or to nothing).
        if let next = fragments[newCumulativeTSN &+ 1], !next.isBeginning { removeRun(startingAt: newCumulativeTSN &+ 1) }
        for entry in skipped where entry.stream < inboundStreams {
            skipOrdered(stream: entry.stream, through: entry.sequence)
        }
        advance()
    }

    /// The peer reset these incoming streams (RFC 6525): sequence numbers start over, and what
    /// waited on them is dropped.
    mutating func resetStreams(_ reset: [UInt16]) {
        for stream in reset {
            guard var state = streams[stream] else { continue }
            steps += state.held.count
            for message in state.held.unordered { bufferedBytes -= message.payload.count }
            heldMessages -= state.held.count
            state.held = Heap()
            state.nextSSN = 0
            streams[stream] = state
        }
    }

    /// Whether `tsn` arrived already (at or below the cumulative TSN counts as arrived).
    func contains(_ tsn: UInt32) -> Bool {
        let ahead = tsn &- cumulativeTSN
        guard ahead != 0, ahead < 0x8000_0000 else { return true }
        guard let index = rangeIndex(containingOrAfter: tsn) else { return false }
        return ranges[index].first.tsnAtMost(tsn)
    }

    // MARK: Ranges

    /// The first range that contains `tsn` or lies after it (binary search).
    private func rangeIndex(containingOrAfter tsn: UInt32) -> Int? {
        let target = tsn &- cumulativeTSN
        var low = 0, high = ranges.count
        while low < high {
            let middle = (low + high) / 2
            if ranges[middle].last &- cumulativeTSN < target { low = middle + 1 } else { high = middle }
        }
        return low < ranges.count ? low : nil
    }

    /// Whether recording `tsn` keeps the ranges within their cap (it extends or joins one, or there is room).
    private func canRecord(_ tsn: UInt32) -> Bool {
        guard ranges.count >= Self.maximumRanges else { return true }
        let index = rangeIndex(containingOrAfter: tsn) ?? ranges.count
        let joinsBefore = index > 0 && ranges[index - 1].last &+ 1 == tsn
        let joinsAfter = index < ranges.count && ranges[index].first == tsn &+ 1
        return joinsBefore || joinsAfter || tsn == cumulativeTSN &+ 1
    }

    private mutating func record(_ tsn: UInt32) {
        let index = rangeIndex(containingOrAfter: tsn) ?? ranges.count
        let joinsBefore = index > 0 && ranges[index - 1].last &+ 1 == tsn
        let joinsAfter = index < ranges.count && ranges[index].first == tsn &+ 1
        switch (joinsBefore, joinsAfter) {
        case (true, true):
            ranges[index - 1].last = ranges[index].last
            steps += min(index, ranges.count - index)
            ranges.remove(at: index)
        case (true, false):
            ranges[index - 1].last = tsn
        case (false, true):
            ranges[index].first = tsn
        case (false, false):
            steps += min(index, ranges.count - index)
            ranges.insert((tsn, tsn), at: index)
        }
    }

    private mutating func removeFirstRange() {
        steps += 1
        ranges.removeFirst()
    }

    /// Moves the cumulative TSN over what arrived in sequence, dropping fragments it leaves hopeless.
    private mutating func advance() {
        while let first = ranges.first, first.first == cumulativeTSN &+ 1 {
            let previous = cumulativeTSN
            cumulativeTSN = first.last
            removeFirstRange()
            dropHopelessFragments(from: previous, through: first.last)
        }
    }

    // MARK: Fragments

    private mutating func insertFragment(_ fragment: Fragment, at tsn: UInt32) {
        var first = tsn, last = tsn
        if let previous = fragments[tsn &- 1], previous.continues(into: fragment) { first = previous.otherEnd }
        if let next = fragments[tsn &+ 1], fragment.continues(into: next) { last = next.otherEnd }
        fragments[tsn] = fragment
        bufferedBytes += fragment.payload.count
        fragments[first]?.otherEnd = last
        fragments[last]?.otherEnd = first
        steps += 1
        if let head = fragments[first], head.isBeginning, fragments[last]?.isEnd == true {
            complete(first: first, last: last, head: head)
        }
    }

    /// Copies out the message in `first...last` (all present, linked) and delivers or holds it.
    private mutating func complete(first: UInt32, last: UInt32, head: Fragment) {
        var payload: [UInt8] = []
        var tsn = first
        while true {
            steps += 1
            // Present by construction (a run is contiguous); should that ever not hold, the message is dropped, not trusted.
            guard let piece = fragments.removeValue(forKey: tsn) else { return }
            bufferedBytes -= piece.payload.count
            payload += piece.payload
            if tsn == last { break }
            tsn &+= 1
        }
        if head.unordered {
            messages.append(Message(stream: head.stream, protocolIdentifier: head.protocolIdentifier, payload: payload, unordered: true))
            return
        }
        var state = streams[head.stream] ?? InboundStream()
        let key = state.key(of: head.ssn)
        if key == state.nextKey {
            messages.append(Message(stream: head.stream, protocolIdentifier: head.protocolIdentifier, payload: payload, unordered: false))
            state.nextKey += 1
            state.nextSSN &+= 1
            deliverWaiting(&state, stream: head.stream)
        } else if key > state.nextKey {
            steps += 1
            state.held.insert(HeldMessage(key: key, protocolIdentifier: head.protocolIdentifier, payload: payload))
            heldMessages += 1
            bufferedBytes += payload.count
        }
        // A sequence number already delivered or skipped (FORWARD-TSN, stream reset) is stale: dropped.
        streams[head.stream] = state
    }

    /// Removes the run of fragments whose last end is `last` (its `otherEnd` is the first).
    private mutating func removeRun(endingAt last: UInt32) {
        guard let end = fragments[last] else { return }
        removeRun(startingAt: end.otherEnd, through: last)
    }

    /// Removes linked fragments from `first` on, through `last` or the end of the run. A run is
    /// contiguous and within `maximumAhead`: the walk stops at the first gap whatever the links say.
    private mutating func removeRun(startingAt first: UInt32, through last: UInt32? = nil) {
        var tsn = first
        var previous: Fragment?
        while let fragment = fragments[tsn] {
            if let previous, !previous.continues(into: fragment) { break }
            steps += 1
            fragments[tsn] = nil
            bufferedBytes -= fragment.payload.count
            if tsn == last { break }
            previous = fragment
            tsn &+= 1
        }
    }

    /// Fragments at or below the cumulative TSN can never gain a neighbour: a run that starts there
    /// without a B flag, or ends below it without an E flag, will never be a message.
    private mutating func dropHopelessFragments(from start: UInt32, through end: UInt32) {
        var tsn = start
        while true {
            steps += 1
            if let fragment = fragments[tsn] {
                let isFirst = fragments[tsn &- 1].map { !$0.continues(into: fragment) } ?? true
                let isLast = fragments[tsn &+ 1].map { !fragment.continues(into: $0) } ?? true
                if isFirst, !fragment.isBeginning {
                    removeRun(startingAt: tsn)
                } else if isLast, !fragment.isEnd, tsn.tsnLessThan(cumulativeTSN) {
                    removeRun(endingAt: tsn)
                }
            }
            if tsn == end { break }
            tsn &+= 1
        }
    }

    // MARK: Ordered delivery

    private mutating func deliverWaiting(_ state: inout InboundStream, stream: UInt16) {
        while let next = state.held.min, next.key <= state.nextKey {
            steps += 1
            let message = state.held.removeMin()
            heldMessages -= 1
            bufferedBytes -= message.payload.count
            guard message.key == state.nextKey else { continue }  // a duplicate of one delivered
            messages.append(Message(stream: stream, protocolIdentifier: message.protocolIdentifier, payload: message.payload,
                                    unordered: false))
            state.nextKey += 1
            state.nextSSN &+= 1
        }
    }

    /// Delivers, in order, what waited on `stream` up to `sequence`; expects `sequence + 1` next.
    private mutating func skipOrdered(stream: UInt16, through sequence: UInt16) {
        var state = streams[stream] ?? InboundStream()
        let key = state.key(of: sequence)
        guard key >= state.nextKey else { return }
        while let next = state.held.min, next.key <= key {
            steps += 1
            let message = state.held.removeMin()
            heldMessages -= 1
            bufferedBytes -= message.payload.count
            guard message.key >= state.nextKey else { continue }
            messages.append(Message(stream: stream, protocolIdentifier: message.protocolIdentifier, payload: message.payload,
                                    unordered: false))
            state.nextKey = message.key + 1
        }
        state.nextKey = key + 1
        state.nextSSN = sequence &+ 1
        deliverWaiting(&state, stream: stream)
        streams[stream] = state
    }
}
