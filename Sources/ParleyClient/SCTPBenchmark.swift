import ParleySCTP
import ParleyWire

#if canImport(Glibc)
import Glibc
#endif

/// Data-channel figures on one core, with two ParleySCTP associations joined in memory (no DTLS,
/// no sockets: the SCTP layer's own cost): messages per second and MB/s through one channel, the
/// handshake's CPU time, and the memory an idle association holds.
public enum SCTPBenchmark {
    public struct Report: Codable, Sendable {
        public var messageSize: Int
        public var messages: Int
        public var messagesPerSecond: Double
        public var megabytesPerSecond: Double
    }

    public struct Summary: Codable, Sendable {
        public var throughput: [Report]
        public var handshakeMicroseconds: Double
        public var idleAssociationBytes: Int
    }

    final class Pair {
        let client: SCTPAssociation
        let server: SCTPAssociation
        let channels: DataChannels
        var now = Instant(nanoseconds: 0)
        var delivered = 0

        init() {
            var generator = SystemRandomNumberGenerator()
            client = SCTPAssociation(now: now, using: &generator)
            server = SCTPAssociation(now: now, using: &generator)
            channels = DataChannels(association: server, dtlsServer: true)
            client.connect(now: now)
            pump()
            channels.addNegotiated(id: 0, label: "bench")
        }

        func pump() {
            var moved = true
            while moved {
                moved = false
                for packet in client.takeOutgoing() {
                    moved = true
                    packet.withUnsafeBytes { channels.handle($0, now: now) }
                }
                for packet in channels.takeOutgoing() {
                    moved = true
                    packet.withUnsafeBytes { client.handle($0, now: now) }
                }
                for event in channels.takeEvents() {
                    if case .message = event { delivered += 1 }
                }
            }
        }
    }

    public static func run(messages: Int = 20_000, idleAssociations: Int = 1_000) -> Summary {
        // Idle memory first, on a heap that nothing has grown yet.
        let before = residentBytes()
        var pairs: [Pair] = []
        for _ in 0..<idleAssociations { pairs.append(Pair()) }
        let after = residentBytes()
        precondition(pairs.count == idleAssociations)
        pairs.removeAll()
        var throughput: [Report] = []
        for (size, count) in [(1024, messages), (65536, max(1, messages / 50)), (262_144, max(1, messages / 200))] {
            let pair = Pair()
            let payload = [UInt8](repeating: 0x42, count: size)
            let start = cpuSeconds()
            for _ in 0..<count {
                pair.client.send(stream: 0, protocolIdentifier: 53, payload: payload, unordered: false, now: pair.now)
                pair.pump()
            }
            let seconds = max(cpuSeconds() - start, 1e-9)
            precondition(pair.delivered == count, "every message delivered")
            throughput.append(Report(messageSize: size, messages: count, messagesPerSecond: Double(count) / seconds,
                                     megabytesPerSecond: Double(count * size) / seconds / 1e6))
        }
        let handshakeStart = cpuSeconds()
        for _ in 0..<200 { _ = Pair() }
        let handshake = (cpuSeconds() - handshakeStart) / 200 * 1e6
        // Each pair is two associations (and one DataChannels layer).
        return Summary(throughput: throughput, handshakeMicroseconds: handshake,
                       idleAssociationBytes: max(0, after - before) / (2 * idleAssociations))
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    static func residentBytes() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0, resident = 0
        _ = withUnsafeMutablePointer(to: &size) { sizePointer in
            withUnsafeMutablePointer(to: &resident) { residentPointer in
                withVaList([sizePointer, residentPointer]) { vfscanf(file, "%ld %ld", $0) }
            }
        }
        return resident * Int(sysconf(Int32(truncatingIfNeeded: _SC_PAGESIZE)))
    }
}
