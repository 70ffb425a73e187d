/// An IPv4 address as its 32 bits in network order (the first octet is the most significant byte).
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    public var bits: UInt32

    public init(bits: UInt32) { self.bits = bits }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        bits = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text (`192.0.2.1`); nil for anything else.
    public init?(_ text: Substring) {
        var value: UInt32 = 0
        var octets = 0
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty, part.count <= 3, let octet = UInt8(part, radix: 10) else { return nil }
            value = value << 8 | UInt32(octet)
            octets += 1
        }
        guard octets == 4 else { return nil }
        bits = value
    }

    public init?(_ text: String) { self.init(Substring(text)) }

    public var description: String {
        "\(bits >> 24).\((bits >> 16) & 0xFF).\((bits >> 8) & 0xFF).\(bits & 0xFF)"
    }

    public var isLoopback: Bool { bits >> 24 == 127 }
    public var isUnspecified: Bool { bits == 0 }
}

/// An IPv6 address as two 64-bit halves in network order.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The address's 16 bytes in network order.
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 16, "an IPv6 address has 16 bytes")
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.high = high
        self.low = low
    }

    /// Parses RFC 4291 text, including `::` compression and an embedded IPv4 tail; nil otherwise.
    public init?(_ text: Substring) {
        guard !text.isEmpty, text.count <= 45 else { return nil }
        var groups: [UInt16]
        if let gap = text.firstRange(of: "::") {
            let after = text[gap.upperBound...]
            guard after.firstRange(of: "::") == nil,
                  let head = IPv6Address.groups(text[..<gap.lowerBound], allowIPv4Tail: false),
                  let tail = IPv6Address.groups(after, allowIPv4Tail: true),
                  head.count + tail.count <= 7 else { return nil }
            groups = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard let all = IPv6Address.groups(text, allowIPv4Tail: true), all.count == 8 else { return nil }
            groups = all
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, group) in groups.enumerated() {
            if index < 4 { high = high << 16 | UInt64(group) } else { low = low << 16 | UInt64(group) }
        }
        self.high = high
        self.low = low
    }

    public init?(_ text: String) { self.init(Substring(text)) }

    private static func groups(_ text: Substring, allowIPv4Tail: Bool) -> [UInt16]? {
        if text.isEmpty { return [] }
        var result: [UInt16] = []
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        for (index, part) in parts.enumerated() {
            if index == parts.count - 1, allowIPv4Tail, part.contains(".") {
                guard let v4 = IPv4Address(part) else { return nil }
                result.append(UInt16(truncatingIfNeeded: v4.bits >> 16))
                result.append(UInt16(truncatingIfNeeded: v4.bits))
            } else {
                guard !part.isEmpty, part.count <= 4, let group = UInt16(part, radix: 16) else { return nil }
                result.append(group)
            }
        }
        return result
    }

    /// Byte `index` (0–15) in network order.
    public subscript(byte index: Int) -> UInt8 {
        index < 8 ? UInt8(truncatingIfNeeded: high >> (56 - 8 * index))
            : UInt8(truncatingIfNeeded: low >> (56 - 8 * (index - 8)))
    }

    /// RFC 5952 text: lowercase, leading zeros dropped, the longest run of zero groups as `::`.
    public var description: String {
        let groups = (0..<8).map { i -> UInt16 in
            let half = i < 4 ? high : low
            return UInt16(truncatingIfNeeded: half >> (48 - 16 * (i % 4)))
        }
        var bestStart = -1, bestLength = 0, runStart = -1
        for i in 0...8 {
            if i < 8, groups[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength, i - runStart >= 2 { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        var text = ""
        var i = 0
        while i < 8 {
            if i == bestStart {
                text += "::"
                i += bestLength
                continue
            }
            if !text.isEmpty, !text.hasSuffix(":") { text += ":" }
            text += String(groups[i], radix: 16)
            i += 1
        }
        return text
    }

    public var isLoopback: Bool { high == 0 && low == 1 }
    public var isUnspecified: Bool { high == 0 && low == 0 }
}

/// An IP address and port: where a datagram came from or goes to.
public enum TransportAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address, port: UInt16)
    case v6(IPv6Address, port: UInt16)

    public var port: UInt16 {
        switch self {
        case .v4(_, let port), .v6(_, let port): port
        }
    }

    public var isIPv6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// 0.0.0.0 or `::`: a wildcard, nothing one can send to.
    public var isUnspecified: Bool {
        switch self {
        case .v4(let address, _): address.isUnspecified
        case .v6(let address, _): address.isUnspecified
        }
    }

    /// `192.0.2.1:3478` or `[2001:db8::1]:3478`.
    public var description: String {
        switch self {
        case .v4(let address, let port): "\(address):\(port)"
        case .v6(let address, let port): "[\(address)]:\(port)"
        }
    }

    /// Parses `host:port` where host is IPv4 or a bracketed IPv6 address.
    public init?(_ text: String) {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()), let address = IPv6Address(host) else {
                return nil
            }
            self = .v6(address, port: port)
        } else {
            guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]),
                  let address = IPv4Address(text[..<colon]) else { return nil }
            self = .v4(address, port: port)
        }
    }
}

/// An IPv4 prefix such as `10.0.0.0/8`, for allow-lists (relay sources, worker networks).
public struct IPv4Network: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int

    public init(address: IPv4Address, prefixLength: Int) {
        precondition((0...32).contains(prefixLength))
        self.prefixLength = prefixLength
        self.address = IPv4Address(bits: address.bits & IPv4Network.mask(prefixLength))
    }

    /// Parses `a.b.c.d/n` (or a bare address, as /32).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPv4Address(parts[0]) else { return nil }
        var length = 32
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...32).contains(parsed) else { return nil }
            length = parsed
        }
        self.init(address: address, prefixLength: length)
    }

    public func contains(_ other: IPv4Address) -> Bool {
        other.bits & IPv4Network.mask(prefixLength) == address.bits
    }

    public func contains(_ transport: TransportAddress) -> Bool {
        if case .v4(let ip, _) = transport { return contains(ip) }
        return false
    }

    static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : UInt32.max << (32 - length) }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// An IPv4 or IPv6 prefix (`10.0.0.0/8`, `fd00::/8`), for allow-lists: worker networks, relay networks.
public enum IPNetwork: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Network)
    /// The prefix's address (host bits cleared) and its length, 0–128.
    case v6(high: UInt64, low: UInt64, prefixLength: Int)

    /// Parses `a.b.c.d/n` or `x:y::z/n` (a bare address is a /32 or /128).
    public init?(_ text: String) {
        if let network = IPv4Network(text) {
            self = .v4(network)
            return
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPv6Address(String(parts[0])) else { return nil }
        var length = 128
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...128).contains(parsed) else { return nil }
            length = parsed
        }
        let (highMask, lowMask) = Self.masks(length)
        self = .v6(high: address.high & highMask, low: address.low & lowMask, prefixLength: length)
    }

    public func contains(_ transport: TransportAddress) -> Bool {
        switch (self, transport) {
        case (.v4(let network), _): return network.contains(transport)
        case (.v6(let high, let low, let length), .v6(let ip, _)):
            let (highMask, lowMask) = Self.masks(length)
            return ip.high & highMask == high && ip.low & lowMask == low
        default: return false
        }
    }

    static func masks(_ length: Int) -> (UInt64, UInt64) {
        let high = length >= 64 ? UInt64.max : (length == 0 ? 0 : UInt64.max << (64 - length))
        let low = length <= 64 ? 0 : (length == 128 ? UInt64.max : UInt64.max << (128 - length))
        return (high, low)
    }

    public var description: String {
        switch self {
        case .v4(let network): return network.description
        case .v6(let high, let low, let length): return "\(IPv6Address(high: high, low: low))/\(length)"
        }
    }
}
