import ParleyWire

/// Typed views of the chunks a data-channel association exchanges. Each decoder checks the fixed
/// fields against the chunk's length and records variable parts as ranges into the packet.

/// INIT and INIT ACK (RFC 9260 §3.3.2–3.3.3).
public struct SCTPInitiation: Equatable, Sendable {
    public var initiateTag: UInt32
    public var advertisedReceiverWindow: UInt32
    public var outboundStreams: UInt16
    public var inboundStreams: UInt16
    public var initialTSN: UInt32
    /// INIT ACK only: the state cookie to echo.
    public var stateCookie: Range<Int>?
    /// RFC 3758 (FORWARD-TSN supported parameter, 0xC000).
    public var forwardTSNSupported: Bool
    /// Chunk types named by the Supported Extensions parameter (RFC 5061, 0x8008).
    public var supportedExtensions: Range<Int>?

    public static func decode(_ chunk: SCTPChunk, in bytes: UnsafeRawBufferPointer) throws(SCTPParseError) -> SCTPInitiation {
        let value = chunk.value
        guard value.count >= 16 else { throw .malformedChunk(chunk.type) }
        let base = value.lowerBound
        var result = SCTPInitiation(
            initiateTag: bytes.uint32(at: base), advertisedReceiverWindow: bytes.uint32(at: base + 4),
            outboundStreams: bytes.uint16(at: base + 8), inboundStreams: bytes.uint16(at: base + 10),
            initialTSN: bytes.uint32(at: base + 12), stateCookie: nil, forwardTSNSupported: false, supportedExtensions: nil)
        // RFC 9260 §3.3.2: a zero initiate tag or zero streams make the INIT invalid.
        guard result.initiateTag != 0, result.outboundStreams != 0, result.inboundStreams != 0 else {
            throw .malformedChunk(chunk.type)
        }
        try forEachParameter(in: (base + 16)..<value.upperBound, of: bytes, chunk: chunk.type) { type, range in
            switch type {
            case 0x0007: result.stateCookie = range
            case 0xC000: result.forwardTSNSupported = true
            case 0x8008: result.supportedExtensions = range
            default: break
            }
        }
        return result
    }
}

/// DATA (RFC 9260 §3.3.1).
public struct SCTPData: Equatable, Sendable {
    public var tsn: UInt32
    public var streamID: UInt16
    public var streamSequence: UInt16
    public var payloadProtocol: UInt32
    public var payload: Range<Int>
    public var unordered: Bool
    public var beginning: Bool
    public var ending: Bool
    /// I bit (RFC 7053): the receiver should SACK at once.
    public var immediate: Bool

    public static func decode(_ chunk: SCTPChunk, in bytes: UnsafeRawBufferPointer) throws(SCTPParseError) -> SCTPData {
        let base = chunk.value.lowerBound
        guard chunk.value.count >= 12 else { throw .malformedChunk(chunk.type) }
        return SCTPData(
            tsn: bytes.uint32(at: base), streamID: bytes.uint16(at: base + 4), streamSequence: bytes.uint16(at: base + 6),
            payloadProtocol: bytes.uint32(at: base + 8), payload: (base + 12)..<chunk.value.upperBound,
            unordered: chunk.flags & 0x04 != 0, beginning: chunk.flags & 0x02 != 0, ending: chunk.flags & 0x01 != 0,
            immediate: chunk.flags & 0x08 != 0)
    }
}

/// SACK (RFC 9260 §3.3.4).
public struct SCTPSelectiveAck: Equatable, Sendable {
    public var cumulativeTSN: UInt32
    public var advertisedReceiverWindow: UInt32
    /// Gap ack blocks as offsets from the cumulative TSN (start, end), at most 64 read.
    public var gaps: [(start: UInt16, end: UInt16)]
    public var duplicateCount: Int

    public static func decode(_ chunk: SCTPChunk, in bytes: UnsafeRawBufferPointer) throws(SCTPParseError) -> SCTPSelectiveAck {
        let base = chunk.value.lowerBound
        guard chunk.value.count >= 12 else { throw .malformedChunk(chunk.type) }
        let gapCount = Int(bytes.uint16(at: base + 8)), duplicates = Int(bytes.uint16(at: base + 10))
        guard chunk.value.count >= 12 + 4 * gapCount + 4 * duplicates else { throw .malformedChunk(chunk.type) }
        let gaps = (0..<min(gapCount, 64)).map { index in
            (bytes.uint16(at: base + 12 + 4 * index), bytes.uint16(at: base + 14 + 4 * index))
        }
        return SCTPSelectiveAck(cumulativeTSN: bytes.uint32(at: base), advertisedReceiverWindow: bytes.uint32(at: base + 4),
                                gaps: gaps, duplicateCount: duplicates)
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.cumulativeTSN == rhs.cumulativeTSN && lhs.advertisedReceiverWindow == rhs.advertisedReceiverWindow
            && lhs.gaps.map { [$0.start, $0.end] } == rhs.gaps.map { [$0.start, $0.end] } && lhs.duplicateCount == rhs.duplicateCount
    }
}

/// FORWARD-TSN (RFC 3758 §3.2).
public struct SCTPForwardTSN: Equatable, Sendable {
    public var newCumulativeTSN: UInt32
    /// (stream, sequence) pairs, at most 256 read.
    public var streams: [SCTPStreamSequence]

    public static func decode(_ chunk: SCTPChunk, in bytes: UnsafeRawBufferPointer) throws(SCTPParseError) -> SCTPForwardTSN {
        let base = chunk.value.lowerBound
        guard chunk.value.count >= 4, (chunk.value.count - 4) % 4 == 0 else { throw .malformedChunk(chunk.type) }
        let count = min((chunk.value.count - 4) / 4, 256)
        return SCTPForwardTSN(newCumulativeTSN: bytes.uint32(at: base), streams: (0..<count).map { index in
            SCTPStreamSequence(stream: bytes.uint16(at: base + 4 + 4 * index), sequence: bytes.uint16(at: base + 6 + 4 * index))
        })
    }
}

public struct SCTPStreamSequence: Equatable, Sendable {
    public var stream: UInt16
    public var sequence: UInt16
}

/// RE-CONFIG (RFC 6525 §3.1): the parameters WebRTC uses to close channels.
public enum SCTPReconfigurationParameter: Equatable, Sendable {
    /// Outgoing SSN Reset Request (13): the sender will reset these streams (all if empty).
    case outgoingReset(requestSequence: UInt32, responseSequence: UInt32, lastTSN: UInt32, streams: [UInt16])
    /// Re-configuration Response (16).
    case response(responseSequence: UInt32, result: UInt32)
    case other(type: UInt16)

    public static func decode(_ chunk: SCTPChunk, in bytes: UnsafeRawBufferPointer) throws(SCTPParseError) -> [SCTPReconfigurationParameter] {
        var parameters: [SCTPReconfigurationParameter] = []
        try forEachParameter(in: chunk.value, of: bytes, chunk: chunk.type) { type, range throws(SCTPParseError) in
            switch type {
            case 13:
                guard range.count >= 12, (range.count - 12) % 2 == 0 else { throw .malformedChunk(chunk.type) }
                let streams = (0..<min((range.count - 12) / 2, 1024)).map { bytes.uint16(at: range.lowerBound + 12 + 2 * $0) }
                parameters.append(.outgoingReset(requestSequence: bytes.uint32(at: range.lowerBound),
                                                 responseSequence: bytes.uint32(at: range.lowerBound + 4),
                                                 lastTSN: bytes.uint32(at: range.lowerBound + 8), streams: streams))
            case 16:
                guard range.count >= 8 else { throw .malformedChunk(chunk.type) }
                parameters.append(.response(responseSequence: bytes.uint32(at: range.lowerBound),
                                            result: bytes.uint32(at: range.lowerBound + 4)))
            default:
                parameters.append(.other(type: type))
            }
        }
        guard parameters.count <= 2 else { throw .malformedChunk(chunk.type) }
        return parameters
    }
}

/// Walks type-length-value parameters (RFC 9260 §3.2.1), padded to 4 bytes, bounded in number.
func forEachParameter(
    in range: Range<Int>, of bytes: UnsafeRawBufferPointer, chunk: SCTPChunkType,
    _ body: (UInt16, Range<Int>) throws(SCTPParseError) -> Void
) throws(SCTPParseError) {
    var offset = range.lowerBound
    var count = 0
    while offset < range.upperBound {
        guard range.upperBound - offset >= 4, count < 64 else { throw .malformedChunk(chunk) }
        let type = bytes.uint16(at: offset), length = Int(bytes.uint16(at: offset + 2))
        guard length >= 4, offset + length <= range.upperBound else { throw .malformedChunk(chunk) }
        try body(type, (offset + 4)..<(offset + length))
        offset += (length + 3) & ~3
        count += 1
    }
}
