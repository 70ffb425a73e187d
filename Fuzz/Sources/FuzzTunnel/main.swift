import ParleyWire

// libFuzzer entry point: tunnel header decoding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTunnel(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let (header, length) = try? TunnelHeader.decode(bytes) {
        precondition(length <= size)
        precondition(header.bytes == Array(bytes[0..<length]), "decode and encode disagree")
    }
    return 0
}
