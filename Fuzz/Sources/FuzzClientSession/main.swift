// libFuzzer entry point: Parley's ClientSession (what `parley load` runs by the hundred) behind the
// crypto. A real call is set up with Parley's WebRTCSession as the server, then each record is
// delivered to the client as the server would send it, with the call's keys:
//   0 SRTP plaintext, 1 SRTCP plaintext (encrypted with the server's key)
//   2 SCTP chunks (the client's verification tag and CRC-32C added) in a DTLS record
//   3 a raw datagram
//   4 an authenticated Binding request (the server's check) carrying the record as attributes
//   5 an authenticated Binding success (an answer to the client's check), its transaction id and
//     attributes from the record
//   6 time passes (the record's first two bytes in milliseconds)
// What the client sends goes to the server, which answers as it does.
import FuzzSupport
import ParleyMedia
@_spi(Fuzzing) import ParleySession
import ParleyWire

nonisolated(unsafe) var call: Call?
nonisolated(unsafe) var inputs = 0
nonisolated(unsafe) var calls = 0

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzClientSession(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    inputs += 1
    // Every other call DTLS 1.3 on BoringSSL (1.2 on OpenSSL otherwise).
    if call == nil || !call!.isUsable || inputs % 4000 == 0 {
        calls += 1
        call = Call(dtls13: calls % 2 == 0)
    }
    guard let call, call.isUsable else { return 0 }
    var checks = 0
    for record in Records(data, size) {
        switch record.kind % 7 {
        case 0, 1:
            if let packet = Call.protect(record.bytes, rtcp: record.kind % 7 == 1, keys: call.server.srtpKeys) {
                call.deliverToClient(packet)
            }
        case 2:
            if let tags = call.server.sctpTags {
                for datagram in call.server.sealApplicationData(Call.sctpPacket(record.bytes, tag: tags.peer)) {
                    call.deliverToClient(datagram)
                }
            }
        case 3:
            call.deliverToClient(record.array)
        case 4:
            checks += 1
            let id = STUNTransactionID(UInt32(truncatingIfNeeded: inputs), UInt32(truncatingIfNeeded: checks), 0xC11E)
            if let check = Call.check(username: "\(call.client.ufrag):\(call.serverUfrag)", password: call.client.password,
                                      transaction: id, attributes: record.bytes) {
                call.deliverToClient(check)
            }
        case 5:
            let id = STUNTransactionID(record.number(UInt32.self), 0, 0)
            if let answer = Call.check(username: "\(call.serverUfrag):\(call.client.ufrag)", password: Call.serverPassword,
                                       transaction: id, attributes: UnsafeRawBufferPointer(rebasing: record.bytes.dropFirst(min(4, record.bytes.count))),
                                       type: .bindingSuccess) {
                call.deliverToClient(answer)
            }
        default:
            call.advance(by: .milliseconds(Int64(record.number(UInt16.self))))
        }
        call.exchange()
    }
    return 0
}
