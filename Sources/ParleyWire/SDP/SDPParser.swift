/// Why text is not an acceptable session description. `line` is 1-based.
public struct SDPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        case empty
        /// Over `SDPLimits.maximumBytes`, or more lines or sections than the limits allow.
        case tooLarge
        /// Bytes that are not UTF-8 text, or control characters inside a line.
        case invalidText
        case missingVersion
        case unsupportedVersion
        case missingOrigin
        /// A line that is not `<letter>=<value>`.
        case malformedLine
        case malformedOrigin
        case malformedMediaLine
        /// A WebRTC attribute whose value does not parse (the attribute's name).
        case malformedAttribute(String)
    }

    public var line: Int
    public var reason: Reason

    public var description: String {
        switch reason {
        case .empty: "the description is empty"
        case .tooLarge: "the description exceeds the size limits"
        case .invalidText: "line \(line): not valid SDP text"
        case .missingVersion: "the description does not start with v=0"
        case .unsupportedVersion: "line \(line): only SDP version 0 exists"
        case .missingOrigin: "the description has no o= line"
        case .malformedLine: "line \(line): not a <type>=<value> line"
        case .malformedOrigin: "line \(line): malformed o= line"
        case .malformedMediaLine: "line \(line): malformed m= line"
        case .malformedAttribute(let name): "line \(line): malformed a=\(name)"
        }
    }
}

/// Bounds that keep parsing an untrusted offer cheap. Real offers are a few kilobytes.
public enum SDPLimits {
    public static let maximumBytes = 64 * 1024
    public static let maximumLines = 4096
    public static let maximumMediaSections = 64
}

extension SessionDescription {
    /// Parses SDP text (CRLF or LF line ends).
    public init(parsing text: String) throws(SDPParseError) {
        guard text.utf8.count <= SDPLimits.maximumBytes else { throw SDPParseError(line: 0, reason: .tooLarge) }
        var lines: [Substring] = []
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let trimmed = line.hasSuffix("\r") ? line.dropLast() : line
            if !trimmed.isEmpty { lines.append(trimmed) }
        }
        guard !lines.isEmpty else { throw SDPParseError(line: 0, reason: .empty) }
        guard lines.count <= SDPLimits.maximumLines else { throw SDPParseError(line: 0, reason: .tooLarge) }
        self = try SDPParser(lines: lines).parse()
    }

    /// Parses SDP bytes, which must be UTF-8.
    public init(parsing bytes: some Collection<UInt8>) throws(SDPParseError) {
        guard bytes.count <= SDPLimits.maximumBytes else { throw SDPParseError(line: 0, reason: .tooLarge) }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw SDPParseError(line: 0, reason: .invalidText) }
        try self.init(parsing: text)
    }
}

private struct SDPParser {
    let lines: [Substring]

    func parse() throws(SDPParseError) -> SessionDescription {
        var session = SessionDescription(origin: .init(sessionID: "0"))
        var sawOrigin = false
        var current: MediaDescription?
        var pendingFormats: [String] = []

        guard lines[0] == "v=0" else {
            throw SDPParseError(line: 1, reason: lines[0].hasPrefix("v=") ? .unsupportedVersion : .missingVersion)
        }
        for (index, line) in lines.enumerated().dropFirst() {
            let number = index + 1
            guard line.utf8.count >= 2, line.utf8.dropFirst().first == UInt8(ascii: "="),
                  let type = line.first, type.isASCII, type.isLetter else {
                throw SDPParseError(line: number, reason: .malformedLine)
            }
            guard !line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" }) else {
                throw SDPParseError(line: number, reason: .invalidText)
            }
            let value = line.dropFirst(2)
            switch type {
            case "o":
                guard current == nil else { continue }
                session.origin = try origin(value, line: number)
                sawOrigin = true
            case "s":
                if current == nil { session.sessionName = String(value) }
            case "t":
                if current == nil { session.timing = String(value) }
            case "c":
                if current != nil { current!.connection = String(value) } else { session.connection = String(value) }
            case "b":
                current?.bandwidths.append(String(value))
            case "m":
                if var finished = current {
                    finishCodecs(&finished, formats: pendingFormats)
                    session.media.append(finished)
                }
                guard session.media.count < SDPLimits.maximumMediaSections else {
                    throw SDPParseError(line: number, reason: .tooLarge)
                }
                current = try mediaLine(value, line: number)
                pendingFormats = current!.formats
                current!.codecs = []
            case "a":
                let (name, attributeValue) = splitAttribute(value)
                if current != nil {
                    try mediaAttribute(name, attributeValue, into: &current!, line: number)
                } else {
                    try sessionAttribute(name, attributeValue, into: &session, line: number)
                }
            default:
                continue  // i=, u=, e=, p=, z=, k=, r= and unknown types carry nothing WebRTC uses.
            }
        }
        if var finished = current {
            finishCodecs(&finished, formats: pendingFormats)
            session.media.append(finished)
        }
        guard sawOrigin else { throw SDPParseError(line: 0, reason: .missingOrigin) }
        return session
    }

    func splitAttribute(_ value: Substring) -> (String, Substring?) {
        guard let colon = value.firstIndex(of: ":") else { return (String(value), nil) }
        return (String(value[..<colon]), value[value.index(after: colon)...])
    }

    func origin(_ value: Substring, line: Int) throws(SDPParseError) -> SessionDescription.Origin {
        let fields = value.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 6, fields[3] == "IN", let version = UInt64(fields[2]) else {
            throw SDPParseError(line: line, reason: .malformedOrigin)
        }
        return .init(username: String(fields[0]), sessionID: String(fields[1]), sessionVersion: version,
                     addressType: String(fields[4]), address: String(fields[5]))
    }

    func mediaLine(_ value: Substring, line: Int) throws(SDPParseError) -> MediaDescription {
        let fields = value.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 4 else { throw SDPParseError(line: line, reason: .malformedMediaLine) }
        let portField = fields[1].split(separator: "/", omittingEmptySubsequences: false)
        guard let port = UInt16(portField[0]), portField.count <= 2 else {
            throw SDPParseError(line: line, reason: .malformedMediaLine)
        }
        var portCount: Int?
        if portField.count == 2 {
            guard let count = Int(portField[1]) else { throw SDPParseError(line: line, reason: .malformedMediaLine) }
            portCount = count
        }
        return MediaDescription(kind: String(fields[0]), port: port, portCount: portCount, proto: String(fields[2]),
                                formats: fields[3...].map(String.init))
    }

    func sessionAttribute(
        _ name: String, _ value: Substring?, into session: inout SessionDescription, line: Int
    ) throws(SDPParseError) {
        switch name {
        case "ice-lite": session.iceLite = true
        case "ice-ufrag": session.iceUfrag = try iceCredential(name, value, line: line)
        case "ice-pwd": session.icePassword = try iceCredential(name, value, line: line)
        case "ice-options": session.iceOptions = words(value)
        case "fingerprint": session.fingerprints.append(try fingerprint(value, line: line))
        case "setup": session.setup = try setupRole(value, line: line)
        case "sendrecv", "sendonly", "recvonly", "inactive": session.direction = MediaDirection(rawValue: name)
        case "group":
            let fields = words(value)
            guard let semantics = fields.first else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            session.groups.append(MediaGroup(semantics: semantics, mids: Array(fields.dropFirst())))
        case "extmap-allow-mixed": session.extmapAllowMixed = true
        default: session.otherAttributes.append(SDPAttribute(name, value.map(String.init)))
        }
    }

    func mediaAttribute(
        _ name: String, _ value: Substring?, into media: inout MediaDescription, line: Int
    ) throws(SDPParseError) {
        switch name {
        case "mid":
            guard let value, !value.isEmpty, value.count <= 32 else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            media.mid = String(value)
        case "ice-ufrag": media.iceUfrag = try iceCredential(name, value, line: line)
        case "ice-pwd": media.icePassword = try iceCredential(name, value, line: line)
        case "ice-options": media.iceOptions = words(value)
        case "fingerprint": media.fingerprints.append(try fingerprint(value, line: line))
        case "setup": media.setup = try setupRole(value, line: line)
        case "sendrecv", "sendonly", "recvonly", "inactive": media.direction = MediaDirection(rawValue: name)
        case "rtcp-mux": media.rtcpMux = true
        case "rtcp-rsize": media.rtcpReducedSize = true
        case "rtpmap":
            guard let value else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            let fields = value.split(separator: " ", maxSplits: 1)
            guard fields.count == 2, let payloadType = UInt8(fields[0]), payloadType < 128 else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            let encoding = fields[1].split(separator: "/", omittingEmptySubsequences: false)
            guard encoding.count >= 2, encoding.count <= 3, !encoding[0].isEmpty, let clockRate = Int(encoding[1]),
                  clockRate > 0 else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            var channels: Int?
            if encoding.count == 3 {
                guard let count = Int(encoding[2]), count > 0 else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
                channels = count
            }
            var codec = media.codec(payloadType: payloadType) ?? RTPCodec(payloadType: payloadType, name: "", clockRate: 0)
            codec.name = String(encoding[0])
            codec.clockRate = clockRate
            codec.channels = channels
            upsert(codec, into: &media)
        case "fmtp":
            let (payloadType, rest) = try payloadTypePrefixed(name, value, line: line)
            var codec = media.codec(payloadType: payloadType) ?? RTPCodec(payloadType: payloadType, name: "", clockRate: 0)
            codec.parameters = String(rest)
            upsert(codec, into: &media)
        case "rtcp-fb":
            guard let value, let space = value.firstIndex(of: " ") else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            let target = value[..<space]
            let feedback = String(value[value.index(after: space)...].trimmingSpaces)
            if target == "*" {
                media.otherAttributes.append(SDPAttribute(name, String(value)))
            } else {
                guard let payloadType = UInt8(target), payloadType < 128 else {
                    throw SDPParseError(line: line, reason: .malformedAttribute(name))
                }
                var codec = media.codec(payloadType: payloadType) ?? RTPCodec(payloadType: payloadType, name: "", clockRate: 0)
                codec.feedback.append(feedback)
                upsert(codec, into: &media)
            }
        case "extmap":
            guard let value else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            let fields = value.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            guard fields.count >= 2 else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            let idField = fields[0].split(separator: "/", omittingEmptySubsequences: false)
            guard let id = Int(idField[0]), (1...255).contains(id), idField.count <= 2 else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            var direction: MediaDirection?
            if idField.count == 2 {
                guard let parsed = MediaDirection(rawValue: String(idField[1])) else {
                    throw SDPParseError(line: line, reason: .malformedAttribute(name))
                }
                direction = parsed
            }
            media.headerExtensions.append(RTPHeaderExtension(
                id: id, direction: direction, uri: String(fields[1]), attributes: fields.count > 2 ? String(fields[2]) : nil))
        case "ssrc":
            guard let value else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            let fields = value.split(separator: " ", maxSplits: 1)
            guard fields.count == 2, let ssrc = UInt32(fields[0]) else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            let (attribute, attributeValue) = splitAttribute(fields[1])
            media.ssrcs.append(SSRCAttribute(ssrc: ssrc, name: attribute, value: attributeValue.map(String.init)))
        case "ssrc-group":
            let fields = words(value)
            guard let semantics = fields.first else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
            var ssrcs: [UInt32] = []
            for field in fields.dropFirst() {
                guard let ssrc = UInt32(field) else { throw SDPParseError(line: line, reason: .malformedAttribute(name)) }
                ssrcs.append(ssrc)
            }
            media.ssrcGroups.append(SSRCGroup(semantics: semantics, ssrcs: ssrcs))
        case "msid":
            media.msid = value.map(String.init)
        case "candidate":
            guard let value, let candidate = ICECandidate(attributeValue: value) else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            media.candidates.append(candidate)
        case "end-of-candidates": media.endOfCandidates = true
        case "sctp-port":
            guard let value, let port = Int(value), (0...65535).contains(port) else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            media.sctpPort = port
        case "max-message-size":
            guard let value, let size = Int(value), size >= 0 else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            media.maxMessageSize = size
        case "sctp-init":
            // Base64 of at most 2048 bytes (what the SCTP layer accepts), padded or not.
            guard let value, !value.isEmpty, value.utf8.count <= 2732, value.utf8.allSatisfy(Self.isBase64Byte) else {
                throw SDPParseError(line: line, reason: .malformedAttribute(name))
            }
            media.sctpInit = String(value)
        default:
            media.otherAttributes.append(SDPAttribute(name, value.map(String.init)))
        }
    }

    /// RFC 4648 §4's alphabet and its pad.
    static func isBase64Byte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="): true
        default: false
        }
    }

    func payloadTypePrefixed(_ name: String, _ value: Substring?, line: Int) throws(SDPParseError) -> (UInt8, Substring) {
        guard let value, let space = value.firstIndex(of: " "), let payloadType = UInt8(value[..<space]), payloadType < 128 else {
            throw SDPParseError(line: line, reason: .malformedAttribute(name))
        }
        return (payloadType, value[value.index(after: space)...])
    }

    func upsert(_ codec: RTPCodec, into media: inout MediaDescription) {
        if let index = media.codecs.firstIndex(where: { $0.payloadType == codec.payloadType }) {
            media.codecs[index] = codec
        } else {
            media.codecs.append(codec)
        }
    }

    /// Orders codecs as the m-line lists them, and fills in the static types 0 (PCMU) and 8 (PCMA)
    /// that may appear without `a=rtpmap`. Payload types with no known encoding are dropped.
    func finishCodecs(_ media: inout MediaDescription, formats: [String]) {
        guard media.isRTP else {
            media.codecs = []  // rtpmap/fmtp lines mean nothing outside RTP.
            return
        }
        var ordered: [RTPCodec] = []
        for format in formats {
            guard let payloadType = UInt8(format), !ordered.contains(where: { $0.payloadType == payloadType }) else {
                continue
            }
            if let codec = media.codec(payloadType: payloadType), !codec.name.isEmpty {
                ordered.append(codec)
            } else if payloadType == 0 || payloadType == 8 {
                var codec = media.codec(payloadType: payloadType) ?? RTPCodec(payloadType: payloadType, name: "", clockRate: 0)
                codec.name = payloadType == 0 ? "PCMU" : "PCMA"
                codec.clockRate = 8000
                ordered.append(codec)
            }
        }
        media.codecs = ordered
    }

    func iceCredential(_ name: String, _ value: Substring?, line: Int) throws(SDPParseError) -> String {
        // RFC 8839 §5.4: 4–256 ufrag characters, 22–256 password characters of `ice-char`.
        // Lengths are checked by ICE, not here: a short password is the answerer's decision to refuse.
        guard let value, !value.isEmpty, value.utf8.count <= 256,
              value.utf8.allSatisfy({ isICEChar($0) }) else {
            throw SDPParseError(line: line, reason: .malformedAttribute(name))
        }
        return String(value)
    }

    func isICEChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"): true
        default: false
        }
    }

    func fingerprint(_ value: Substring?, line: Int) throws(SDPParseError) -> CertificateFingerprint {
        guard let value, let fingerprint = CertificateFingerprint(attributeValue: value) else {
            throw SDPParseError(line: line, reason: .malformedAttribute("fingerprint"))
        }
        return fingerprint
    }

    func setupRole(_ value: Substring?, line: Int) throws(SDPParseError) -> DTLSSetupRole {
        guard let value, let role = DTLSSetupRole(rawValue: String(value)) else {
            throw SDPParseError(line: line, reason: .malformedAttribute("setup"))
        }
        return role
    }

    func words(_ value: Substring?) -> [String] {
        (value ?? "").split(separator: " ", omittingEmptySubsequences: true).map(String.init)
    }
}
