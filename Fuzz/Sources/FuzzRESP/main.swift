// libFuzzer entry point: the route store's RESP reader on arbitrary bytes, whole and cut at every
// few bytes (a reply arriving in pieces): it returns a reply and its length, asks for more, or
// throws — and a reply it read whole reads the same from its pieces.
import ParleyWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let whole = try? RESPReader.read(bytes) else { return 0 }
    precondition(whole.length > 0 && whole.length <= size)
    // Any prefix shorter than the reply is incomplete (or already invalid), never a different reply.
    for cut in stride(from: 0, to: whole.length, by: max(1, whole.length / 16)) {
        if let early = try? RESPReader.read(UnsafeRawBufferPointer(rebasing: bytes[0..<cut])) {
            preconditionFailure("a prefix of \(cut) bytes read as a reply of \(early.length)")
        }
    }
    return 0
}
