import ParleyWire

/// A fuzzer input read as a sequence of records, so one input drives a state machine through many
/// steps: each record is a kind byte, a 16-bit big-endian length, then that many bytes (clipped to
/// what is left). At most `limit` records are read, so one input's work stays bounded.
public struct Records: Sequence, IteratorProtocol {
    public struct Record {
        public var kind: UInt8
        public var bytes: UnsafeRawBufferPointer

        /// The record's first bytes as a number (zero-padded), for records that carry one.
        public func number<T: FixedWidthInteger>(_: T.Type) -> T {
            var value: T = 0
            for index in 0..<Swift.min(bytes.count, MemoryLayout<T>.size) { value = value << 8 | T(truncatingIfNeeded: bytes[index]) }
            return value
        }

        public var array: [UInt8] { Array(bytes) }
    }

    private let bytes: UnsafeRawBufferPointer
    private var offset = 0
    private var read = 0
    private let limit: Int

    public init(_ data: UnsafePointer<UInt8>, _ size: Int, limit: Int = 32) {
        bytes = UnsafeRawBufferPointer(start: data, count: size)
        self.limit = limit
    }

    public mutating func next() -> Record? {
        guard read < limit, offset < bytes.count else { return nil }
        read += 1
        let kind = bytes[offset]
        offset += 1
        var length = bytes.count - offset
        if bytes.count - offset >= 2 {
            length = Swift.min(Int(bytes.uint16(at: offset)), bytes.count - offset - 2)
            offset += 2
        }
        let record = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        offset += length
        return Record(kind: kind, bytes: record)
    }
}

/// Builds record inputs (for the seed corpus a harness writes when asked).
public func record(_ kind: UInt8, _ bytes: [UInt8]) -> [UInt8] {
    [kind, UInt8(truncatingIfNeeded: bytes.count >> 8), UInt8(truncatingIfNeeded: bytes.count)] + bytes
}
