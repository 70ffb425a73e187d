/// The header a relay puts in front of each client datagram it forwards to a transceiver, and a
/// transceiver in front of each datagram it sends back for a client. The payload follows byte for
/// byte. Layout (docs/protocol.md):
///
///     0      marker and version: 0xD1 (0xD_ marks a tunnel datagram; low nibble = version 1)
///     1      flags: bit 0 TCP origin, bit 1 IPv6 client, bit 2 direction toward the client;
///            bits 3–7 zero
///     2–3    relay ingress id (big-endian)
///     4–5    client port
///     6–     client address: 4 bytes (IPv4) or 16 bytes (IPv6)
///
/// 0xD1 lies in the range RFC 7983 leaves to no protocol (192–255), so a transceiver port can
/// take tunnel datagrams and direct client datagrams side by side and tell them apart by the first byte.
public struct TunnelHeader: Hashable, Sendable {
    public static let marker: UInt8 = 0xD1
    public static let ipv4Length = 10
    public static let ipv6Length = 22
    public static let maximumLength = ipv6Length

    public enum Transport: Sendable, Hashable { case udp, tcp }
    public enum Direction: Sendable, Hashable {
        /// Relay → transceiver: the client sent the payload.
        case fromClient
        /// Transceiver → relay: the payload is for the client.
        case toClient
    }

    public var transport: Transport
    public var direction: Direction
    /// Which relay socket or listener the flow belongs to, so the answer leaves the same way.
    public var ingressID: UInt16
    /// The client's address as the relay saw it.
    public var client: TransportAddress

    public init(transport: Transport, direction: Direction, ingressID: UInt16, client: TransportAddress) {
        self.transport = transport
        self.direction = direction
        self.ingressID = ingressID
        self.client = client
    }

    public var encodedLength: Int { client.isIPv6 ? Self.ipv6Length : Self.ipv4Length }

    /// Whether a datagram starts like a tunnel datagram (cheap test before decoding).
    public static func isTunnelDatagram(_ bytes: UnsafeRawBufferPointer) -> Bool { bytes.first == marker }

    /// Writes the header at the start of `output` and returns its length.
    @discardableResult
    public func encode(into output: UnsafeMutableRawBufferPointer) throws(TunnelHeaderError) -> Int {
        guard output.count >= encodedLength else { throw .bufferTooSmall }
        output[0] = Self.marker
        var flags: UInt8 = 0
        if transport == .tcp { flags |= 0b001 }
        if client.isIPv6 { flags |= 0b010 }
        if direction == .toClient { flags |= 0b100 }
        output[1] = flags
        output.store(ingressID, at: 2)
        output.store(client.port, at: 4)
        switch client {
        case .v4(let address, _):
            output.store(address.bits, at: 6)
        case .v6(let address, _):
            output.store(address.high, at: 6)
            output.store(address.low, at: 14)
        }
        return encodedLength
    }

    /// The header as bytes (tests and tools).
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: encodedLength) { buffer, count in
            count = (try? encode(into: UnsafeMutableRawBufferPointer(buffer))) ?? 0
        }
    }

    /// Decodes the header at the start of `bytes`; the payload starts at the returned length.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(TunnelHeaderError) -> (header: TunnelHeader, length: Int) {
        guard bytes.count >= ipv4Length else { throw .truncated }
        guard bytes[0] & 0xF0 == marker & 0xF0 else { throw .notTunnel }
        guard bytes[0] == marker else { throw .unsupportedVersion(bytes[0] & 0x0F) }
        let flags = bytes[1]
        guard flags & 0b1111_1000 == 0 else { throw .reservedFlags }
        let transport: Transport = flags & 0b001 != 0 ? .tcp : .udp
        let direction: Direction = flags & 0b100 != 0 ? .toClient : .fromClient
        let ingressID = bytes.uint16(at: 2)
        let port = bytes.uint16(at: 4)
        let client: TransportAddress
        let length: Int
        if flags & 0b010 != 0 {
            guard bytes.count >= ipv6Length else { throw .truncated }
            client = .v6(IPv6Address(high: bytes.uint64(at: 6), low: bytes.uint64(at: 14)), port: port)
            length = ipv6Length
        } else {
            client = .v4(IPv4Address(bits: bytes.uint32(at: 6)), port: port)
            length = ipv4Length
        }
        return (TunnelHeader(transport: transport, direction: direction, ingressID: ingressID, client: client), length)
    }

    public static func decode(_ bytes: some ContiguousBytesLike) throws(TunnelHeaderError) -> (header: TunnelHeader, length: Int) {
        try bytes.withRawBytes { (raw) throws(TunnelHeaderError) in try decode(raw) }
    }
}

public enum TunnelHeaderError: Error, Equatable, Sendable {
    case truncated
    /// The first byte is not a tunnel marker.
    case notTunnel
    case unsupportedVersion(UInt8)
    /// Bits that version 1 leaves zero are set.
    case reservedFlags
    case bufferTooSmall
}
