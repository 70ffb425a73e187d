import CParleySockets
import Foundation
import Logging
import NIOCore
import ParleyIO
import ParleyRouting
import ParleyWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One relay worker: a thread pinned to a core that owns a public socket per address family (the
/// shared port, with SO_REUSEPORT: the kernel keeps each client on one worker), an internal socket toward
/// transceivers, and its own route table. The loop moves datagrams with `recvmmsg`/`sendmmsg` in
/// batches between buffers allocated once: nothing is allocated per forwarded datagram.
final class RelayWorker: @unchecked Sendable {
    let index: Int
    private let configuration: RelayConfiguration
    private let store: RouteStore
    private let storeLoop: EventLoop
    private let metrics: RelayMetrics
    private let logger: Logger
    private var table: RouteTable
    /// Flows other clusters' relays forward here (two-stage routing), by peer socket.
    private var peers: PeerRouteTables

    /// The public sockets, one per family configured (-1: the family is not served). A client is
    /// answered from its own family's socket, so from the address it sent to.
    private var publicSocketV4: Int32 = -1
    private var publicSocketV6: Int32 = -1
    private var internalSocket: Int32 = -1
    private(set) var publicPort = 0
    private(set) var internalPort = 0
    private var wakeRead: Int32 = -1
    private var wakeWrite: Int32 = -1
    private let stopping = Atomic<Bool>(false)
    /// Set by `startDraining` (any thread); the worker's thread moves it into its table.
    private let drainRequested = Atomic<Bool>(false)
    /// A keyring handed over by `replaceKeyring` (any thread), taken into the table by the worker's thread.
    private let pendingKeyring = Mutex<RoutingKeyring?>(nil)
    private let keyringChanged = Atomic<Bool>(false)
    /// The table has taken the drain in (`table.draining`): from then on the counts below only fall.
    private let drainAcknowledged = Atomic<Bool>(false)
    /// The table's counts, published by the worker's thread at least once a second.
    private let publishedCommitted = Atomic<Int>(0)
    private let publishedPending = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)

    private static let slot = 2048
    private static let headroom = TunnelHeader.maximumLength
    private let receiveBuffers: UnsafeMutableRawBufferPointer
    private let sendBuffers: UnsafeMutableRawBufferPointer
    private let receiveBatch: OpaquePointer
    private let sendBatch: OpaquePointer
    /// Datagrams for IPv6 clients (sendmmsg sends from one socket: each family gets its batch).
    private let sendBatchV6: OpaquePointer
    /// Tunnel datagrams built while reading the internal socket (a forwarded client's datagram for
    /// a worker, a worker's answer for a peer relay), sent in one batch from the internal socket.
    private let tunnelBuffers: UnsafeMutableRawBufferPointer
    private let tunnelBatch: OpaquePointer

    /// Datagrams of unknown flows waiting for one route-store answer each (both directions).
    /// `via`: the peer relay socket a forwarded client's datagram came through (nil: direct, or a worker's).
    private var waiting: [TransportAddress: [(fromClient: Bool, bytes: [UInt8], source: TransportAddress, via: TransportAddress?)]] = [:]
    /// Store answers, handed from the store's event loop to this thread.
    private let answers = Mutex<[(client: TransportAddress, route: StoredRoute?)]>([])
    private var drops: [RelayDropReason: Int] = [:]
    /// Clients the store did not know, and when: no new lookup for them for a second.
    private var recentMisses: [TransportAddress: Instant] = [:]
    private var lookupBudget: TokenBucket
    private var forwardedToTransceiver = 0
    private var forwardedToClient = 0
    private var lastHousekeeping = RelayWorker.now()

    init(index: Int, configuration: RelayConfiguration, store: RouteStore, storeLoop: EventLoop, metrics: RelayMetrics,
         logger: Logger) {
        self.index = index
        self.configuration = configuration
        self.store = store
        self.storeLoop = storeLoop
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "relay_worker"] = "\(index)"
        self.logger = logger
        table = RouteTable(keyring: configuration.keyring, policy: configuration.policy)
        peers = PeerRouteTables(keyring: configuration.keyring, policy: configuration.policy)
        let rate = max(1, configuration.storeLookupsPerSecond)
        lookupBudget = TokenBucket(capacity: rate, refillInterval: .nanoseconds(max(1, 1_000_000_000 / Int64(rate))),
                                   now: Self.now())
        receiveBuffers = .allocate(byteCount: Int(PARLEY_BATCH) * Self.slot, alignment: 16)
        sendBuffers = .allocate(byteCount: Int(PARLEY_BATCH) * (Self.slot + Self.headroom), alignment: 16)
        receiveBatch = parley_batch_create()
        sendBatch = parley_batch_create()
        sendBatchV6 = parley_batch_create()
        tunnelBuffers = .allocate(byteCount: Int(PARLEY_BATCH) * (Self.slot + Self.headroom), alignment: 16)
        tunnelBatch = parley_batch_create()
    }

    deinit {
        receiveBuffers.deallocate()
        sendBuffers.deallocate()
        parley_batch_destroy(receiveBatch)
        parley_batch_destroy(sendBatch)
        parley_batch_destroy(sendBatchV6)
        tunnelBuffers.deallocate()
        parley_batch_destroy(tunnelBatch)
        for fd in [publicSocketV4, publicSocketV6, internalSocket, wakeRead, wakeWrite] where fd >= 0 { close(fd) }
    }

    var ingressID: UInt16 { UInt16(truncatingIfNeeded: index) }

    /// Binds the sockets and starts the worker's thread.
    /// `publicPort` is the shared port (the one the first worker got when the configuration says 0).
    func start(publicPort requested: Int) throws {
        var bound: Int32 = 0
        var port = requested
        for (position, host) in configuration.publicHosts.enumerated() {
            if requested == 0, position > 0, index == 0, !configuration.takeOverPort {
                // The kernel chose the port for the first family: it must be free in the others too,
                // not shared with whoever holds it there (what Relay.start checks for a given port).
                try Relay.refuseSharedPort(host: host, port: port)
            }
            let socket = parley_udp_socket(host, Int32(clamping: port), 1, Int32(clamping: configuration.socketBufferBytes), &bound)
            guard socket >= 0 else {
                let code = errno
                throw RelayError.bind(RelayConfiguration.hostAndPort(host, port), code)
            }
            if IPv6Address(host) != nil { publicSocketV6 = socket } else { publicSocketV4 = socket }
            port = Int(bound)  // a port of 0 is chosen by the first bind; every family takes the same one
        }
        publicPort = port
        let internalPort = configuration.internalPort == 0 ? 0 : configuration.internalPort + index
        internalSocket = parley_udp_socket(configuration.internalHost, Int32(clamping: internalPort), 0,
                                           Int32(clamping: configuration.socketBufferBytes), &bound)
        guard internalSocket >= 0 else {
            let code = errno
            throw RelayError.bind("\(configuration.internalHost):\(internalPort)", code)
        }
        self.internalPort = Int(bound)
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { throw RelayError.bind("wake pipe", errno) }
        wakeRead = pipeEnds[0]
        wakeWrite = pipeEnds[1]
        _ = fcntl(wakeRead, F_SETFL, O_NONBLOCK)
        table.currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        peers.currentHour = table.currentHour
        let thread = Thread { [self] in
            pinCurrentThread(toAllowedCPU: index)
            run()
            finished.signal()
        }
        thread.name = "parley-relay-\(index)"
        thread.start()
        logger.info("relay worker listening", metadata: [
            "public": "\(configuration.publicHosts.map { RelayConfiguration.hostAndPort($0, publicPort) })", "internal": "\(configuration.internalHost):\(self.internalPort)",
        ])
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        wake()
        finished.wait()
    }

    /// Stops taking new flows; committed routes go on until they idle out.
    func startDraining() {
        drainRequested.store(true, ordering: .sequentiallyConsistent)
        wake()
    }

    /// New flows open tokens with `keyring` from the worker's next turn on.
    func replaceKeyring(_ keyring: RoutingKeyring) {
        pendingKeyring.withLock { $0 = keyring }
        keyringChanged.store(true, ordering: .sequentiallyConsistent)
        wake()
    }

    /// The committed and pending routes of the table, and whether it has taken the drain in.
    var routeCounts: (committed: Int, pending: Int, draining: Bool) {
        let draining = drainAcknowledged.load(ordering: .sequentiallyConsistent)
        return (publishedCommitted.load(ordering: .sequentiallyConsistent), publishedPending.load(ordering: .sequentiallyConsistent),
                draining)
    }

    private func publishCounts() {
        publishedCommitted.store(table.committedCount + peers.committedCount, ordering: .sequentiallyConsistent)
        publishedPending.store(table.pendingCount + peers.pendingCount, ordering: .sequentiallyConsistent)
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    // MARK: The loop

    private func run() {
        // A family not served has fd -1, which poll ignores.
        var fds = [pollfd(fd: internalSocket, events: Int16(truncatingIfNeeded: POLLIN), revents: 0),
                   pollfd(fd: wakeRead, events: Int16(truncatingIfNeeded: POLLIN), revents: 0),
                   pollfd(fd: publicSocketV4, events: Int16(truncatingIfNeeded: POLLIN), revents: 0),
                   pollfd(fd: publicSocketV6, events: Int16(truncatingIfNeeded: POLLIN), revents: 0)]
        let readable = Int16(truncatingIfNeeded: POLLIN)
        while !stopping.load(ordering: .relaxed) {
            let ready = poll(&fds, nfds_t(truncatingIfNeeded: fds.count), 100)
            if ready > 0 {
                if fds[2].revents & readable != 0 { drainClients(from: publicSocketV4) }
                if fds[3].revents & readable != 0 { drainClients(from: publicSocketV6) }
                if fds[0].revents & readable != 0 { drainTransceivers() }
                if fds[1].revents & readable != 0 { takeStoreAnswers() }
            }
            if !table.draining, drainRequested.load(ordering: .relaxed) {
                table.draining = true
                peers.draining = true
                // The counts first: whoever sees the acknowledgement sees counts that can only fall.
                publishCounts()
                drainAcknowledged.store(true, ordering: .sequentiallyConsistent)
            }
            if keyringChanged.load(ordering: .relaxed), keyringChanged.exchange(false, ordering: .sequentiallyConsistent),
               let keyring = pendingKeyring.withLock({ $0.take() }) {
                table.replaceKeyring(keyring)
                peers.replaceKeyring(keyring)
            }
            let now = Self.now()
            if now - lastHousekeeping >= .seconds(1) {
                lastHousekeeping = now
                housekeeping(now: now)
            }
        }
    }

    /// Client datagrams: route by token or table; tunnel each to its transceiver in one sendmmsg.
    private func drainClients(from publicSocket: Int32) {
        var rounds = 0
        while rounds < 8 {  // a bounded share per wake-up, so the other sockets are served too
            rounds += 1
            let count = Int(parley_batch_receive(publicSocket, receiveBatch, receiveBuffers.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(truncatingIfNeeded: Self.slot)))
            guard count > 0 else { return }
            let now = Self.now()
            var sending = 0
            for index in 0..<count {
                guard let client = source(index) else { continue }
                let length = Int(parley_batch_length(receiveBatch, UInt32(truncatingIfNeeded: index)))
                let datagram = UnsafeRawBufferPointer(rebasing: receiveBuffers[(index * Self.slot)..<(index * Self.slot + length)])
                switch table.fromClient(datagram, client: client, now: now) {
                case .forward(let transceiver):
                    let header = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: ingressID, client: client)
                    let base = sending * (Self.slot + Self.headroom)
                    let out = UnsafeMutableRawBufferPointer(rebasing: sendBuffers[base..<(base + Self.slot + Self.headroom)])
                    guard let headerLength = try? header.encode(into: out) else { continue }
                    (out.baseAddress! + headerLength).copyMemory(from: datagram.baseAddress!, byteCount: length)
                    setDestination(sending, bytes: UnsafeRawPointer(out.baseAddress!), length: headerLength + length, to: transceiver)
                    sending += 1
                case .unknown:
                    // Only what a live call sends (DTLS, RTP, RTCP) is worth a store lookup, and a
                    // client the store just did not know waits a second before the next one.
                    switch PacketKind.classify(datagram) {
                    case .dtls, .rtp, .rtcp:
                        if recentMisses[client] == nil {
                            wait(Array(datagram), fromClient: true, client: client, source: client, via: nil)
                        } else {
                            drops[.noRoute, default: 0] += 1
                        }
                    case .stun:
                        drops[.noRoute, default: 0] += 1
                    default:
                        drops[.unknownProtocol, default: 0] += 1
                    }
                case .drop(let reason):
                    drops[reason, default: 0] += 1
                }
            }
            if sending > 0 {
                parley_batch_send(internalSocket, sendBatch, UInt32(truncatingIfNeeded: sending))
                forwardedToTransceiver += sending
            }
            saveCommits()
            if count < Int(PARLEY_BATCH) { return }
        }
    }

    /// Internal-socket datagrams, by the tunnel header's direction. Toward a client: a worker's (or,
    /// on a cluster's edge, the owning cluster's relay's) answer, checked against the route owner and
    /// sent to the client straight from the receive buffers, or, for a client another cluster's relay
    /// forwards here, back to that relay in a tunnel datagram. From a client: another cluster's relay
    /// forwarding it (two-stage routing), routed on to this cluster's worker like a direct client.
    private func drainTransceivers() {
        var rounds = 0
        while rounds < 8 {
            rounds += 1
            let count = Int(parley_batch_receive(internalSocket, receiveBatch, receiveBuffers.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(truncatingIfNeeded: Self.slot)))
            guard count > 0 else { return }
            let now = Self.now()
            var sending = 0
            var sendingV6 = 0
            var tunnelling = 0
            var toClientThroughPeers = 0
            for index in 0..<count {
                guard let source = source(index) else { continue }
                let length = Int(parley_batch_length(receiveBatch, UInt32(truncatingIfNeeded: index)))
                let datagram = UnsafeRawBufferPointer(rebasing: receiveBuffers[(index * Self.slot)..<(index * Self.slot + length)])
                guard let (header, headerLength) = try? TunnelHeader.decode(datagram) else {
                    drops[.malformedTunnel, default: 0] += 1
                    continue
                }
                let payload = UnsafeRawBufferPointer(rebasing: datagram[headerLength...])
                if header.direction == .fromClient {
                    switch peers.fromPeer(payload, client: header.client, peer: source, now: now) {
                    case .forward(let transceiver):
                        // The peer table's own ingress id: the worker's answers carry it back, and find that table.
                        if tunnel(payload, direction: .fromClient, client: header.client, to: transceiver, slot: tunnelling,
                                  ingress: peers.ingressID(of: source) ?? ingressID, transport: header.transport) {
                            tunnelling += 1
                        }
                    case .unknown:
                        switch PacketKind.classify(payload) {
                        case .dtls, .rtp, .rtcp:
                            if recentMisses[header.client] == nil {
                                wait(Array(payload), fromClient: true, client: header.client, source: source, via: source)
                            } else {
                                drops[.noRoute, default: 0] += 1
                            }
                        default:
                            drops[.noRoute, default: 0] += 1
                        }
                    case .drop(let reason):
                        drops[reason, default: 0] += 1
                    }
                    continue
                }
                guard configuration.policy.workerNetworks.contains(where: { $0.contains(source) }) || table.isClusterRelay(source) else {
                    drops[.untrustedTransceiver, default: 0] += 1
                    continue
                }
                if header.ingressID & PeerRouteTables.peerIngressFlag != 0 {
                    // A forwarded client's: its table by the ingress id (or, for one sent before a
                    // restart of this relay, by the client), else the store.
                    guard let peer = peers.peer(ingressID: header.ingressID) ?? peers.peer(routing: header.client) else {
                        wait(Array(payload), fromClient: false, client: header.client, source: source, via: nil)
                        continue
                    }
                    switch peers.fromTransceiver(payload, client: header.client, source: source, peer: peer, now: now) {
                    case .deliver:
                        if tunnel(payload, direction: .toClient, client: header.client, to: peer, slot: tunnelling, ingress: ingressID,
                                  transport: header.transport) {
                            tunnelling += 1
                            toClientThroughPeers += 1
                        }
                    case .unknown:
                        drops[.noRoute, default: 0] += 1
                    case .drop(let reason):
                        drops[reason, default: 0] += 1
                    }
                    continue
                }
                switch table.fromTransceiver(payload, client: header.client, source: source, now: now) {
                case .deliver(let client):
                    if client.isIPv6 {
                        guard publicSocketV6 >= 0 else {
                            drops[.noSocketForFamily, default: 0] += 1
                            continue
                        }
                        setDestination(sendingV6, bytes: payload.baseAddress!, length: payload.count, to: client, batch: sendBatchV6)
                        sendingV6 += 1
                    } else {
                        guard publicSocketV4 >= 0 else {
                            drops[.noSocketForFamily, default: 0] += 1
                            continue
                        }
                        setDestination(sending, bytes: payload.baseAddress!, length: payload.count, to: client)
                        sending += 1
                    }
                case .unknown:
                    wait(Array(payload), fromClient: false, client: header.client, source: source, via: nil)
                case .drop(let reason):
                    drops[reason, default: 0] += 1
                }
            }
            if sending > 0 {
                parley_batch_send(publicSocketV4, sendBatch, UInt32(truncatingIfNeeded: sending))
                forwardedToClient += sending
            }
            if sendingV6 > 0 {
                parley_batch_send(publicSocketV6, sendBatchV6, UInt32(truncatingIfNeeded: sendingV6))
                forwardedToClient += sendingV6
            }
            if tunnelling > 0 {
                parley_batch_send(internalSocket, tunnelBatch, UInt32(truncatingIfNeeded: tunnelling))
                // Toward the client through its peer counts as to the client; the rest went to workers.
                forwardedToClient += toClientThroughPeers
                forwardedToTransceiver += tunnelling - toClientThroughPeers
            }
            saveCommits()
            if count < Int(PARLEY_BATCH) { return }
        }
    }

    /// Writes a tunnel header and `payload` into slot `slot` of the tunnel batch, addressed to
    /// `destination`; false when it does not fit (nothing is queued). `transport` is the client's
    /// (a forwarded ICE-TCP flow keeps its TCP flag on both legs).
    private func tunnel(_ payload: UnsafeRawBufferPointer, direction: TunnelHeader.Direction, client: TransportAddress,
                        to destination: TransportAddress, slot: Int, ingress: UInt16, transport: TunnelHeader.Transport) -> Bool {
        let header = TunnelHeader(transport: transport, direction: direction, ingressID: ingress, client: client)
        let base = slot * (Self.slot + Self.headroom)
        let out = UnsafeMutableRawBufferPointer(rebasing: tunnelBuffers[base..<(base + Self.slot + Self.headroom)])
        guard let headerLength = try? header.encode(into: out), headerLength + payload.count <= out.count else { return false }
        if payload.count > 0 { (out.baseAddress! + headerLength).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        setDestination(slot, bytes: UnsafeRawPointer(out.baseAddress!), length: headerLength + payload.count, to: destination,
                       batch: tunnelBatch)
        return true
    }

    private func source(_ index: Int) -> TransportAddress? {
        var bytes: (UInt64, UInt64) = (0, 0)
        var port: UInt16 = 0
        let family = withUnsafeMutableBytes(of: &bytes) { raw in
            parley_batch_source(receiveBatch, UInt32(truncatingIfNeeded: index), raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &port)
        }
        return withUnsafeBytes(of: bytes) { raw -> TransportAddress? in
            switch family {
            case AF_INET:
                return .v4(IPv4Address(bits: UInt32(bigEndian: raw.loadUnaligned(as: UInt32.self))), port: port)
            case AF_INET6:
                return .v6(IPv6Address(high: UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)),
                                       low: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))), port: port)
            default:
                return nil
            }
        }
    }

    private func setDestination(_ index: Int, bytes: UnsafeRawPointer, length: Int, to address: TransportAddress,
                                batch: OpaquePointer? = nil) {
        let sendBatch = batch ?? self.sendBatch
        switch address {
        case .v4(let ip, let port):
            withUnsafeBytes(of: ip.bits.bigEndian) { raw in
                parley_batch_set(sendBatch, UInt32(truncatingIfNeeded: index), bytes, UInt32(truncatingIfNeeded: length),
                                 raw.baseAddress!.assumingMemoryBound(to: UInt8.self), 4, port)
            }
        case .v6(let ip, let port):
            withUnsafeBytes(of: (ip.high.bigEndian, ip.low.bigEndian)) { raw in
                parley_batch_set(sendBatch, UInt32(truncatingIfNeeded: index), bytes, UInt32(truncatingIfNeeded: length),
                                 raw.baseAddress!.assumingMemoryBound(to: UInt8.self), 16, port)
            }
        }
    }

    // MARK: Route store

    /// Holds a datagram of an unknown flow (a copy: this is the rare path) and asks the store once per flow.
    private func wait(_ bytes: [UInt8], fromClient: Bool, client: TransportAddress, source: TransportAddress, via: TransportAddress?) {
        if var queue = waiting[client] {
            guard queue.count < configuration.lookupQueueDepth else {
                drops[.lookupQueueFull, default: 0] += 1
                return
            }
            queue.append((fromClient, bytes, source, via))
            waiting[client] = queue
            return
        }
        guard waiting.count < configuration.maximumLookups else {
            drops[.lookupQueueFull, default: 0] += 1
            return
        }
        guard lookupBudget.take(now: Self.now()) else {
            drops[.lookupRateLimited, default: 0] += 1
            return
        }
        waiting[client] = [(fromClient, bytes, source, via)]
        metrics.storeLookups.increment()
        store.lookup(client: client, on: storeLoop).whenComplete { [self] result in
            let route: StoredRoute? = if case .success(let found) = result { found } else { nil }
            answers.withLock { $0.append((client, route)) }
            wake()
        }
    }

    private func takeStoreAnswers() {
        var sink = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &sink, sink.count) > 0 {}
        let ready = answers.withLock { answers in
            defer { answers.removeAll(keepingCapacity: true) }
            return answers
        }
        let now = Self.now()
        for (client, route) in ready {
            let queued = waiting.removeValue(forKey: client) ?? []
            let installed: Bool = switch route {
            case .none: false
            case .some(let route):
                if let via = route.via {
                    peers.install(client: client, transceiver: route.transceiver, peer: via, now: now)
                } else {
                    table.install(client: client, transceiver: route.transceiver, now: now)
                }
            }
            guard let route, installed else {
                metrics.storeMisses.increment()
                if recentMisses.count < configuration.maximumLookups * 4 { recentMisses[client] = now }
                drops[table.draining ? .draining : .noRoute, default: 0] += queued.count
                continue
            }
            metrics.storeHits.increment()
            logger.info("route recovered from the store", metadata: ["client": "\(client)", "route": "\(route)"])
            for item in queued {
                // Only what arrived the way the stored route says (directly, or through its peer).
                guard !item.fromClient || item.via == route.via else {
                    drops[.noRoute, default: 0] += 1
                    continue
                }
                if item.fromClient {
                    let ingress = route.via.flatMap { peers.ingressID(of: $0) } ?? ingressID
                    let header = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: ingress, client: client)
                    send(header.bytes + item.bytes, from: internalSocket, to: route.transceiver)
                } else if let via = route.via {
                    if case .deliver = item.bytes.withUnsafeBytes({
                        peers.fromTransceiver($0, client: client, source: item.source, peer: via, now: now) }) {
                        let header = TunnelHeader(transport: .udp, direction: .toClient, ingressID: ingressID, client: client)
                        send(header.bytes + item.bytes, from: internalSocket, to: via)
                    }
                } else if case .deliver = item.bytes.withUnsafeBytes({
                    table.fromTransceiver($0, client: client, source: item.source, now: now) }) {
                    let socket = client.isIPv6 ? publicSocketV6 : publicSocketV4
                    guard socket >= 0 else {
                        drops[.noSocketForFamily, default: 0] += 1
                        continue
                    }
                    send(item.bytes, from: socket, to: client)
                }
            }
        }
    }

    private func send(_ bytes: [UInt8], from socket: Int32, to destination: TransportAddress) {
        bytes.withUnsafeBytes { raw in
            setDestination(0, bytes: raw.baseAddress!, length: raw.count, to: destination)
            parley_batch_send(socket, sendBatch, 1)
        }
    }

    private func saveCommits() {
        if table.hasCommits {
            for commit in table.takeCommits() {
                store.save(client: commit.client, route: StoredRoute(transceiver: commit.transceiver),
                           lifetime: configuration.policy.storeLifetime)
            }
        }
        if !peers.isEmpty, peers.hasCommits {
            for (commit, peer) in peers.takeCommits() {
                store.save(client: commit.client, route: StoredRoute(transceiver: commit.transceiver, via: peer),
                           lifetime: configuration.policy.storeLifetime)
            }
        }
    }

    private func housekeeping(now: Instant) {
        table.currentHour = RoutingToken.hour(unixSeconds: Int64(time(nil)))
        table.expire(now: now)
        if !peers.isEmpty {
            peers.currentHour = table.currentHour
            peers.expire(now: now)
        }
        publishCounts()
        recentMisses = recentMisses.filter { now - $0.value < .seconds(1) }
        metrics.report(drops: drops, toTransceiver: forwardedToTransceiver, toClient: forwardedToClient, worker: String(index),
                       routes: table.committedCount + peers.committedCount, pending: table.pendingCount + peers.pendingCount)
        drops.removeAll(keepingCapacity: true)
        forwardedToTransceiver = 0
        forwardedToClient = 0
    }

    static func now() -> Instant { monotonicNow() }
}

public enum RelayError: Error, CustomStringConvertible {
    case bind(String, Int32)
    case portInUse(String)
    case configuration(String)
    case bindTCP(String, String)

    public var description: String {
        switch self {
        case .bind(let what, let code): "cannot bind UDP \(what): \(String(cString: strerror(code)))"
        case .portInUse(let address):
            "\(address) is already in use (another parley?). Stop it, choose another port, "
                + "or pass --take-over-port to share it on purpose (a relay replacing another)"
        case .configuration(let problem): problem
        case .bindTCP(let what, let error):
            "cannot listen on TCP \(what) for ICE-TCP: \(error) (a port below 1024 needs root or CAP_NET_BIND_SERVICE; "
                + "--public-tcp-port 0 leaves TCP off)"
        }
    }
}
