import Testing
@testable import ParleyWire

/// RFC 5769's test vectors, parsed and rebuilt byte for byte.
@Suite struct STUNVectorTests {
    static let password = "VOkJxbRl1RmTxUk/WvJxBt"
    static let transactionID = STUNTransactionID(0xb7e7_a701, 0xbc34_d686, 0xfa87_dfae)

    func string(_ range: Range<Int>?, in bytes: [UInt8]) -> String? {
        range.map { String(decoding: bytes[$0], as: UTF8.self) }
    }

    @Test func sampleRequestParses() throws {
        let bytes = try Fixtures.hex("rfc5769/sample-request.hex")
        let message = try STUNMessage.parse(bytes)
        #expect(message.type == .bindingRequest)
        #expect(message.transactionID == Self.transactionID)
        #expect(string(message.software, in: bytes) == "STUN test client")
        #expect(string(message.username, in: bytes) == "evtj:h6vY")
        #expect(message.priority == 0x6e00_01ff)
        #expect(message.iceControlled == 0x932f_f9b1_5126_3b36)
        #expect(message.iceControlling == nil)
        #expect(!message.useCandidate)
        #expect(message.hasValidMessageIntegrity(in: bytes, key: STUNIntegrityKey(shortTermPassword: Self.password)))
        #expect(!message.hasValidMessageIntegrity(in: bytes, key: STUNIntegrityKey(shortTermPassword: "wrong")))
        #expect(message.hasValidFingerprint(in: bytes))
        bytes.withUnsafeBytes { raw in
            #expect(message.usernameRecipientPart(in: raw).map { String(decoding: raw[$0], as: UTF8.self) } == "evtj")
        }
    }

    @Test func sampleRequestRebuildsByteForByte() throws {
        let expected = try Fixtures.hex("rfc5769/sample-request.hex")
        let built = try STUNWriter.build(type: .bindingRequest, transactionID: Self.transactionID) { writer throws(STUNBuildError) in
            writer.paddingByte = 0x20
            try writer.appendSoftware("STUN test client")
            try writer.appendPriority(0x6e00_01ff)
            try writer.appendICEControlled(tieBreaker: 0x932f_f9b1_5126_3b36)
            try writer.appendUsername("evtj:h6vY")
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: Self.password))
            try writer.appendFingerprint()
        }
        #expect(hex(built) == hex(expected))
    }

    @Test(arguments: [
        ("rfc5769/ipv4-response.hex", TransportAddress.v4(IPv4Address(192, 0, 2, 1), port: 32853)),
        ("rfc5769/ipv6-response.hex", TransportAddress.v6(IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")!, port: 32853)),
    ])
    func responsesParseAndRebuild(file: String, address: TransportAddress) throws {
        let expected = try Fixtures.hex(file)
        let message = try STUNMessage.parse(expected)
        #expect(message.type == .bindingSuccess)
        #expect(message.xorMappedAddress == address)
        #expect(string(message.software, in: expected) == "test vector")
        #expect(message.hasValidMessageIntegrity(in: expected, key: STUNIntegrityKey(shortTermPassword: Self.password)))
        #expect(message.hasValidFingerprint(in: expected))

        let built = try STUNWriter.build(type: .bindingSuccess, transactionID: Self.transactionID) { writer throws(STUNBuildError) in
            writer.paddingByte = 0x20
            try writer.appendSoftware("test vector")
            try writer.appendXORMappedAddress(address)
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: Self.password))
            try writer.appendFingerprint()
        }
        #expect(hex(built) == hex(expected))
    }

    @Test func longTermRequestParsesAndRebuilds() throws {
        let expected = try Fixtures.hex("rfc5769/long-term-request.hex")
        let message = try STUNMessage.parse(expected)
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
        #expect(message.transactionID == STUNTransactionID(0x78ad_3433, 0xc6ad_72c0, 0x29da_412e))
        #expect(string(message.username, in: expected) == username)
        #expect(string(message.nonce, in: expected) == "f//499k954d6OL34oL9FSTvy64sA")
        #expect(string(message.realm, in: expected) == "example.org")
        #expect(message.fingerprintOffset == nil)
        // SASLprep maps "The\u{00AD}M\u{00AA}tr\u{2168}" to "TheMatrIX".
        let key = STUNIntegrityKey(longTermUsername: username, realm: "example.org", password: "TheMatrIX")
        #expect(message.hasValidMessageIntegrity(in: expected, key: key))

        let built = try STUNWriter.build(type: .bindingRequest, transactionID: message.transactionID) { writer throws(STUNBuildError) in
            try writer.appendUsername(username)
            try writer.append(.nonce, value: Array("f//499k954d6OL34oL9FSTvy64sA".utf8))
            try writer.append(.realm, value: Array("example.org".utf8))
            try writer.appendMessageIntegrity(key: key)
        }
        #expect(hex(built) == hex(expected))
    }
}
