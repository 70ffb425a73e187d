import Testing
@testable import ParleyWire

@Suite struct CoreTests {
    @Test func sipHashMatchesTheReferenceVectors() throws {
        let key = SipHashKey(bytes: (0..<16).map { UInt8($0) })
        let lines = try Fixtures.text("siphash24-vectors.txt").split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines.count == 64)
        for line in lines {
            let fields = line.split(separator: " ")
            let length = Int(fields[0])!
            let message = (0..<length).map { UInt8($0) }
            let output = message.withUnsafeBytes { SipHash.hash($0, key: key) }
            let littleEndian = withUnsafeBytes(of: output.littleEndian) { Array($0) }
            #expect(hex(littleEndian) == String(fields[1]), "length \(length)")
        }
    }

    @Test func crc32MatchesZlib() {
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) } == 0xCBF4_3926)
        #expect([UInt8]().withUnsafeBytes { CRC32.checksum($0) } == 0)
        let split = Array("The quick brown fox jumps over the lazy dog".utf8)
        let whole = split.withUnsafeBytes { CRC32.checksum($0) }
        #expect(whole == 0x414F_A339)
        let partial = split[..<10].withUnsafeBytes { CRC32.checksum($0) }
        #expect(split[10...].withUnsafeBytes { CRC32.update(partial, $0) } == whole)
    }

    @Test(arguments: [
        ([0x00, 0x01], PacketKind.stun), ([0x01, 0x01], .stun), ([0x03, 0x00], .stun),
        ([16], .zrtp), ([19], .zrtp),
        ([20, 0xfe], .dtls), ([22, 0xfe, 0xfd], .dtls), ([63], .dtls),
        ([64], .turnChannel), ([79], .turnChannel),
        ([0x80, 111], .rtp), ([0x80, 0x80 | 111], .rtp), ([0x80, 200], .rtcp), ([0x81, 201], .rtcp), ([0xBF, 223], .rtcp),
        ([0x80], .unknown), ([], .unknown), ([4], .unknown), ([15], .unknown), ([80], .unknown), ([127], .unknown),
        ([192], .unknown), ([0xD1], .unknown), ([255], .unknown),
    ] as [([UInt8], PacketKind)])
    func demultiplexesByFirstByte(bytes: [UInt8], kind: PacketKind) {
        #expect(PacketKind.classify(bytes) == kind)
    }

    @Test func addressesParseAndPrint() {
        #expect(IPv4Address("192.0.2.1")?.description == "192.0.2.1")
        #expect(IPv4Address("256.0.0.1") == nil)
        #expect(IPv4Address("1.2.3") == nil)
        #expect(IPv4Address("1.2.3.4.5") == nil)
        #expect(IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")?.description == "2001:db8:1234:5678:11:2233:4455:6677")
        #expect(IPv6Address("2001:0db8:0000:0000:0000:0000:0000:0001")?.description == "2001:db8::1")
        #expect(IPv6Address("::1")?.isLoopback == true)
        #expect(IPv6Address("::")?.description == "::")
        #expect(IPv6Address("::ffff:192.0.2.1")?.description == "::ffff:c000:201")
        #expect(IPv6Address("1::2::3") == nil)
        #expect(IPv6Address("12345::") == nil)
        #expect(IPv6Address("1:2:3:4:5:6:7:8:9") == nil)
        #expect(TransportAddress("127.0.0.1:3478") == .v4(IPv4Address(127, 0, 0, 1), port: 3478))
        #expect(TransportAddress("[::1]:443") == .v6(IPv6Address(high: 0, low: 1), port: 443))
        #expect(TransportAddress("[::1]:443")?.description == "[::1]:443")
        #expect(TransportAddress("127.0.0.1") == nil)
        #expect(TransportAddress("127.0.0.1:70000") == nil)
    }
}

@Suite struct NetworkTests {
    @Test func prefixesParseAndMatch() throws {
        let network = try #require(IPv4Network("10.1.0.0/16"))
        #expect(network.contains(IPv4Address(10, 1, 200, 3)))
        #expect(!network.contains(IPv4Address(10, 2, 0, 1)))
        #expect(network.contains(TransportAddress.v4(IPv4Address(10, 1, 0, 9), port: 1)))
        #expect(!network.contains(TransportAddress.v6(IPv6Address(high: 0, low: 1), port: 1)))
        #expect(IPv4Network("10.1.2.3/8")?.description == "10.0.0.0/8")
        #expect(IPv4Network("0.0.0.0/0")?.contains(IPv4Address(1, 2, 3, 4)) == true)
        #expect(IPv4Network("127.0.0.1")?.prefixLength == 32)
        #expect(IPv4Network("10.0.0.0/33") == nil)
        #expect(IPv4Network("10.0.0/8") == nil)
        #expect(IPv4Network("10.0.0.0/8/1") == nil)
        // IPv6 prefixes for worker and relay networks.
        let v6 = try #require(IPNetwork("fd00:1::/32"))
        #expect(v6.contains(.v6(IPv6Address("fd00:1:ffff::5")!, port: 1)))
        #expect(!v6.contains(.v6(IPv6Address("fd00:2::5")!, port: 1)))
        #expect(!v6.contains(.v4(IPv4Address(10, 0, 0, 1), port: 1)))
        #expect(IPNetwork("fd00:1:2:3:4:5:6:7/100")?.description == "fd00:1:2:3:4:5::/100")
        #expect(IPNetwork("::1")?.contains(.v6(IPv6Address("::1")!, port: 9)) == true)
        #expect(IPNetwork("::/0")?.contains(.v6(IPv6Address("2001:db8::1")!, port: 9)) == true)
        #expect(IPNetwork("10.0.0.0/8")?.contains(.v4(IPv4Address(10, 9, 9, 9), port: 1)) == true)
        #expect(IPNetwork("fd00::/129") == nil)
    }
}
