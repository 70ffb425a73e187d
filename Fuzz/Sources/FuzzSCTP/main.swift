import ParleySCTP
import ParleyWire

// libFuzzer entry point: SCTP packet and chunk decoding (ParleySCTP).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSCTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let packet = try? SCTPPacket.parse(bytes, verifyChecksum: false) else { return 0 }
    for chunk in packet.chunks {
        precondition(chunk.value.lowerBound >= SCTPPacket.headerLength && chunk.value.upperBound <= size)
        if let data = try? SCTPData.decode(chunk, in: bytes) { precondition(data.payload.upperBound <= size) }
        if let initiation = try? SCTPInitiation.decode(chunk, in: bytes), let cookie = initiation.stateCookie {
            precondition(cookie.upperBound <= size)
        }
        _ = try? SCTPSelectiveAck.decode(chunk, in: bytes)
        _ = try? SCTPForwardTSN.decode(chunk, in: bytes)
        _ = try? SCTPReconfigurationParameter.decode(chunk, in: bytes)
    }
    return 0
}
