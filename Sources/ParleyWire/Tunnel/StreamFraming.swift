/// RFC 4571 framing, as ICE-TCP uses it (RFC 6544 §3): each datagram on a TCP connection is
/// preceded by its length, 2 bytes big-endian. Sans-IO: bytes in as the connection delivers them
/// (any split), whole frames out.
///
/// A frame longer than `maximumFrame` is an error, not something to buffer: over a relay a frame is
/// one STUN, DTLS, RTP or RTCP datagram, which never exceeds the tunnel's datagram size, so a peer
/// that announces more is not an ICE agent and its connection is closed. Memory per connection is
/// therefore bounded by one partial frame (`maximumFrame` + 2 bytes). A zero-length frame carries
/// nothing any protocol here sends; it is skipped, not an error (RFC 4571 allows it).
public struct StreamDeframer: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        /// The length field announced more than `maximumFrame` bytes.
        case frameTooLong(Int)
    }

    public let maximumFrame: Int
    /// A frame (or a length field) cut by the end of the last delivery; at most `maximumFrame` + 2 bytes.
    private var partial: [UInt8] = []
    /// Set once a frame was too long: the stream cannot be resynchronised, every later call fails.
    public private(set) var failure: Failure?

    public init(maximumFrame: Int = 2048) {
        self.maximumFrame = max(1, min(maximumFrame, Int(UInt16.max)))
    }

    /// Bytes held for a frame not yet complete.
    public var bufferedBytes: Int { partial.count }

    /// Feeds bytes as the connection delivered them; calls `frame` for each complete frame (its
    /// bytes valid only during the call) until it returns false, which means the caller is closing
    /// the connection: the rest of `bytes` is dropped. Returns the failure, if any: the caller
    /// closes the connection. Work is linear in `bytes`; at most one partial frame is copied.
    @discardableResult
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, _ frame: (UnsafeRawBufferPointer) -> Bool) -> Failure? {
        if let failure { return failure }
        var rest = bytes[...]
        // First finish the frame a previous delivery cut.
        if !partial.isEmpty {
            if partial.count < 2 {
                let take = min(2 - partial.count, rest.count)
                partial.append(contentsOf: rest.prefix(take))
                rest = rest.dropFirst(take)
                if partial.count < 2 { return nil }
            }
            let length = Int(partial[0]) << 8 | Int(partial[1])
            guard length <= maximumFrame else { return fail(length) }
            let missing = 2 + length - partial.count
            let take = min(missing, rest.count)
            partial.append(contentsOf: rest.prefix(take))
            rest = rest.dropFirst(take)
            guard partial.count == 2 + length else { return nil }
            let keepGoing = partial.withUnsafeBytes { whole in
                length == 0 || frame(UnsafeRawBufferPointer(rebasing: whole[2...]))
            }
            partial.removeAll(keepingCapacity: true)
            if !keepGoing { return nil }
        }
        // Then whole frames straight from the delivery, without a copy.
        while rest.count >= 2 {
            let length = Int(rest[rest.startIndex]) << 8 | Int(rest[rest.startIndex + 1])
            guard length <= maximumFrame else { return fail(length) }
            guard rest.count >= 2 + length else { break }
            let body = UnsafeRawBufferPointer(rebasing: rest[(rest.startIndex + 2)..<(rest.startIndex + 2 + length)])
            rest = rest.dropFirst(2 + length)
            if length > 0, !frame(body) { return nil }
        }
        // What is left starts a frame the next delivery finishes.
        if !rest.isEmpty {
            partial.append(contentsOf: rest)
        }
        return nil
    }

    private mutating func fail(_ length: Int) -> Failure {
        let failure = Failure.frameTooLong(length)
        self.failure = failure
        partial = []
        return failure
    }

    /// The 2-byte length field for a frame of `length` bytes; nil past 65,535 (it cannot be framed).
    public static func header(length: Int) -> (UInt8, UInt8)? {
        guard (0...Int(UInt16.max)).contains(length) else { return nil }
        return (UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length))
    }
}
