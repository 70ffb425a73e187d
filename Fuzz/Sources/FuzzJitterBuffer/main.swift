// libFuzzer entry point: the jitter buffer (IncomingAudio) with Opus decoding, fed packets with
// any sequence numbers, payloads and arrival times, and asked for a frame every 20 ms. Records:
// kind even, a packet (sequence number from its first two bytes, the rest its Opus payload);
// kind odd, time passes by the first byte's milliseconds and due frames are taken.
import FuzzSupport
import ParleyMedia
import ParleySession
import ParleyWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJitterBuffer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let incoming = try? IncomingAudio(sampleRate: .hz16000) else { return 0 }
    var now = Instant(nanoseconds: 1_000_000_000)
    var nextFrame = now
    for record in Records(data, size, limit: 128) {
        if record.kind & 1 == 0 {
            let payload = Array(record.bytes.dropFirst(min(2, record.bytes.count)).prefix(1275))
            incoming.receive(sequence: record.number(UInt16.self), payload: payload, now: now)
        } else {
            now = now + .milliseconds(Int64(record.bytes.first ?? 20))
            while nextFrame <= now {
                if let frame = incoming.nextFrame(now: nextFrame) {
                    precondition(frame.count <= OpusSampleRate.hz16000.samplesPer20Milliseconds * 6)
                }
                nextFrame = nextFrame + .milliseconds(20)
            }
        }
    }
    return 0
}
