import Benchmark
import ParleyRouting
import ParleyWire

// The relay's per-packet work on a session's first packet (classify, parse STUN, cut the USERNAME,
// open the token) and the pieces of it, each with allocations per operation. Targets: 0 mallocs,
// well under 1 µs. Baseline figures are in docs/benchmarks.md.

let keyring = RoutingKeyring(current: RoutingKey(id: 1, secret: (0..<32).map { UInt8($0) }))
let token = RoutingToken(keyID: 1, clusterID: 1, worker: .v4(IPv4Address(10, 0, 0, 1), port: 40000), issuedHour: 1, nonce: 0xABCDEF)
let tokenText = Array(keyring.seal(token).utf8)
let password = "k2rv8XdQyJ0Bbq1nWm4Hs7Zt"
let integrityKey = STUNIntegrityKey(shortTermPassword: password)
/// A Binding request as browsers send it: USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
/// MESSAGE-INTEGRITY, FINGERPRINT (Chrome's checks carry a few more, of the same kinds).
let check: [UInt8] = try! STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 2, 3)) { writer throws(STUNBuildError) in
    try writer.appendUsername(keyring.seal(token) + ":xOn5")
    try writer.appendPriority(1_845_501_695)
    try writer.appendICEControlling(tieBreaker: 0x0102_0304_0506_0708)
    try writer.appendUseCandidate()
    try writer.appendMessageIntegrity(key: integrityKey)
    try writer.appendFingerprint()
}
let tunnelHeader = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: 1,
                                client: .v4(IPv4Address(192, 0, 2, 1), port: 50000))
let tunneled = tunnelHeader.bytes + check

let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )
    Benchmark.defaultConfiguration = configuration

    Benchmark("Token open (IPv4)") { benchmark in
        tokenText.withUnsafeBytes { text in
            for _ in benchmark.scaledIterations { blackHole(try? keyring.open(text)) }
        }
    }

    Benchmark("Token seal (IPv4)") { benchmark in
        var output = [UInt8](repeating: 0, count: RoutingToken.maximumLength)
        output.withUnsafeMutableBytes { buffer in
            for _ in benchmark.scaledIterations { blackHole(keyring.seal(token, into: buffer)) }
        }
    }

    Benchmark("STUN parse (ICE check)") { benchmark in
        check.withUnsafeBytes { datagram in
            for _ in benchmark.scaledIterations { blackHole(try? STUNMessage.parse(datagram)) }
        }
    }

    Benchmark("Relay first packet (classify + STUN parse + token open)") { benchmark in
        check.withUnsafeBytes { datagram in
            for _ in benchmark.scaledIterations {
                guard PacketKind.classify(datagram) == .stun, let message = try? STUNMessage.parse(datagram),
                      let ufrag = message.usernameRecipientPart(in: datagram) else { fatalError("not a check") }
                blackHole(try? keyring.open(UnsafeRawBufferPointer(rebasing: datagram[ufrag])))
            }
        }
    }

    Benchmark("STUN FINGERPRINT check") { benchmark in
        check.withUnsafeBytes { datagram in
            let message = try! STUNMessage.parse(datagram)
            for _ in benchmark.scaledIterations { blackHole(message.hasValidFingerprint(in: datagram)) }
        }
    }

    Benchmark("STUN MESSAGE-INTEGRITY check (HMAC-SHA1)") { benchmark in
        check.withUnsafeBytes { datagram in
            let message = try! STUNMessage.parse(datagram)
            for _ in benchmark.scaledIterations { blackHole(message.hasValidMessageIntegrity(in: datagram, key: integrityKey)) }
        }
    }

    Benchmark("Tunnel header decode") { benchmark in
        tunneled.withUnsafeBytes { datagram in
            for _ in benchmark.scaledIterations { blackHole(try? TunnelHeader.decode(datagram)) }
        }
    }

    Benchmark("Tunnel header encode") { benchmark in
        var output = [UInt8](repeating: 0, count: TunnelHeader.maximumLength)
        output.withUnsafeMutableBytes { buffer in
            for _ in benchmark.scaledIterations { blackHole(try? tunnelHeader.encode(into: buffer)) }
        }
    }

    // A committed flow among 10,000: what the relay does for every media datagram from a client.
    Benchmark("Relay lookup (committed flow, 10,000 routes)") { benchmark in
        var table = RouteTable(keyring: keyring)
        let now = Instant(nanoseconds: 1_000_000_000)
        let worker = TransportAddress.v4(IPv4Address(10, 0, 0, 1), port: 40000)
        for index in 0..<10_000 {
            _ = table.install(client: .v4(IPv4Address(bits: 0xC000_0000 | UInt32(index)), port: 50000), transceiver: worker, now: now)
        }
        let client = TransportAddress.v4(IPv4Address(bits: 0xC000_0000 | 4242), port: 50000)
        let media: [UInt8] = [0x80, 111, 0, 1] + [UInt8](repeating: 0, count: 108)
        media.withUnsafeBytes { datagram in
            for _ in benchmark.scaledIterations { blackHole(table.fromClient(datagram, client: client, now: now)) }
        }
    }
}
