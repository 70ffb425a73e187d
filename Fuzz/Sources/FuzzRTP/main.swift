// libFuzzer entry point: the RTP and RTCP parsers, and the receive statistics fed a sequence of
// headers with arbitrary sequence numbers, timestamps and arrival times (records: kind 0 a packet
// to parse and record, 1 a compound RTCP packet, 2 a report block taken now).
import FuzzSupport
import ParleyWire

nonisolated(unsafe) var statistics = RTPReceiveStatistics(clockRate: 48000)
nonisolated(unsafe) var clock: Int64 = 0

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    statistics = RTPReceiveStatistics(clockRate: 48000)
    for record in Records(data, size, limit: 256) {
        switch record.kind % 3 {
        case 0:
            if let header = try? RTPHeader.parse(record.bytes) {
                precondition(header.payload.lowerBound >= RTPHeader.fixedLength && header.payload.upperBound <= record.bytes.count)
                // Arrival: the packet's own first byte moves the clock by up to 255 ms, or jumps far.
                clock &+= record.bytes[0] == 0xFF ? Int64(header.timestamp) << 20 : Int64(record.bytes[0]) * 1_000_000
                statistics.record(sequence: header.sequenceNumber, timestamp: header.timestamp, ssrc: header.ssrc,
                                  arrival: .nanoseconds(clock))
            }
        case 1:
            if let packets = try? RTCPCompound.parse(record.bytes) { precondition(packets.count <= 16) }
        default:
            if let block = statistics.makeReportBlock(lastSenderReport: record.number(UInt32.self), delaySinceLastSenderReport: 1) {
                precondition(block.jitter <= 0x8000_0000, "jitter is a mean of 32-bit wrapped differences")
                var buffer = [UInt8](repeating: 0, count: RTCPCompound.maximumReportLength)
                let length = buffer.withUnsafeMutableBytes {
                    RTCPCompound.writeReport(ssrc: 1, sender: nil, blocks: [block], cname: "fuzz", into: $0)
                }
                let parsed = buffer.withUnsafeBytes { try? RTCPCompound.parse(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
                guard case .receiverReport(_, let blocks)? = parsed?.first, blocks.first?.jitter == block.jitter else {
                    preconditionFailure("a report block does not survive writing and parsing")
                }
            }
        }
    }
    return 0
}
