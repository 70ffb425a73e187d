/// What a datagram on a WebRTC port carries, decided by its first byte as RFC 7983 specifies
/// (with RFC 5761 to tell RTCP from RTP).
public enum PacketKind: Sendable, Equatable {
    case stun
    case zrtp
    case dtls
    case turnChannel
    case rtp
    case rtcp
    /// Empty, or a first byte no WebRTC protocol uses: drop it.
    case unknown

    public static func classify(_ packet: UnsafeRawBufferPointer) -> PacketKind {
        guard let first = packet.first else { return .unknown }
        switch first {
        case 0...3: return .stun
        case 16...19: return .zrtp
        case 20...63: return .dtls
        case 64...79: return .turnChannel
        case 128...191:
            // RTCP packet types 192–223 sit where RTP's marker bit and payload type are.
            guard packet.count >= 2 else { return .unknown }
            return (192...223).contains(packet[1]) ? .rtcp : .rtp
        default: return .unknown
        }
    }

    public static func classify(_ packet: some ContiguousBytesLike) -> PacketKind {
        packet.withRawBytes { classify($0) }
    }
}

/// Byte containers whose contents can be read in place, so the parsers take arrays and raw
/// buffers alike without copying. Ranges a parser returns are offsets from the start of the
/// buffer it was given, so slices are deliberately not among them (their indices do not start
/// at 0): rebase a slice into an `UnsafeRawBufferPointer` first.
public protocol ContiguousBytesLike {
    func withRawBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R
}

extension Array: ContiguousBytesLike where Element == UInt8 {
    @inlinable
    public func withRawBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeBytes { raw in
            do throws(E) { return .success(try body(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

extension UnsafeRawBufferPointer: ContiguousBytesLike {
    @inlinable
    public func withRawBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(self)
    }
}
