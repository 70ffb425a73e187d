import CUsrSCTP
import Testing
@testable import ParleySCTP

#if canImport(Glibc)
import Glibc
#endif

@Suite struct CRC32cTests {
    /// RFC 3720 §B.4 test vectors, and the common "123456789" check value.
    static let vectors: [([UInt8], UInt32)] = [
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        (Array("123456789".utf8), 0xE306_9283),
    ]

    @Test func matchesTheReferenceVectors() {
        for (bytes, expected) in Self.vectors {
            #expect(bytes.withUnsafeBytes { CRC32c.checksum($0) } == expected)
        }
    }
}

@Suite struct SCTPCodecTests {
    /// usrsctp's INIT, as a browser-like stack sends it: our parser reads every field and the
    /// checksum verifies.
    @Test func usrsctpInitParses() throws {
        let initPacket: [UInt8] = try UsrSCTP.lock.withLock {
            let peer = try UsrSCTPPeer()
            peer.connect()
            return try #require(peer.takeOutput().first)
        }
        try initPacket.withUnsafeBytes { bytes in
            let packet = try SCTPPacket.parse(bytes)
            #expect(packet.sourcePort == 5000 && packet.destinationPort == 5000)
            #expect(packet.verificationTag == 0, "an INIT carries tag 0")
            let chunk = try #require(packet.chunks.first)
            #expect(chunk.type == .initiation)
            let initiation = try SCTPInitiation.decode(chunk, in: bytes)
            #expect(initiation.initiateTag != 0)
            #expect(initiation.outboundStreams > 0 && initiation.inboundStreams > 0)
            #expect(initiation.forwardTSNSupported, "usrsctp offers partial reliability")
            #expect(initiation.advertisedReceiverWindow > 0)
        }
        // One flipped bit breaks the checksum.
        var corrupted = initPacket
        corrupted[20] ^= 1
        #expect(throws: SCTPParseError.badChecksum) { try corrupted.withUnsafeBytes { try SCTPPacket.parse($0) } }
    }

    @Test func sealedPacketsVerify() throws {
        // A hand-made packet: common header + one DATA chunk with "hi" (PPID 51), padded.
        var bytes: [UInt8] = [0x13, 0x88, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 0,
                              0, 0x03, 0, 18, 0, 0, 0, 7, 0, 1, 0, 2, 0, 0, 0, 51, 0x68, 0x69, 0, 0]
        bytes.withUnsafeMutableBytes { SCTPPacket.seal($0) }
        try bytes.withUnsafeBytes { raw in
            let packet = try SCTPPacket.parse(raw)
            let data = try SCTPData.decode(try #require(packet.chunks.first), in: raw)
            #expect(data.tsn == 7 && data.streamID == 1 && data.streamSequence == 2 && data.payloadProtocol == 51)
            #expect(Array(raw[data.payload]) == [0x68, 0x69])
            #expect(data.beginning && data.ending && !data.unordered)
        }
    }

    @Test(arguments: [
        ([UInt8](), SCTPParseError.truncated),
        ([UInt8](repeating: 0, count: 15), .truncated),
        // A chunk claiming 200 bytes.
        ([0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 1, 2, 3, 4], .badChunkLength(offset: 12)),
        // A chunk length below 4.
        ([0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4], .badChunkLength(offset: 12)),
    ] as [([UInt8], SCTPParseError)])
    func malformedPacketsAreRejected(bytes: [UInt8], error: SCTPParseError) {
        #expect(throws: error) { try bytes.withUnsafeBytes { try SCTPPacket.parse($0, verifyChecksum: false) } }
    }

    @Test func malformedChunksAreRejectedByTheirDecoders() throws {
        // INIT with a zero initiate tag; SACK claiming more gap blocks than it holds.
        let initiation: [UInt8] = [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
                                   1, 0, 0, 20, 0, 0, 0, 0, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1]
        try initiation.withUnsafeBytes { raw in
            let packet = try SCTPPacket.parse(raw, verifyChecksum: false)
            #expect(throws: SCTPParseError.malformedChunk(.initiation)) { try SCTPInitiation.decode(packet.chunks[0], in: raw) }
        }
        let sack: [UInt8] = [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
                             3, 0, 0, 16, 0, 0, 0, 5, 0, 1, 0, 0, 0, 9, 0, 0]
        try sack.withUnsafeBytes { raw in
            let packet = try SCTPPacket.parse(raw, verifyChecksum: false)
            #expect(throws: SCTPParseError.malformedChunk(.selectiveAck)) { try SCTPSelectiveAck.decode(packet.chunks[0], in: raw) }
        }
    }

    /// Arbitrary bytes through every decoder: results or typed errors, never a trap.
    @Test func arbitraryBytesNeverTrap() {
        var state: UInt64 = 0x5C7F
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var parsed = 0
        for _ in 0..<30_000 {
            var bytes = (0..<(12 + Int(next() % 80))).map { _ in UInt8(truncatingIfNeeded: next()) }
            // Plausible chunk headers more often than chance would give.
            if bytes.count >= 16 {
                bytes[12] = [0, 1, 2, 3, 130, 192][Int(next() % 6)]
                let length = 4 + Int(next() % UInt64(bytes.count - 12))
                bytes[14] = UInt8(length >> 8)
                bytes[15] = UInt8(length & 0xFF)
            }
            bytes.withUnsafeBytes { raw in
                guard let packet = try? SCTPPacket.parse(raw, verifyChecksum: false) else { return }
                parsed += 1
                for chunk in packet.chunks {
                    _ = try? SCTPInitiation.decode(chunk, in: raw)
                    _ = try? SCTPData.decode(chunk, in: raw)
                    _ = try? SCTPSelectiveAck.decode(chunk, in: raw)
                    _ = try? SCTPForwardTSN.decode(chunk, in: raw)
                    _ = try? SCTPReconfigurationParameter.decode(chunk, in: raw)
                }
            }
        }
        #expect(parsed > 1000)
    }

    /// usrsctp's ABORT carries its diagnostic as a protocol-violation cause (code 13) when
    /// `sctp_diag_info_code` is set; it becomes part of the close reason, other causes do not.
    @Test func abortReasonKeepsProtocolViolationText() {
        let text = Array("Association error counter exceeded".utf8)
        let cause: [UInt8] = [0, 13, 0, UInt8(4 + text.count)] + text + [0, 0]
        cause.withUnsafeBytes { #expect(SCTPAssociation.abortReason($0[...]) == "aborted by peer: Association error counter exceeded") }
        [UInt8]().withUnsafeBytes { #expect(SCTPAssociation.abortReason($0[...]) == "aborted by peer") }
        let userAbort: [UInt8] = [0, 12, 0, 8, 0x41, 0x42, 0x43, 0x44]
        userAbort.withUnsafeBytes { #expect(SCTPAssociation.abortReason($0[...]) == "aborted by peer") }
        let binary: [UInt8] = [0, 13, 0, 8, 0x00, 0x01, 0x0A, 0xFF]
        binary.withUnsafeBytes { #expect(SCTPAssociation.abortReason($0[...]) == "aborted by peer") }
    }
}
