import ParleyWire

// libFuzzer entry point: routing token verification on arbitrary ufrag bytes.
let fuzzKeyring = RoutingKeyring(current: RoutingKey(id: 1, secret: (0..<32).map { UInt8($0) }))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzToken(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let token = try? fuzzKeyring.open(bytes) {
        // Anything that opens must re-seal to the same text (the format has one encoding per token).
        let resealed = fuzzKeyring.seal(token)
        precondition(Array(resealed.utf8) == Array(bytes), "a token opened from non-canonical text")
    }
    return 0
}
