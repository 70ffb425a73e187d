// libFuzzer entry point: the agent protocol's messages as an agent sends them: JSON text (first
// byte even) or a binary PCM frame at one of the rates (first byte odd).
import ParleyMedia
import ParleySession

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAgentMessages(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let first = bytes.first else { return 0 }
    let rest = UnsafeRawBufferPointer(rebasing: bytes.dropFirst())
    if first & 1 == 0 {
        switch AgentWire.decode(text: String(decoding: rest, as: UTF8.self)) {
        case .accept(let rate): precondition(OpusSampleRate.allCases.contains(rate))
        default: break
        }
    } else {
        let rate = OpusSampleRate.allCases[Int(first >> 1) % OpusSampleRate.allCases.count]
        if case .audio(let frame) = AgentWire.decode(audio: rest, sampleRate: rate) {
            precondition(frame.count == rate.samplesPer20Milliseconds)
        }
    }
    return 0
}
