import ParleyWire
import Testing

/// RFC 4571 framing (ICE-TCP): the vectors of docs/protocol.md#ice-tcp-framing.
@Suite struct StreamFramingTests {
    /// Two frames, "AB" and a 3-byte STUN-ish body, then the start of a third.
    static let stream: [UInt8] = [0x00, 0x02, 0x41, 0x42, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x05, 0xFF]

    func frames(of chunks: [[UInt8]], maximum: Int = 2048) -> (frames: [[UInt8]], failure: StreamDeframer.Failure?, buffered: Int) {
        var deframer = StreamDeframer(maximumFrame: maximum)
        var frames: [[UInt8]] = []
        var failure: StreamDeframer.Failure?
        for chunk in chunks {
            failure = chunk.withUnsafeBytes { bytes in deframer.feed(bytes) { frames.append(Array($0)); return true } } ?? failure
        }
        return (frames, failure, deframer.bufferedBytes)
    }

    @Test func framesComeOutWholeHoweverTheStreamIsSplit() {
        let expected: [[UInt8]] = [[0x41, 0x42], [0x00, 0x01, 0x00]]
        #expect(frames(of: [Self.stream]).frames == expected)
        #expect(frames(of: [Self.stream]).buffered == 3, "the third frame's length and first byte wait")
        // Every split point, and one byte at a time.
        for cut in 0...Self.stream.count {
            let result = frames(of: [Array(Self.stream[..<cut]), Array(Self.stream[cut...])])
            #expect(result.frames == expected, "cut at \(cut)")
            #expect(result.failure == nil)
        }
        #expect(frames(of: Self.stream.map { [$0] }).frames == expected)
    }

    @Test func aFrameLongerThanTheLimitFailsTheStreamForGood() {
        let result = frames(of: [[0x08, 0x01] + [UInt8](repeating: 0, count: 10)])
        #expect(result.failure == .frameTooLong(2049) && result.frames.isEmpty && result.buffered == 0)
        // Split inside the length field, after a good frame.
        let split = frames(of: [[0x00, 0x01, 0x7F, 0xFF], [0xFF, 0x00]])
        #expect(split.frames == [[0x7F]] && split.failure == .frameTooLong(65535))
        // Once failed, nothing more comes out.
        var deframer = StreamDeframer(maximumFrame: 4)
        _ = [UInt8]([0x00, 0x05]).withUnsafeBytes { deframer.feed($0) { _ in true } }
        var after = 0
        let again = [UInt8]([0x00, 0x01, 0x01]).withUnsafeBytes { deframer.feed($0) { _ in after += 1; return true } }
        #expect(again == .frameTooLong(5) && after == 0)
    }

    @Test func emptyFramesAreSkippedAndStoppingDropsTheRest() {
        #expect(frames(of: [[0x00, 0x00, 0x00, 0x01, 0x09, 0x00, 0x00]]).frames == [[0x09]])
        var deframer = StreamDeframer()
        var seen = 0
        _ = [UInt8]([0x00, 0x01, 0x01, 0x00, 0x01, 0x02, 0x00]).withUnsafeBytes { deframer.feed($0) { _ in seen += 1; return false } }
        #expect(seen == 1 && deframer.bufferedBytes == 0, "a caller that stops is closing: nothing is kept")
    }

    @Test func memoryIsBoundedByOnePartialFrame() {
        var deframer = StreamDeframer(maximumFrame: 2048)
        let header: [UInt8] = [0x08, 0x00]  // 2048 bytes announced
        _ = header.withUnsafeBytes { deframer.feed($0) { _ in true } }
        for _ in 0..<2047 { _ = [UInt8]([7]).withUnsafeBytes { deframer.feed($0) { _ in true } } }
        #expect(deframer.bufferedBytes == 2049)
        var delivered = 0
        _ = [UInt8]([7]).withUnsafeBytes { deframer.feed($0) { delivered = $0.count; return true } }
        #expect(delivered == 2048 && deframer.bufferedBytes == 0)
    }

    @Test func headers() {
        #expect(StreamDeframer.header(length: 0)! == (0, 0))
        #expect(StreamDeframer.header(length: 0x1234)! == (0x12, 0x34))
        #expect(StreamDeframer.header(length: 65535)! == (0xFF, 0xFF))
        #expect(StreamDeframer.header(length: 65536) == nil && StreamDeframer.header(length: -1) == nil)
    }
}
