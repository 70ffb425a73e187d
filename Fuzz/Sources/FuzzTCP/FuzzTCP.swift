import FuzzSupport
import ParleyRouting
import ParleyWire

// libFuzzer entry point: the relay's ICE-TCP side as the bytes of a few connections. Each
// connection's stream goes through a StreamDeframer (RFC 4571) cut wherever the records cut it,
// and its frames through TCPIngress, with a worker's answers, time and closes in between. Records
// of kind 1 become a framed Binding request carrying a valid token, so streams get past the first
// frame and into pending and committed routing.
//
// Record kinds (FuzzSupport.Records; a record's first byte picks the connection):
//   0 stream bytes on a connection   1 a framed check with a valid token on a connection
//   2 worker → a connection's client 3 time passes (16-bit ms), expiry
//   4 open or close a connection

let keyring = RoutingKeyring(current: RoutingKey(id: 1, secret: [UInt8](repeating: 0x11, count: 32)))
let worker = TransportAddress.v4(IPv4Address(10, 0, 1, 5), port: 40000)
let peers: [TransportAddress] = [
    .v4(IPv4Address(198, 51, 100, 1), port: 5000), .v4(IPv4Address(198, 51, 100, 1), port: 5001),
    .v4(IPv4Address(198, 51, 100, 2), port: 5000), .v6(IPv6Address(high: 0x2001_0db8 << 32, low: 1), port: 5000),
]
let maximumFrame = 2048

func routing() -> RouteTable.Policy {
    var policy = RouteTable.Policy()
    policy.workerNetworks = [IPNetwork("10.0.0.0/16")!]
    policy.maximumPending = 8
    policy.maximumRoutes = 16
    return policy
}

func framedCheck(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
    let ufrag = keyring.seal(RoutingToken(keyID: 1, clusterID: 0, worker: worker, issuedHour: 100,
                                          nonce: UInt32(truncatingIfNeeded: bytes.count)))
    var words: [UInt32] = [0, 0, 0]
    for index in 0..<min(12, bytes.count) { words[index / 4] = words[index / 4] << 8 | UInt32(bytes[index]) }
    guard let check = try? STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(words[0], words[1], words[2]),
                                            { writer throws(STUNBuildError) in
                                                try writer.appendUsername("\(ufrag):c")
                                                try writer.appendFingerprint()
                                            }),
          let header = StreamDeframer.header(length: check.count) else { return [] }
    return [header.0, header.1] + check
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTCP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var policy = TCPIngress.Policy()
    policy.maximumConnections = 3
    policy.maximumHandshakesPerAddress = 2
    policy.maximumHandshakes = 2
    var ingress = TCPIngress(keyring: keyring, routing: routing(), policy: policy)
    ingress.currentHour = 100
    var streams: [TransportAddress: StreamDeframer] = [:]
    var now = Instant(nanoseconds: 1_000_000_000)

    func open(_ peer: TransportAddress) {
        switch ingress.accept(peer: peer, now: now) {
        case .accept:
            streams[peer] = StreamDeframer(maximumFrame: maximumFrame)
        case .acceptEvicting(let older):
            precondition(older != peer && streams[older] != nil, "evicted \(older), not another connection held")
            streams[older] = nil
            streams[peer] = StreamDeframer(maximumFrame: maximumFrame)
        case .refuse:
            break
        }
    }
    func close(_ peer: TransportAddress) {
        ingress.closed(peer: peer)
        streams[peer] = nil
    }
    func feed(_ bytes: UnsafeRawBufferPointer, on peer: TransportAddress) {
        guard var stream = streams[peer] else { return }
        var closing = false
        let failure = stream.feed(bytes) { frame in
            precondition(frame.count >= 1 && frame.count <= maximumFrame)
            switch ingress.frame(frame, from: peer, now: now) {
            case .forward(let to): precondition(to == worker, "forwarded to \(to)")
            case .drop: break
            case .close: closing = true
            }
            return !closing
        }
        precondition(stream.bufferedBytes <= maximumFrame + 2, "a partial frame past the bound")
        if closing || failure != nil { close(peer) } else { streams[peer] = stream }
    }

    for record in Records(data, size, limit: 64) {
        let pick = record.bytes.first.map { Int($0) } ?? 0
        let peer = peers[pick % peers.count]
        let body = UnsafeRawBufferPointer(rebasing: record.bytes.dropFirst(min(1, record.bytes.count)))
        switch record.kind % 5 {
        case 0:
            feed(body, on: peer)
        case 1:
            framedCheck(body).withUnsafeBytes { feed($0, on: peer) }
        case 2:
            if case .deliver(let to) = ingress.fromTransceiver(body, client: peer, source: worker, now: now) {
                precondition(to == peer && streams[peer] != nil, "delivered to \(to), not a connection held")
            }
        case 3:
            let step = body.count >= 2 ? Int(body[0]) << 8 | Int(body[1]) : 1000
            now = now + .milliseconds(step)
            for (closed, _) in ingress.expire(now: now) { streams[closed] = nil }
        default:
            if streams[peer] == nil { open(peer) } else { close(peer) }
        }
        precondition(ingress.connectionCount == streams.count, "connections and streams disagree")
        precondition(ingress.connectionCount <= policy.maximumConnections)
        precondition(ingress.handshakeCount <= policy.maximumHandshakes && ingress.handshakeCount <= ingress.connectionCount)
    }
    return 0
}
