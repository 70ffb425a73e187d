/// What an association's INIT names about its own side: its verification tag (the one the peer
/// puts on every packet it sends) and its first TSN. Drawn when the INIT is written; with SNAP that
/// is before the association exists (the answer carries the INIT), so it is a value of its own.
public struct SCTPInitiationIdentity: Sendable, Equatable {
    public let tag: UInt32
    public let initialTSN: UInt32

    /// Nil for a zero tag, which no INIT may carry (RFC 9260 §3.3.2).
    public init?(tag: UInt32, initialTSN: UInt32) {
        guard tag != 0 else { return nil }
        self.tag = tag
        self.initialTSN = initialTSN
    }

    public init<G: RandomNumberGenerator>(using generator: inout G) {
        var tag: UInt32 = 0
        while tag == 0 { tag = generator.next() }
        self.tag = tag
        initialTSN = generator.next()
    }
}

/// An SCTP INIT chunk exchanged in SDP instead of on the wire (SNAP, draft-hancke-tsvwg-snap:
/// `a=sctp-init:` carries the chunk — type, flags, length, value — in base64, without the common
/// header). Decoded with the same bounded parsers as a packet's INIT; an INIT ACK, a cookie, a
/// zero tag, zero streams, a length that disagrees with the bytes, or over 2 KiB is refused.
public struct SCTPOutOfBandInit: Sendable, Equatable {
    /// sctp-proto's bound; an INIT with Parley's or Chromium's parameters is 30 bytes.
    public static let maximumBytes = 2048

    /// The chunk as its length field names it (without padding).
    public let chunk: [UInt8]
    /// The peer's side: its tag, window, streams and first TSN.
    public let initiation: SCTPInitiation
    public let identity: SCTPInitiationIdentity

    public init(decoding given: [UInt8]) throws(SCTPParseError) {
        guard given.count >= 20, given.count <= Self.maximumBytes else { throw .truncated }
        guard given[0] == SCTPChunkType.initiation.rawValue else { throw .malformedChunk(SCTPChunkType(rawValue: given[0])) }
        // The chunk's length names every byte given; padding after the last parameter is not sent,
        // but up to three zero bytes of it are tolerated.
        let length = Int(given[2]) << 8 | Int(given[3])
        guard length <= given.count, given.count - length < 4, given[length...].allSatisfy({ $0 == 0 }) else {
            throw .malformedChunk(.initiation)
        }
        let chunk = Array(given[..<length])
        // As a packet: a common header in front (its checksum unchecked), the chunk padded to four bytes.
        let packet = [UInt8](repeating: 0, count: SCTPPacket.headerLength) + chunk
            + [UInt8](repeating: 0, count: (4 - chunk.count % 4) % 4)
        let decoded = packet.withUnsafeBytes { bytes -> Result<SCTPInitiation, SCTPParseError> in
            do throws(SCTPParseError) {
                let parsed = try SCTPPacket.parse(bytes, verifyChecksum: false)
                guard parsed.chunks.count == 1, let only = parsed.chunks.first, only.type == .initiation else {
                    throw .malformedChunk(.initiation)
                }
                return .success(try SCTPInitiation.decode(only, in: bytes))
            } catch {
                return .failure(error)
            }
        }
        let initiation = try decoded.get()
        guard initiation.stateCookie == nil,
              let identity = SCTPInitiationIdentity(tag: initiation.initiateTag, initialTSN: initiation.initialTSN) else {
            throw .malformedChunk(.initiation)
        }
        self.chunk = chunk
        self.identity = identity
        // Ranges into the packet made here mean nothing outside it.
        var kept = initiation
        kept.supportedExtensions = nil
        self.initiation = kept
    }
}
