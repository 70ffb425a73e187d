import Testing
@testable import ParleyWire
import ParleyTestSupport

@Suite struct TunnelHeaderTests {
    @Test func vectorsMatchTheProtocolDocument() throws {
        let v4 = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: 0x0102,
                              client: .v4(IPv4Address(203, 0, 113, 7), port: 54321))
        #expect(hex(v4.bytes) == "d1000102d431cb007107")
        let v6 = TunnelHeader(transport: .tcp, direction: .toClient, ingressID: 9,
                              client: .v6(IPv6Address("2001:db8::42")!, port: 443))
        #expect(hex(v6.bytes) == "d107000901bb20010db8000000000000000000000042")
        #expect(try TunnelHeader.decode(bytes(fromHex: "d1000102d431cb007107")).header == v4)
        #expect(try TunnelHeader.decode(bytes(fromHex: "d107000901bb20010db8000000000000000000000042")).header == v6)
    }

    @Test(arguments: [
        TunnelHeader(transport: .udp, direction: .fromClient, ingressID: 0, client: .v4(IPv4Address(127, 0, 0, 1), port: 1)),
        TunnelHeader(transport: .tcp, direction: .fromClient, ingressID: 65535, client: .v4(IPv4Address(bits: .max), port: 65535)),
        TunnelHeader(transport: .udp, direction: .toClient, ingressID: 3, client: .v6(IPv6Address(high: .max, low: 1), port: 3478)),
    ])
    func roundTripsWithPayload(header: TunnelHeader) throws {
        let payload: [UInt8] = [0x00, 0x01, 0x02, 0xFF]
        let datagram = header.bytes + payload
        let (decoded, length) = try TunnelHeader.decode(datagram)
        #expect(decoded == header)
        #expect(length == header.encodedLength)
        #expect(Array(datagram[length...]) == payload)
        datagram.withUnsafeBytes { #expect(TunnelHeader.isTunnelDatagram($0)) }
    }

    @Test func theMarkerIsOutsideEveryRFC7983Range() {
        let marker = [TunnelHeader.marker, 0]
        #expect(PacketKind.classify(marker) == .unknown)
    }

    @Test(arguments: [
        ([UInt8](), TunnelHeaderError.truncated),
        ([0xd1, 0x00, 0x00, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00], .truncated),
        ([0x17, 0xfe, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], .notTunnel),
        ([0xd2, 0x00, 0x00, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01], .unsupportedVersion(2)),
        ([0xd1, 0x08, 0x00, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01], .reservedFlags),
        // IPv6 flag with only an IPv4-sized address.
        ([0xd1, 0x02, 0x00, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00], .truncated),
    ] as [([UInt8], TunnelHeaderError)])
    func malformedHeadersAreRejected(bytes: [UInt8], error: TunnelHeaderError) {
        #expect(throws: error) { try TunnelHeader.decode(bytes) }
    }

    @Test func encodingIntoASmallBufferFails() {
        let header = TunnelHeader(transport: .udp, direction: .fromClient, ingressID: 1,
                                  client: .v6(IPv6Address(high: 1, low: 1), port: 1))
        var small = [UInt8](repeating: 0, count: 12)
        _ = small.withUnsafeMutableBytes { buffer in
            #expect(throws: TunnelHeaderError.bufferTooSmall) { try header.encode(into: buffer) }
        }
    }

    @Test func arbitraryBytesNeverTrap() {
        var generator = SplitMix64(seed: 3)
        for _ in 0..<50_000 {
            var bytes = (0..<Int(generator.next() % 30)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if !bytes.isEmpty, generator.next() % 2 == 0 { bytes[0] = TunnelHeader.marker }
            if let (header, length) = try? TunnelHeader.decode(bytes) {
                #expect(length <= bytes.count)
                #expect(Array(bytes[..<length]) == header.bytes)
            }
        }
    }
}
