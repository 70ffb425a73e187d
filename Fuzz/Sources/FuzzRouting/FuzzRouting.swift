import FuzzSupport
import ParleyRouting
import ParleyWire

// libFuzzer entry point: the relay's routing decisions, as sequences. An edge relay's RouteTable
// (cluster 1, forwarding cluster 2 to a peer) and an owning relay's PeerRouteTables take records
// as datagrams from clients, workers, peers and strangers, with time passing, store installs, drain
// and key rotation in between. Records of kinds 1 and 6 are turned into Binding requests carrying a
// valid token (for cluster 1 or 2) with the record's bytes as the transaction id and the rest of the
// message, so the fuzzer gets past the token check and into pending, commit and move decisions;
// answers take their transaction ids from the input, which the comparison tracing matches.
//
// Record kinds (FuzzSupport.Records; the first byte of a record picks among a few addresses):
//   0 client → edge (raw)         1 client → edge (a check with a valid token)
//   2 worker/peer/stranger → edge 3 time passes (16-bit ms), expiry
//   4 peer → owner (raw)          5 worker → owner
//   6 peer → owner (a check)      7 store install at the edge / owner
//   8 drain both                  9 rotate the owner's keys

let clusterOne = RoutingKeyring(current: RoutingKey(id: 1, secret: [UInt8](repeating: 0x11, count: 32)))
let clusterTwo = RoutingKeyring(current: RoutingKey(id: 2, secret: [UInt8](repeating: 0x22, count: 32)))
let workerA = TransportAddress.v4(IPv4Address(10, 0, 1, 5), port: 40000)
let workerB = TransportAddress.v4(IPv4Address(10, 0, 2, 5), port: 40000)
let relayA = TransportAddress.v4(IPv4Address(10, 1, 0, 9), port: 3479)
let relayB = TransportAddress.v4(IPv4Address(10, 2, 0, 9), port: 3479)
let clients: [TransportAddress] = [
    .v4(IPv4Address(198, 51, 100, 1), port: 5000), .v4(IPv4Address(198, 51, 100, 1), port: 5001),
    .v4(IPv4Address(198, 51, 100, 2), port: 5000), .v6(IPv6Address(high: 0x2001_0db8 << 32, low: 1), port: 5000),
]
let strangers: [TransportAddress] = [.v4(IPv4Address(192, 0, 2, 1), port: 1), .v4(IPv4Address(10, 1, 0, 9), port: 4000)]

func policy(cluster: UInt16, relays: [UInt16: TransportAddress]) -> RouteTable.Policy {
    var policy = RouteTable.Policy()
    policy.workerNetworks = [IPNetwork("10.0.0.0/16")!]
    policy.maximumPending = 16
    policy.maximumRoutes = 32
    policy.maximumPendingPerNetwork = 4
    policy.clusterID = cluster
    policy.clusterRelays = relays
    return policy
}

func check(keyring: RoutingKeyring, cluster: UInt16, worker: TransportAddress, bytes: UnsafeRawBufferPointer) -> [UInt8] {
    let ufrag = keyring.seal(RoutingToken(keyID: keyring.currentKeyID, clusterID: cluster, worker: worker, issuedHour: 100,
                                          nonce: UInt32(truncatingIfNeeded: bytes.count)))
    var words: [UInt32] = [0, 0, 0]
    for index in 0..<min(12, bytes.count) { words[index / 4] = words[index / 4] << 8 | UInt32(bytes[index]) }
    let id = STUNTransactionID(words[0], words[1], words[2])
    let built = try? STUNWriter.build(type: .bindingRequest, transactionID: id) { writer throws(STUNBuildError) in
        try writer.appendUsername("\(ufrag):c")
        if bytes.count > 12 { try writer.appendUseCandidate() }
        try writer.appendFingerprint()
    }
    return built ?? []
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRouting(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var edge = RouteTable(keyring: clusterOne, policy: policy(cluster: 1, relays: [2: relayB]))
    var owner = PeerRouteTables(keyring: clusterTwo, policy: policy(cluster: 2, relays: [1: relayA]))
    edge.currentHour = 100
    owner.currentHour = 100
    var now = Instant(nanoseconds: 1_000_000_000)
    for record in Records(data, size, limit: 64) {
        let pick = record.bytes.first.map { Int($0) } ?? 0
        let client = clients[pick % clients.count]
        let body = UnsafeRawBufferPointer(rebasing: record.bytes.dropFirst(min(1, record.bytes.count)))
        switch record.kind % 10 {
        case 0:
            let decision = edge.fromClient(body, client: client, now: now)
            if case .forward(let to) = decision { precondition(to == relayB || to.isIn("10.0.0.0/16"), "forwarded to \(to)") }
        case 1:
            let toCluster: UInt16 = pick & 0x10 == 0 ? 2 : 1
            let datagram = check(keyring: toCluster == 2 ? clusterTwo : clusterOne, cluster: toCluster,
                                 worker: toCluster == 2 ? workerB : workerA, bytes: body)
            let decision = datagram.withUnsafeBytes { edge.fromClient($0, client: client, now: now) }
            if case .forward(let to) = decision { precondition(to == relayB || to == workerA, "forwarded to \(to)") }
        case 2:
            let sources = [workerA, relayB, strangers[0], strangers[1]]
            let source = sources[(pick >> 2) % sources.count]
            let decision = edge.fromTransceiver(body, client: client, source: source, now: now)
            if case .deliver = decision {
                precondition(source == workerA || source == relayB, "\(source), neither a worker nor the cluster relay, got a delivery")
            }
        case 3:
            now = now + .milliseconds(Int64(record.number(UInt16.self)))
            edge.expire(now: now)
            owner.expire(now: now)
        case 4:
            let peer = [relayA, .v4(IPv4Address(10, 1, 0, 9), port: 3480), strangers[0]][(pick >> 2) % 3]
            let decision = owner.fromPeer(body, client: client, peer: peer, now: now)
            if case .forward(let to) = decision { precondition(to.isIn("10.0.0.0/16"), "forwarded to \(to)") }
        case 5:
            if let peer = owner.peer(routing: client) {
                let source = pick & 4 == 0 ? workerB : strangers[0]
                let decision = owner.fromTransceiver(body, client: client, source: source, peer: peer, now: now)
                if case .deliver = decision { precondition(source == workerB, "a stranger's datagram was delivered") }
                if let id = owner.ingressID(of: peer) { precondition(owner.peer(ingressID: id) == peer, "ingress ids map back") }
            }
        case 6:
            let datagram = check(keyring: clusterTwo, cluster: pick & 0x10 == 0 ? 2 : 3, worker: workerB, bytes: body)
            let decision = datagram.withUnsafeBytes { owner.fromPeer($0, client: client, peer: relayA, now: now) }
            if case .forward(let to) = decision { precondition(to == workerB, "forwarded to \(to)") }
        case 7:
            _ = edge.install(client: client, transceiver: pick & 4 == 0 ? relayB : strangers[0], now: now)
            _ = owner.install(client: client, transceiver: workerB, peer: pick & 8 == 0 ? relayA : strangers[0], now: now)
        case 8:
            edge.draining = true
            owner.draining = true
        default:
            owner.replaceKeyring(RoutingKeyring(current: RoutingKey(id: 3, secret: [UInt8](repeating: 0x33, count: 32)),
                                                others: pick & 1 == 0 ? [clusterTwo.key(id: 2)!] : []))
        }
        precondition(edge.pendingCount >= 0 && edge.committedCount >= 0 && edge.pendingCount <= 16 && edge.count <= 32)
        precondition(owner.pendingCount >= 0 && owner.committedCount >= 0)
        _ = edge.takeCommits()
        _ = owner.takeCommits()
    }
    return 0
}

extension TransportAddress {
    func isIn(_ network: String) -> Bool { IPNetwork(network)!.contains(self) }
}
