import ParleyWire

// libFuzzer entry point: SDP parsing, serializing what parsed, and answering it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSDP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let offer = try? SessionDescription(parsing: bytes) else { return 0 }
    let text = offer.text
    // What the serializer writes, the parser must read back.
    guard let again = try? SessionDescription(parsing: text) else { preconditionFailure("serialized SDP does not parse") }
    _ = again
    let parameters = AnswerParameters(
        iceUfrag: "fuzzfuzz", icePassword: "fuzzfuzzfuzzfuzzfuzzfuzz",
        fingerprint: CertificateFingerprint(algorithm: "sha-256", digest: Array(repeating: 1, count: 32)),
        candidates: [ICECandidate(foundation: "1", priority: 1, address: "127.0.0.1", port: 3478)],
        sessionID: 1, audioSSRC: 1, cname: "fuzz")
    if let negotiated = try? SessionDescription.iceLiteAnswer(to: offer, parameters: parameters) {
        _ = negotiated.answer.text
    }
    return 0
}
