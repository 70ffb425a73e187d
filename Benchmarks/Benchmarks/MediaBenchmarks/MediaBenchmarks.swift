import Benchmark
import ParleyMedia

// SRTP on the media path: one protect per packet sent, one unprotect per packet received. Each
// profile on the backend Parley uses, and AEAD_AES_128_GCM on Debian's libsrtp2 (built on NSS) as
// the baseline the OpenSSL transform replaced. A 20 ms Opus voice frame: 12-byte header + 80 bytes.

let keyAndSalt: (gcm: [UInt8], cm: [UInt8]) = ((0..<28).map { UInt8($0) }, (0..<30).map { UInt8($0) })
let frame: [UInt8] = [0x80, 111, 0, 1, 0, 0, 3, 0xC0, 0x12, 0x34, 0x56, 0x78] + [UInt8](repeating: 0x5A, count: 80)

/// Protects a fresh sequence number each iteration (the sender never repeats one).
func protectLoop(_ benchmark: Benchmark, _ context: SRTPContext) {
    var buffer = frame + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
    buffer.withUnsafeMutableBytes { bytes in
        var sequence: UInt16 = 0
        for _ in benchmark.scaledIterations {
            sequence &+= 1
            bytes[2] = UInt8(sequence >> 8)
            bytes[3] = UInt8(sequence & 0xFF)
            blackHole(try? context.protectRTP(bytes, length: frame.count))
        }
    }
}

/// Unprotects packets protected beforehand, in order (each is new to the receiver's window).
func unprotectLoop(_ benchmark: Benchmark, profile: SRTPProfile, keyAndSalt: [UInt8], libsrtpOnly: Bool) throws {
    let sender = try SRTPContext(profile: profile, keyAndSalt: keyAndSalt, direction: .outbound, libsrtpOnly: libsrtpOnly)
    let receiver = try SRTPContext(profile: profile, keyAndSalt: keyAndSalt, direction: .inbound, libsrtpOnly: libsrtpOnly)
    let count = benchmark.scaledIterations.count
    var packets: [[UInt8]] = []
    packets.reserveCapacity(count)
    for index in 0..<count {
        var buffer = frame + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
        buffer[2] = UInt8((index >> 8) & 0xFF)
        buffer[3] = UInt8(index & 0xFF)
        let length = try buffer.withUnsafeMutableBytes { try sender.protectRTP($0, length: frame.count) }
        packets.append(Array(buffer[0..<length]))
    }
    var work = [UInt8](repeating: 0, count: 256)
    benchmark.startMeasurement()
    work.withUnsafeMutableBytes { bytes in
        for packet in packets {
            packet.withUnsafeBytes { bytes.copyMemory(from: $0) }
            blackHole(try? receiver.unprotectRTP(bytes, length: packet.count))
        }
    }
    benchmark.stopMeasurement()
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )
    let unprotectConfiguration = Benchmark.Configuration(scalingFactor: .kilo, maxDuration: .seconds(2), maxIterations: 50)

    Benchmark("SRTP protect, AES-128-GCM (OpenSSL)") { benchmark in
        protectLoop(benchmark, try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: keyAndSalt.gcm, direction: .outbound))
    }
    Benchmark("SRTP protect, AES-128-GCM (libsrtp2 on NSS, baseline)") { benchmark in
        protectLoop(benchmark, try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: keyAndSalt.gcm, direction: .outbound,
                                               libsrtpOnly: true))
    }
    Benchmark("SRTP protect, AES-128-CM + HMAC-SHA1-80 (libsrtp2)") { benchmark in
        protectLoop(benchmark, try SRTPContext(profile: .aes128CMHMACSHA1_80, keyAndSalt: keyAndSalt.cm, direction: .outbound))
    }
    Benchmark("SRTP unprotect, AES-128-GCM (OpenSSL)", configuration: unprotectConfiguration) { benchmark in
        try unprotectLoop(benchmark, profile: .aeadAES128GCM, keyAndSalt: keyAndSalt.gcm, libsrtpOnly: false)
    }
    Benchmark("SRTP unprotect, AES-128-GCM (libsrtp2 on NSS, baseline)", configuration: unprotectConfiguration) { benchmark in
        try unprotectLoop(benchmark, profile: .aeadAES128GCM, keyAndSalt: keyAndSalt.gcm, libsrtpOnly: true)
    }
    Benchmark("SRTP unprotect, AES-128-CM + HMAC-SHA1-80 (libsrtp2)", configuration: unprotectConfiguration) { benchmark in
        try unprotectLoop(benchmark, profile: .aes128CMHMACSHA1_80, keyAndSalt: keyAndSalt.cm, libsrtpOnly: false)
    }
}
