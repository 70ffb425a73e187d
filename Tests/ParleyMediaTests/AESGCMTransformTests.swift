import ParleyTestSupport
import Testing
@testable import ParleyMedia

/// AEAD_AES_128_GCM runs on OpenSSL (AESGCMTransform); libsrtp2 is the reference it must match:
/// the same protected bytes, each side unprotecting the other's, across the sequence wrap (ROC),
/// for RTP and SRTCP, with the replay and forgery rules libsrtp applies.
@Suite struct AESGCMTransformTests {
    static let keyAndSalt: [UInt8] = (0..<28).map { UInt8(($0 * 37 + 11) & 0xFF) }

    static func gcm(_ direction: SRTPContext.Direction, libsrtp: Bool) throws -> SRTPContext {
        try SRTPContext(profile: .aeadAES128GCM, keyAndSalt: keyAndSalt, direction: direction, libsrtpOnly: libsrtp)
    }

    /// An RTP packet; every few packets with CSRCs, a header extension or padding-free odd sizes.
    static func rtp(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, variant: Int, random: inout SplitMix64) -> [UInt8] {
        let csrcs = variant % 5 == 1 ? 2 : 0, extensionWords = variant % 7 == 3 ? 2 : 0
        var packet: [UInt8] = [0x80 | UInt8(csrcs) | (extensionWords > 0 ? 0x10 : 0), 111,
                               UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
        packet += withUnsafeBytes(of: timestamp.bigEndian, Array.init) + withUnsafeBytes(of: ssrc.bigEndian, Array.init)
        for index in 0..<csrcs { packet += [0, 0, 0, UInt8(index + 1)] }
        if extensionWords > 0 { packet += [0xBE, 0xDE, 0, UInt8(extensionWords)] + [UInt8](repeating: 0x22, count: 4 * extensionWords) }
        packet += (0..<(20 + variant % 140)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        return packet
    }

    static func protect(_ context: SRTPContext, _ packet: [UInt8], rtcp: Bool = false) throws -> [UInt8] {
        var buffer = packet + [UInt8](repeating: 0, count: SRTPContext.maximumOverhead)
        let length = try buffer.withUnsafeMutableBytes { bytes in
            rtcp ? try context.protectRTCP(bytes, length: packet.count) : try context.protectRTP(bytes, length: packet.count)
        }
        return Array(buffer[0..<length])
    }

    static func unprotect(_ context: SRTPContext, _ packet: [UInt8], rtcp: Bool = false) throws -> [UInt8] {
        var buffer = packet
        let length = try buffer.withUnsafeMutableBytes { bytes in
            rtcp ? try context.unprotectRTCP(bytes, length: packet.count) : try context.unprotectRTP(bytes, length: packet.count)
        }
        return Array(buffer[0..<length])
    }

    static func rejection(_ body: () throws -> Void) -> Int? {
        do {
            try body()
            return nil
        } catch let error as SRTPError {
            if case .rejected(let code) = error { return code }
            return -1
        } catch {
            return -1
        }
    }

    @Test func rtpMatchesLibsrtpByteForByteAcrossTheRolloverAndEachUnprotectsTheOther() throws {
        let ours = try Self.gcm(.outbound, libsrtp: false), reference = try Self.gcm(.outbound, libsrtp: true)
        let oursIn = try Self.gcm(.inbound, libsrtp: false), referenceIn = try Self.gcm(.inbound, libsrtp: true)
        var random = SplitMix64(seed: 7)
        // Two SSRCs; 1,200 packets each from sequence 65,000 so the ROC goes from 0 to 1.
        for step in 0..<1200 {
            for ssrc: UInt32 in [0x1234_5678, 0xCAFE_F00D] {
                let sequence = UInt16(truncatingIfNeeded: 65_000 + step)
                let packet = Self.rtp(sequence: sequence, timestamp: UInt32(step) * 960, ssrc: ssrc, variant: step, random: &random)
                let protected = try Self.protect(ours, packet)
                #expect(try Self.protect(reference, packet) == protected, "packet \(step) differs from libsrtp")
                #expect(protected.count == packet.count + 16)
                #expect(try Self.unprotect(referenceIn, protected) == packet)
                #expect(try Self.unprotect(oursIn, try Self.protect(reference, packet)) == packet)
            }
        }
    }

    @Test func srtcpEachSideUnprotectsTheOther() throws {
        let ours = try Self.gcm(.outbound, libsrtp: false), reference = try Self.gcm(.outbound, libsrtp: true)
        let oursIn = try Self.gcm(.inbound, libsrtp: false), referenceIn = try Self.gcm(.inbound, libsrtp: true)
        var random = SplitMix64(seed: 9)
        for index in 0..<300 {
            // A receiver report with a block, then random bytes as further compound packets.
            var packet: [UInt8] = [0x81, 201, 0, 7, 0xAB, 0xCD, 0xEF, 0x01]
            packet += (0..<(24 + index % 40 * 4)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let protected = try Self.protect(ours, packet, rtcp: true)
            #expect(protected.count == packet.count + 20)
            #expect(protected[protected.count - 4] & 0x80 != 0, "E flag")
            #expect(UInt32(protected[protected.count - 1]) | UInt32(protected[protected.count - 2]) << 8 == UInt32(index))
            #expect(Array(protected[0..<8]) == Array(packet[0..<8]), "the first 8 bytes stay clear")
            #expect(try Self.unprotect(referenceIn, protected, rtcp: true) == packet)
            #expect(try Self.unprotect(oursIn, try Self.protect(reference, packet, rtcp: true), rtcp: true) == packet)
        }
    }

    @Test func replayedOldAndForgedPacketsAreRejectedWithoutMovingTheWindow() throws {
        let sender = try Self.gcm(.outbound, libsrtp: false), receiver = try Self.gcm(.inbound, libsrtp: false)
        var random = SplitMix64(seed: 3)
        var packets: [[UInt8]] = []
        for step in 0..<1100 {
            packets.append(try Self.protect(sender, Self.rtp(sequence: UInt16(step), timestamp: 0, ssrc: 5, variant: step, random: &random)))
        }
        // In order up to 1,050, but 1,000 and 1,001 held back.
        for step in 0..<1050 where step != 1000 && step != 1001 { _ = try Self.unprotect(receiver, packets[step]) }
        #expect(Self.rejection { _ = try Self.unprotect(receiver, packets[1040]) } == 9, "replayed")
        #expect(Self.rejection { _ = try Self.unprotect(receiver, packets[10]) } == 10, "behind the 1,024-packet window")
        _ = try Self.unprotect(receiver, packets[1001])  // late but within the window
        var forged = packets[1060]
        forged[forged.count - 1] ^= 1
        #expect(Self.rejection { _ = try Self.unprotect(receiver, forged) } == 7, "tag")
        var forgedHeader = packets[1080]
        forgedHeader[1] ^= 0x01  // payload type is authenticated
        #expect(Self.rejection { _ = try Self.unprotect(receiver, forgedHeader) } == 7)
        // The forgeries moved nothing: 1,000 (now 60 behind) and 1,060 itself still go through.
        _ = try Self.unprotect(receiver, packets[1000])
        _ = try Self.unprotect(receiver, packets[1060])
        #expect(Self.rejection { _ = try Self.unprotect(receiver, Array(packets[5].prefix(20))) } != nil, "truncated")
        #expect(Self.rejection { _ = try Self.unprotect(receiver, [0x40] + packets[1090].dropFirst()) } == 2, "not RTP version 2")
    }

    /// The sender refuses to use an index twice (GCM nonce reuse), and the receiver's window
    /// survives jumps beyond its size; a jump of exactly 2^15 keeps the ROC as libsrtp decides.
    @Test func senderNeverReusesAnIndexAndTheWindowHandlesLargeJumps() throws {
        let sender = try Self.gcm(.outbound, libsrtp: false), receiver = try Self.gcm(.inbound, libsrtp: false)
        let reference = try Self.gcm(.inbound, libsrtp: true)
        var random = SplitMix64(seed: 11)
        func packet(_ sequence: UInt16) -> [UInt8] { Self.rtp(sequence: sequence, timestamp: 0, ssrc: 9, variant: 1, random: &random) }
        let first = try Self.protect(sender, packet(100))
        #expect(Self.rejection { _ = try Self.protect(sender, packet(100)) } == 9, "the same index again")
        #expect(Self.rejection { _ = try Self.protect(sender, packet(99)) } == 9, "an older index")
        _ = try Self.unprotect(receiver, first)
        _ = try Self.unprotect(reference, first)
        // Jumps: +2000 (beyond the 1,024 window), then exactly +32768 (same ROC for libsrtp), then on.
        for sequence: UInt16 in [2100, 2101, 34869, 34870, 40000] {
            let protected = try Self.protect(sender, packet(sequence))
            #expect(try Self.unprotect(reference, protected).count == protected.count - 16, "libsrtp agrees at \(sequence)")
            #expect(try Self.unprotect(receiver, protected).count == protected.count - 16, "ours at \(sequence)")
            #expect(Self.rejection { _ = try Self.unprotect(receiver, protected) } == 9)
        }
    }

    @Test func srtcpReplayAndTheClearEFlagAreRejected() throws {
        let sender = try Self.gcm(.outbound, libsrtp: false), receiver = try Self.gcm(.inbound, libsrtp: false)
        let report: [UInt8] = [0x80, 201, 0, 1, 0, 0, 0, 9]
        let first = try Self.protect(sender, report, rtcp: true), second = try Self.protect(sender, report, rtcp: true)
        #expect(try Self.unprotect(receiver, second, rtcp: true) == report)
        #expect(try Self.unprotect(receiver, first, rtcp: true) == report, "an earlier index within the window")
        #expect(Self.rejection { _ = try Self.unprotect(receiver, second, rtcp: true) } == 9)
        var clear = try Self.protect(sender, report, rtcp: true)
        clear[clear.count - 4] &= 0x7F
        #expect(Self.rejection { _ = try Self.unprotect(receiver, clear, rtcp: true) } == 2)
    }
}
