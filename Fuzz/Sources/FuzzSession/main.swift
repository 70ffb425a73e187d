// libFuzzer entry point: Parley's WebRTCSession behind the crypto. A real call (ICE both ways,
// DTLS, SCTP, `oai-events`) is set up with Parley's own client, then each record of the input is
// delivered to the session as the client would send it, with the call's keys:
//   0 SRTP: the record is an RTP packet's plaintext (any header), encrypted with the client's key
//   1 SRTCP: the record is a compound RTCP packet's plaintext
//   2 SCTP over DTLS: the record is SCTP chunks; the harness adds the session's verification tag
//     and the CRC-32C, and sends the packet as a DTLS record
//   3 a raw datagram (STUN, DTLS, garbage: whatever the bytes are)
//   4 an authenticated Binding request carrying the record as its attributes
//   5 a data-channel message on `oai-events` (text or binary by the first byte)
//   6 time passes: the record's first two bytes in milliseconds (timers, consent, retransmissions)
//   7 an answer to the session's latest check, with the record as attributes (consent, validation)
//   8 from another address of the client's (the record's first byte picks it): an authenticated
//     check (USE-CANDIDATE by the second byte) with the rest as attributes, or SRTP, or raw bytes —
//     path validation, switching, replay and held DTLS
//   9 a captured check of the client's replayed from another address
// What the session sends goes back to the client, which answers as a client does. Calls alternate
// between the echo agent and the parrot (jitter buffer, Opus both ways, VAD), and every third is set
// up with WARP (SNAP, SPED, a negotiated oai-events). A call is set up
// again when the last one ended, and every few thousand inputs, so state stays varied but a
// crash reproduces from its input alone in most cases (replay the input to check).
import FuzzSupport
import ParleyMedia
@_spi(Fuzzing) import ParleySession
import ParleyWire

nonisolated(unsafe) var call: Call?
nonisolated(unsafe) var inputs = 0
nonisolated(unsafe) var calls = 0

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSession(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    inputs += 1
    // Echo or parrot, every third call WARP (SNAP, SPED, a negotiated oai-events), every other one
    // DTLS 1.3 on BoringSSL (1.2 on OpenSSL otherwise).
    if call == nil || !call!.isUsable || inputs % 4000 == 0 {
        calls += 1
        // (Not `calls % 2` alone: with calls that stay usable it would pair 1.3 with parrot every time.)
        call = Call(parrot: inputs % 8000 >= 4000, warp: (inputs / 4000) % 3 == 1, dtls13: (inputs / 8000 + calls) % 2 == 1)
    }
    guard let call, call.isUsable else { return 0 }
    var checks = 0
    for record in Records(data, size) {
        switch record.kind % 10 {
        case 0, 1:
            if let packet = Call.protect(record.bytes, rtcp: record.kind % 10 == 1, keys: call.client.srtpKeys) {
                call.deliverToServer(packet)
            }
        case 2:
            if let tags = call.client.sctpTags {
                for datagram in call.client.sealApplicationData(Call.sctpPacket(record.bytes, tag: tags.peer)) {
                    call.deliverToServer(datagram)
                }
            }
        case 3:
            call.deliverToServer(record.bytes)
        case 4:
            checks += 1
            let id = STUNTransactionID(UInt32(truncatingIfNeeded: inputs), UInt32(truncatingIfNeeded: checks), 0x5EED)
            if let check = Call.check(username: "\(call.serverUfrag):\(call.client.ufrag)", password: Call.serverPassword,
                                      transaction: id, attributes: record.bytes) {
                call.deliverToServer(check)
            }
        case 5:
            _ = call.client.sendDataChannelMessage(record.array.dropFirst().map { $0 }, binary: record.bytes.first.map { $0 & 1 == 1 } ?? false,
                                                   now: call.now)
        case 6:
            call.advance(by: .milliseconds(Int64(record.number(UInt16.self))))
        case 8:
            guard record.bytes.count >= 2 else { break }
            let source = Call.otherAddresses[Int(record.bytes[0]) % Call.otherAddresses.count]
            let rest = UnsafeRawBufferPointer(rebasing: record.bytes.dropFirst(2))
            switch record.bytes[1] % 4 {
            case 0, 1:
                checks += 1
                let id = STUNTransactionID(UInt32(truncatingIfNeeded: inputs), UInt32(truncatingIfNeeded: checks), 0xA17)
                let nominate: [UInt8] = record.bytes[1] & 1 == 1 ? [0x00, 0x25, 0x00, 0x00] : []
                let attributes = nominate + Array(rest)
                if let check = attributes.withUnsafeBytes({
                    Call.check(username: "\(call.serverUfrag):\(call.client.ufrag)", password: Call.serverPassword,
                               transaction: id, attributes: $0) }) {
                    call.deliverToServer(check, from: source)
                }
            case 2:
                if let packet = Call.protect(rest, rtcp: false, keys: call.client.srtpKeys) { call.deliverToServer(packet, from: source) }
            default:
                call.deliverToServer(rest, from: source)
            }
        case 9:
            if let check = call.lastClientCheck {
                call.deliverToServer(check, from: Call.otherAddresses[Int(record.number(UInt8.self)) % Call.otherAddresses.count])
            }
        default:
            // An answer to the session's last check, authenticated with the client's password.
            if let request = call.lastServerCheck,
               let answer = Call.check(username: "\(call.client.ufrag):\(call.serverUfrag)", password: call.client.password,
                                       transaction: request, attributes: record.bytes, type: .bindingSuccess) {
                call.deliverToServer(answer)
            }
        }
        call.exchange()
    }
    return 0
}
