import ParleyWire

// libFuzzer entry point: STUN parsing, the FINGERPRINT check and the USERNAME split.
// Built by scripts/fuzz.sh (see docs/testing.md).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSTUN(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let message = try? STUNMessage.parse(bytes) {
        precondition(message.length == size)
        _ = message.hasValidFingerprint(in: bytes)
        if let ufrag = message.usernameRecipientPart(in: bytes) {
            precondition(ufrag.upperBound <= size)
        }
        for range in [message.username, message.realm, message.nonce, message.software, message.errorCode?.reason] {
            if let range { precondition(range.lowerBound >= stunHeaderLength && range.upperBound <= size) }
        }
    }
    _ = PacketKind.classify(bytes)
    return 0
}
