/// A `a=name[:value]` line that the typed model does not interpret, kept so nothing is lost.
public struct SDPAttribute: Sendable, Equatable {
    public var name: String
    public var value: String?

    public init(_ name: String, _ value: String? = nil) {
        self.name = name
        self.value = value
    }
}

/// `a=setup` (RFC 8842): which side opens DTLS.
public enum DTLSSetupRole: String, Sendable, Equatable {
    case active, passive, actpass, holdconn
}

/// Media direction attributes (RFC 8866 §6.7).
public enum MediaDirection: String, Sendable, Equatable {
    case sendrecv, sendonly, recvonly, inactive

    /// The direction an answer takes toward an offer with this direction.
    public var answer: MediaDirection {
        switch self {
        case .sendrecv: .sendrecv
        case .sendonly: .recvonly
        case .recvonly: .sendonly
        case .inactive: .inactive
        }
    }
}

/// `a=fingerprint:<hash> <hex:hex:…>` (RFC 8122): the hash of a DTLS certificate.
public struct CertificateFingerprint: Sendable, Equatable, CustomStringConvertible {
    /// Lowercase hash function name: `sha-256`, `sha-384`, `sha-512`, …
    public var algorithm: String
    public var digest: [UInt8]

    public init(algorithm: String, digest: [UInt8]) {
        self.algorithm = algorithm.lowercased()
        self.digest = digest
    }

    /// Parses the attribute value; nil when the hex is malformed.
    public init?(attributeValue: Substring) {
        let parts = attributeValue.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].count <= 16 else { return nil }
        var digest: [UInt8] = []
        for pair in parts[1].split(separator: ":", omittingEmptySubsequences: false) {
            guard pair.count == 2, let byte = UInt8(pair, radix: 16) else { return nil }
            digest.append(byte)
        }
        guard digest.count >= 16, digest.count <= 64 else { return nil }
        self.init(algorithm: String(parts[0]), digest: digest)
    }

    /// `sha-256 AB:CD:…` as SDP writes it.
    public var description: String {
        algorithm + " " + digest.map { byte in
            let hex = String(byte, radix: 16, uppercase: true)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}

/// One RTP payload format of a media section: `a=rtpmap`, its `a=fmtp` and `a=rtcp-fb` lines.
public struct RTPCodec: Sendable, Equatable {
    public var payloadType: UInt8
    /// Encoding name as written (`opus`, `red`, `telephone-event`, …).
    public var name: String
    public var clockRate: Int
    public var channels: Int?
    /// The `a=fmtp` parameters, verbatim (`minptime=10;useinbandfec=1`).
    public var parameters: String?
    public var feedback: [String]

    public init(payloadType: UInt8, name: String, clockRate: Int, channels: Int? = nil,
                parameters: String? = nil, feedback: [String] = []) {
        self.payloadType = payloadType
        self.name = name
        self.clockRate = clockRate
        self.channels = channels
        self.parameters = parameters
        self.feedback = feedback
    }

    /// `fmtp` parameters as key → value (keys lowercased).
    public var parameterMap: [String: String] {
        var map: [String: String] = [:]
        for item in (parameters ?? "").split(separator: ";") {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = pair[0].trimmingSpaces.lowercased()
            guard !key.isEmpty else { continue }
            map[key] = pair.count > 1 ? String(pair[1].trimmingSpaces) : ""
        }
        return map
    }

    public var isOpus: Bool { name.lowercased() == "opus" && clockRate == 48000 }
}

/// `a=extmap:<id>[/<direction>] <uri> [<attributes>]` (RFC 8285).
public struct RTPHeaderExtension: Sendable, Equatable {
    public var id: Int
    public var direction: MediaDirection?
    public var uri: String
    public var attributes: String?

    public init(id: Int, direction: MediaDirection? = nil, uri: String, attributes: String? = nil) {
        self.id = id
        self.direction = direction
        self.uri = uri
        self.attributes = attributes
    }
}

/// `a=ssrc:<ssrc> <attribute>[:<value>]` (RFC 5576).
public struct SSRCAttribute: Sendable, Equatable {
    public var ssrc: UInt32
    public var name: String
    public var value: String?

    public init(ssrc: UInt32, name: String, value: String? = nil) {
        self.ssrc = ssrc
        self.name = name
        self.value = value
    }
}

/// `a=ssrc-group:<semantics> <ssrc> …`.
public struct SSRCGroup: Sendable, Equatable {
    public var semantics: String
    public var ssrcs: [UInt32]
}

/// `a=group:<semantics> <mid> …` (RFC 5888), e.g. BUNDLE.
public struct MediaGroup: Sendable, Equatable {
    public var semantics: String
    public var mids: [String]

    public init(semantics: String, mids: [String]) {
        self.semantics = semantics
        self.mids = mids
    }
}

/// `a=candidate:` (RFC 8839 §5.1).
public struct ICECandidate: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case host, srflx, prflx, relay }

    public var foundation: String
    public var component: Int
    /// `udp` or `tcp` (lowercased).
    public var transport: String
    public var priority: UInt32
    /// An IP address, or an mDNS `.local` name as browsers send when they hide addresses.
    public var address: String
    public var port: UInt16
    public var kind: Kind
    public var relatedAddress: String?
    public var relatedPort: UInt16?
    /// `tcptype`, `generation`, `network-id`, … as name–value pairs, in order.
    public var extensions: [(name: String, value: String)]

    public init(foundation: String, component: Int = 1, transport: String = "udp", priority: UInt32,
                address: String, port: UInt16, kind: Kind = .host, relatedAddress: String? = nil,
                relatedPort: UInt16? = nil, extensions: [(name: String, value: String)] = []) {
        self.foundation = foundation
        self.component = component
        self.transport = transport.lowercased()
        self.priority = priority
        self.address = address
        self.port = port
        self.kind = kind
        self.relatedAddress = relatedAddress
        self.relatedPort = relatedPort
        self.extensions = extensions
    }

    /// Parses the attribute value (after `candidate:`); nil when it is not a valid candidate.
    public init?(attributeValue: Substring) {
        let fields = attributeValue.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 8, fields.count % 2 == 0, fields[6] == "typ",
              fields[0].count <= 32, let component = Int(fields[1]), (1...256).contains(component),
              let priority = UInt32(fields[3]), let port = UInt16(fields[5]),
              let kind = Kind(rawValue: String(fields[7])) else { return nil }
        self.init(foundation: String(fields[0]), component: component, transport: String(fields[2]),
                  priority: priority, address: String(fields[4]), port: port, kind: kind)
        var index = 8
        while index + 1 < fields.count {
            let name = String(fields[index]), value = String(fields[index + 1])
            switch name {
            case "raddr": relatedAddress = value
            case "rport":
                guard let related = UInt16(value) else { return nil }
                relatedPort = related
            default: extensions.append((name, value))
            }
            index += 2
        }
    }

    /// ICE's recommended priority (RFC 8445 §5.1.2.1).
    /// The host candidates an answer advertises for `addresses` (most preferred first): a UDP one
    /// each, in descending priority, then with `tcpPort` a passive TCP one each (RFC 6544) on that
    /// port, in the same order and below every UDP one. Foundations differ per candidate.
    public static func advertised(_ addresses: [TransportAddress], tcpPort: UInt16?) -> [ICECandidate] {
        func host(_ address: TransportAddress) -> String {
            switch address {
            case .v4(let ip, _): ip.description
            case .v6(let ip, _): ip.description
            }
        }
        let udp = addresses.enumerated().map { index, address in
            ICECandidate(foundation: "\(index + 1)", component: 1, transport: "udp",
                         priority: priority(typePreference: 126, localPreference: UInt32(clamping: 65535 - index), component: 1),
                         address: host(address), port: address.port, kind: .host)
        }
        guard let tcpPort else { return udp }
        let tcp = addresses.enumerated().map { index, address in
            // RFC 6544 §4.2: local preference = 2^13 × direction preference (passive: 4) + other
            // preference; the type preference below UDP's 126, as browsers rank TCP host candidates (90).
            ICECandidate(foundation: "\(addresses.count + index + 1)", component: 1, transport: "tcp",
                         priority: priority(typePreference: 90, localPreference: UInt32(clamping: (4 << 13) + 8191 - min(index, 8191)),
                                            component: 1),
                         address: host(address), port: tcpPort, kind: .host, extensions: [("tcptype", "passive")])
        }
        return udp + tcp
    }

    public static func priority(typePreference: UInt32, localPreference: UInt32, component: UInt32) -> UInt32 {
        (min(typePreference, 126) << 24) | (min(localPreference, 65535) << 8) | (256 - min(max(component, 1), 256))
    }

    public var description: String {
        var text = "\(foundation) \(component) \(transport) \(priority) \(address) \(port) typ \(kind.rawValue)"
        if let relatedAddress { text += " raddr \(relatedAddress)" }
        if let relatedPort { text += " rport \(relatedPort)" }
        for (name, value) in extensions { text += " \(name) \(value)" }
        return text
    }

    public static func == (lhs: ICECandidate, rhs: ICECandidate) -> Bool {
        lhs.description == rhs.description
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
