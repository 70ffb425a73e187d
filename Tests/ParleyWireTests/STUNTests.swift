import Testing
@testable import ParleyWire
import ParleyTestSupport

@Suite struct STUNTests {
    let password = "ServerPasswordOf22Chars"
    let key = STUNIntegrityKey(shortTermPassword: "ServerPasswordOf22Chars")

    func iceCheck(username: String, useCandidate: Bool = true) throws -> [UInt8] {
        try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 2, 3)) { writer throws(STUNBuildError) in
            try writer.appendUsername(username)
            try writer.appendPriority(0x6e00_01ff)
            try writer.appendICEControlling(tieBreaker: 0x0102_0304_0506_0708)
            if useCandidate { try writer.appendUseCandidate() }
            try writer.appendMessageIntegrity(key: key)
            try writer.appendFingerprint()
        }
    }

    @Test func messageTypeEncodingFollowsRFC8489() {
        #expect(STUNMessageType.bindingRequest.rawValue == 0x0001)
        #expect(STUNMessageType.bindingIndication.rawValue == 0x0011)
        #expect(STUNMessageType.bindingSuccess.rawValue == 0x0101)
        #expect(STUNMessageType.bindingError.rawValue == 0x0111)
        let allocate = STUNMessageType(method: STUNMethod(rawValue: 0x003), class: .errorResponse)
        #expect(allocate.rawValue == 0x0113)
        #expect(allocate.method.rawValue == 0x003)
        #expect(allocate.messageClass == .errorResponse)
        let high = STUNMessageType(method: STUNMethod(rawValue: 0xFFF), class: .indication)
        #expect(high.method.rawValue == 0xFFF)
        #expect(high.messageClass == .indication)
    }

    @Test func iceCheckRoundTrips() throws {
        let bytes = try iceCheck(username: "srv1:cli1")
        let message = try STUNMessage.parse(bytes)
        #expect(message.type == .bindingRequest)
        #expect(message.useCandidate)
        #expect(message.priority == 0x6e00_01ff)
        #expect(message.iceControlling == 0x0102_0304_0506_0708)
        #expect(message.hasValidMessageIntegrity(in: bytes, key: key))
        #expect(message.hasValidFingerprint(in: bytes))
        #expect(message.length == bytes.count)
    }

    /// SPED's two attributes (0xC070 DTLS-IN-STUN, 0xC071 its ACK): written before MESSAGE-INTEGRITY,
    /// read back by range; an ACK that is not whole CRCs, or more than four, is ignored and flagged.
    @Test func dtlsInSTUNAttributesRoundTrip() throws {
        let key = STUNIntegrityKey(shortTermPassword: "password")
        let record: [UInt8] = [22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xAA]  // 14 bytes: padded to 16
        let bytes = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 2, 3)) { writer throws(STUNBuildError) in
            try writer.appendUsername("a:b")
            try writer.appendDTLSInSTUNAcknowledgement([0x0102_0304, 0xDEAD_BEEF])
            try writer.appendDTLSInSTUN(record)
            try writer.appendMessageIntegrity(key: key)
            try writer.appendFingerprint()
        }
        // The ACK's header and its two big-endian CRCs, then DATA's header, 14 value bytes and 2 of padding.
        #expect(Array(bytes[28..<40]) == [0xC0, 0x71, 0, 8, 1, 2, 3, 4, 0xDE, 0xAD, 0xBE, 0xEF])
        #expect(Array(bytes[40..<44]) == [0xC0, 0x70, 0, 14])
        let message = try STUNMessage.parse(bytes)
        #expect(message.dtlsInSTUN.map { Array(bytes[$0]) } == record)
        #expect(message.dtlsInSTUNAcknowledgement.map { Array(bytes[$0]) } == [1, 2, 3, 4, 0xDE, 0xAD, 0xBE, 0xEF])
        #expect(!message.hasMalformedDTLSAcknowledgement)
        #expect(bytes.withUnsafeBytes { message.hasValidMessageIntegrity(in: $0, key: key) })

        for badLength in [3, 5, 20] {
            let bad = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 2, 3)) { writer throws(STUNBuildError) in
                try writer.append(.dtlsInSTUNAcknowledgement, value: [UInt8](repeating: 7, count: badLength))
                try writer.appendDTLSInSTUN([UInt8]())
            }
            let parsed = try STUNMessage.parse(bad)
            #expect(parsed.dtlsInSTUNAcknowledgement == nil && parsed.hasMalformedDTLSAcknowledgement, "\(badLength)")
            #expect(parsed.dtlsInSTUN?.isEmpty == true)  // an empty DATA is legal: "nothing pending"
        }
    }

    /// A check inside a tunnel datagram: parsed from a rebased buffer, its ranges index that buffer.
    @Test func messageInsideATunnelDatagramParsesFromARebasedBuffer() throws {
        let check = try iceCheck(username: "srv1:cli1")
        let header = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: 1, client: .v4(IPv4Address(1, 2, 3, 4), port: 5))
        let datagram = header.bytes + check
        try datagram.withUnsafeBytes { raw in
            let payload = UnsafeRawBufferPointer(rebasing: raw[header.encodedLength...])
            let message = try STUNMessage.parse(payload)
            let username = try #require(message.username)
            #expect(String(decoding: payload[username], as: UTF8.self) == "srv1:cli1")
            #expect(message.hasValidMessageIntegrity(in: payload, key: key))
            #expect(message.hasValidFingerprint(in: payload))
        }
    }

    @Test func longUsernamesParseUpTo763BytesAndBuildUpTo508() throws {
        let built = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
            try writer.appendUsername(String(repeating: "u", count: 508))
        }
        #expect(try STUNMessage.parse(built).username?.count == 508)
        #expect(throws: STUNBuildError.valueTooLong(.username)) {
            _ = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
                try writer.appendUsername(String(repeating: "u", count: 509))
            }
        }
        let long = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
            try writer.append(.username, value: Array(repeating: UInt8(ascii: "u"), count: 763))
        }
        #expect(try STUNMessage.parse(long).username?.count == 763)
    }

    @Test func errorResponseCarriesCodeAndReason() throws {
        let bytes = try STUNWriter.build(type: .bindingError, transactionID: STUNTransactionID(9, 9, 9)) { writer throws(STUNBuildError) in
            try writer.appendErrorCode(487, reason: "Role Conflict")
            try writer.appendUnknownAttributes([STUNAttributeType(rawValue: 0x7777)])
            try writer.appendFingerprint()
        }
        let message = try STUNMessage.parse(bytes)
        #expect(message.errorCode?.code == 487)
        #expect(message.errorCode.map { String(decoding: bytes[$0.reason], as: UTF8.self) } == "Role Conflict")
        #expect(message.unknownRequiredAttributes.count == 0)
        #expect(message.hasValidFingerprint(in: bytes))
    }

    @Test func flippedBitsBreakIntegrityAndFingerprint() throws {
        let bytes = try iceCheck(username: "srv1:cli1")
        let message = try STUNMessage.parse(bytes)
        // Flip one bit inside the USERNAME value: still parses, but neither check passes.
        var tampered = bytes
        tampered[24] ^= 0x01
        let reparsed = try STUNMessage.parse(tampered)
        #expect(!reparsed.hasValidMessageIntegrity(in: tampered, key: key))
        #expect(!reparsed.hasValidFingerprint(in: tampered))
        #expect(message.hasValidMessageIntegrity(in: bytes, key: key))
    }

    @Test func attributesAfterIntegrityAreIgnoredExceptFingerprint() throws {
        var bytes = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
            try writer.appendUsername("a:b")
            try writer.appendMessageIntegrity(key: key)
        }
        // Append PRIORITY after MESSAGE-INTEGRITY by hand, fixing the length.
        bytes += [0x00, 0x24, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]
        let length = bytes.count - 20
        bytes[2] = UInt8(length >> 8)
        bytes[3] = UInt8(length & 0xFF)
        let message = try STUNMessage.parse(bytes)
        #expect(message.priority == nil)
        #expect(message.hasValidMessageIntegrity(in: bytes, key: key))
    }

    @Test func unknownComprehensionRequiredAttributesAreRecorded() throws {
        let bytes = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
            try writer.append(STUNAttributeType(rawValue: 0x7001), value: [1, 2, 3])
            try writer.append(STUNAttributeType(rawValue: 0xC001), value: [1])  // optional: skipped silently
            try writer.appendUsername("a:b")
        }
        let message = try STUNMessage.parse(bytes)
        #expect(message.unknownRequiredAttributes.types == [STUNAttributeType(rawValue: 0x7001)])
        #expect(message.username != nil)
    }

    @Test func writerRefusesAttributesAfterIntegrityAndSmallBuffers() throws {
        #expect(throws: STUNBuildError.attributeAfterIntegrity) {
            _ = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
                try writer.appendMessageIntegrity(key: key)
                try writer.appendPriority(1)
            }
        }
        #expect(throws: STUNBuildError.attributeAfterIntegrity) {
            _ = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1)) { writer throws(STUNBuildError) in
                try writer.appendFingerprint()
                try writer.appendFingerprint()
            }
        }
        #expect(throws: STUNBuildError.bufferTooSmall) {
            _ = try STUNWriter.build(type: .bindingRequest, transactionID: STUNTransactionID(1, 1, 1), capacity: 30) { writer throws(STUNBuildError) in
                try writer.appendUsername("a-long-username:that-does-not-fit")
            }
        }
    }

    @Test(arguments: [
        ([UInt8](), STUNParseError.truncated),
        ([UInt8](repeating: 0, count: 19), .truncated),
        ([0x80, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12), .notSTUN),
        ([0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x43] + [UInt8](repeating: 0, count: 12), .badMagicCookie),
        ([0x00, 0x01, 0, 4, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12), .badLength),
        ([0x00, 0x01, 0, 2, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 14), .badLength),
        // USERNAME claims 200 bytes in an 8-byte body.
        ([0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x00, 0x06, 0x00, 0xC8, 0x61, 0x62, 0x63, 0x64],
         .attributeOverflow(offset: 20)),
        // PRIORITY with 2 bytes.
        ([0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x00, 0x24, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00],
         .malformedAttribute(.priority)),
        // USE-CANDIDATE with a value.
        ([0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x00, 0x25, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00],
         .malformedAttribute(.useCandidate)),
        // XOR-MAPPED-ADDRESS with family 3.
        ([0x01, 0x01, 0, 12, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x00, 0x20, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 1, 2, 3, 4],
         .malformedAttribute(.xorMappedAddress)),
        // ERROR-CODE with class 9.
        ([0x01, 0x11, 0, 8, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x00, 0x09, 0x00, 0x04, 0x00, 0x00, 0x09, 0x00],
         .malformedAttribute(.errorCode)),
        // Something after FINGERPRINT.
        ([0x00, 0x01, 0, 12, 0x21, 0x12, 0xa4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0, 0x80, 0x22, 0x00, 0x00],
         .attributeAfterFingerprint),
    ] as [([UInt8], STUNParseError)])
    func malformedMessagesAreRejected(bytes: [UInt8], error: STUNParseError) {
        #expect(throws: error) { try STUNMessage.parse(bytes) }
    }

    /// Random bytes and random mutations of a valid check: the parser returns or throws, never traps.
    @Test func arbitraryBytesNeverTrap() throws {
        var generator = SplitMix64(seed: 0x5EED)
        let valid = try iceCheck(username: "srv1:cli1")
        var parsed = 0
        for round in 0..<50_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = valid
                for _ in 0...(Int(generator.next() % 4)) {
                    bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
                if generator.next() % 8 == 0 { bytes.removeLast(Int(generator.next() % UInt64(bytes.count))) }
            } else {
                // Random attributes behind a valid header, so the attribute walk is what gets exercised.
                let body = Int(generator.next() % 64) & ~3
                bytes = (0..<(20 + body)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                bytes[0] &= 0x3F
                bytes[2] = 0
                bytes[3] = UInt8(body)
                bytes.replaceSubrange(4..<8, with: [0x21, 0x12, 0xa4, 0x42])
            }
            if let message = try? STUNMessage.parse(bytes) {
                parsed += 1
                _ = message.hasValidMessageIntegrity(in: bytes, key: key)
                _ = message.hasValidFingerprint(in: bytes)
                bytes.withUnsafeBytes { _ = message.usernameRecipientPart(in: $0) }
            }
        }
        #expect(parsed > 0)
    }
}
