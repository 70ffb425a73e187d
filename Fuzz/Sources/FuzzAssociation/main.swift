// libFuzzer entry point: an established SCTP association with DCEP on top (Parley's data channels,
// as the DTLS server) fed a sequence of packets. Its peer is a second ParleySCTP association that
// did the handshake; records:
//   0 SCTP chunks: the harness adds the association's verification tag and the CRC-32C
//   1 a raw packet (any tag, any checksum)
//   2 a message from the peer's side on a stream (the record's first two bytes), as DCEP or data
//   3 time passes (the first two bytes in milliseconds): retransmissions, heartbeats, resets
// Packets each side sends go to the other, so SACKs, FORWARD-TSNs and resets flow both ways.
import FuzzSupport
import ParleySCTP
import ParleyWire

final class Pair {
    var now = Instant(nanoseconds: 1_000_000_000)
    let ours: DataChannels
    let peer: SCTPAssociation

    init() {
        ours = DataChannels(association: SCTPAssociation(now: now), dtlsServer: true)
        peer = SCTPAssociation(now: now)
        peer.connect(now: now)
        pump()
    }

    func pump() {
        for _ in 0..<16 {
            let fromPeer = peer.takeOutgoing(), fromUs = ours.takeOutgoing()
            for packet in fromPeer { packet.withUnsafeBytes { ours.handle($0, now: now) } }
            for packet in fromUs { packet.withUnsafeBytes { peer.handle($0, now: now) } }
            _ = ours.takeEvents()
            _ = peer.takeEvents()
            if fromPeer.isEmpty && fromUs.isEmpty { return }
        }
    }
}

nonisolated(unsafe) var pair: Pair?
nonisolated(unsafe) var inputs = 0

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAssociation(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    inputs += 1
    if pair == nil || pair!.ours.association.state != .established || inputs % 2000 == 0 { pair = Pair() }
    guard let pair else { return 0 }
    for record in Records(data, size) {
        switch record.kind % 4 {
        case 0:
            Call.sctpPacket(record.bytes, tag: pair.ours.association.localTag).withUnsafeBytes { pair.ours.handle($0, now: pair.now) }
        case 1:
            pair.ours.handle(record.bytes, now: pair.now)
        case 2:
            let stream = record.number(UInt16.self)
            let payload = Array(record.bytes.dropFirst(min(2, record.bytes.count)))
            if !payload.isEmpty {
                pair.peer.send(stream: stream, protocolIdentifier: payload[0] & 1 == 0 ? 50 : 51, payload: payload,
                               unordered: payload[0] & 2 != 0, now: pair.now)
            }
        default:
            pair.now = pair.now + .milliseconds(Int64(record.number(UInt16.self)))
            pair.ours.handleTimeout(now: pair.now)
            pair.peer.handleTimeout(now: pair.now)
        }
        pair.pump()
        precondition(pair.ours.association.bufferedAmount <= DataChannels.maximumBufferedAmount + 65536)
    }
    return 0
}
