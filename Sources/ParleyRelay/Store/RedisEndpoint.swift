import ParleyWire

/// Where the route store's Redis is and how to reach it, from `--redis` or `PARLEY_REDIS_URL`:
///
///     redis://[user[:password]@]host[:port][/db]     plain TCP
///     rediss://[user[:password]@]host[:port][/db]    TLS
///     host:port                                      plain TCP, no credentials (the first form Parley took)
///
/// Sans-IO: parsed and checked at startup, so a mistake is reported before anything connects, and
/// what each new connection sends first (AUTH, SELECT, PING) is decided here. The password never
/// appears in `description`, in `redacted`, or in an error's text.
public struct RedisEndpoint: Equatable, Sendable, CustomStringConvertible {
    public enum Host: Equatable, Sendable {
        case name(String)
        case ipv4(IPv4Address)
        case ipv6(IPv6Address)
    }

    public var host: Host
    public var port: UInt16
    public var tls: Bool
    /// A Redis 6 ACL user; nil with a password means the legacy `AUTH password` (the default user).
    public var username: String?
    public var password: String?
    public var database: Int32

    public static let defaultPort: UInt16 = 6379
    /// What Redis itself accepts as a database index (its `databases` setting is an int).
    public static let maximumDatabase = Int32.max

    public init(host: Host, port: UInt16 = defaultPort, tls: Bool = false, username: String? = nil, password: String? = nil,
                database: Int32 = 0) {
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.database = database
    }

    // MARK: Parsing

    public init(parsing text: String) throws(RedisEndpointError) {
        guard !text.isEmpty else { throw .empty }
        guard let separator = text.range(of: "://") else {
            // The bare form: host:port or [ipv6]:port, no credentials.
            guard !text.contains("@"), !text.contains("/") else { throw .unknownForm }
            let (host, port) = try Self.hostAndPort(Substring(text), portRequired: true)
            self.init(host: host, port: port)
            return
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        guard scheme == "redis" || scheme == "rediss" else { throw .unsupportedScheme(String(scheme)) }
        var rest = text[separator.upperBound...]

        // A password may hold any character, even an unencoded '@' or '/': the userinfo ends at the
        // last '@', and only '%' must be encoded (as %25).
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let user: Substring, secret: Substring?
            if let colon = userinfo.firstIndex(of: ":") {
                user = userinfo[..<colon]
                secret = userinfo[userinfo.index(after: colon)...]
            } else {
                user = userinfo
                secret = nil
            }
            let decodedUser = try Self.percentDecoded(user, field: .user)
            let decodedPassword = try secret.map { secret throws(RedisEndpointError) in try Self.percentDecoded(secret, field: .password) }
            username = decodedUser.isEmpty ? nil : decodedUser
            password = decodedPassword.flatMap { $0.isEmpty ? nil : $0 }
            if let username, password == nil { throw .userWithoutPassword(username) }
        }

        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            throw .unsupportedSuffix(String(rest[query]))
        }
        let authority: Substring, path: Substring?
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = nil
        }
        let (host, port) = try Self.hostAndPort(authority, portRequired: false)
        var database: Int32 = 0
        if let path, !path.isEmpty {
            guard path.allSatisfy(\.isASCIIDigit), let number = Int32(path) else { throw .badDatabase(String(path)) }
            database = number
        }
        self.init(host: host, port: port, tls: scheme == "rediss", username: username, password: password, database: database)
    }

    private static func hostAndPort(_ text: Substring, portRequired: Bool) throws(RedisEndpointError) -> (Host, UInt16) {
        guard !text.isEmpty else { throw .missingHost }
        let hostText: Substring, portText: Substring?
        if text.first == "[" {
            guard let close = text.firstIndex(of: "]") else { throw .unclosedBracket }
            hostText = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if after.isEmpty {
                portText = nil
            } else {
                guard after.first == ":" else { throw .badHost(String(text)) }
                portText = after.dropFirst()
            }
            guard let address = IPv6Address(hostText) else { throw .badIPv6(String(hostText)) }
            return (.ipv6(address), try port(portText, required: portRequired))
        }
        let colons = text.count(where: { $0 == ":" })
        if colons > 1 { throw .unbracketedIPv6 }
        if let colon = text.firstIndex(of: ":") {
            hostText = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            hostText = text
            portText = nil
        }
        guard !hostText.isEmpty else { throw .missingHost }
        let port = try port(portText, required: portRequired)
        if let address = IPv4Address(hostText) { return (.ipv4(address), port) }
        // A DNS name: letters, digits, '-', '_' and dots, as resolvers take them. (A string of
        // digits and dots that is not an IPv4 address is refused rather than looked up.)
        guard hostText.count <= 253,
              hostText.allSatisfy({ $0.isASCIILetterOrDigit || $0 == "-" || $0 == "." || $0 == "_" }),
              !hostText.allSatisfy({ $0.isASCIIDigit || $0 == "." }) else { throw .badHost(String(hostText)) }
        return (.name(String(hostText)), port)
    }

    private static func port(_ text: Substring?, required: Bool) throws(RedisEndpointError) -> UInt16 {
        guard let text else {
            if required { throw .missingPort }
            return defaultPort
        }
        // Digits only: UInt16("+5") would read 5.
        guard !text.isEmpty, text.count <= 5, text.allSatisfy(\.isASCIIDigit), let port = UInt16(text), port > 0 else {
            throw .badPort(String(text))
        }
        return port
    }

    enum Field: String, Sendable { case user, password }

    /// RFC 3986 percent-decoding; the result must be UTF-8 (RESP carries it as text).
    private static func percentDecoded(_ text: Substring, field: Field) throws(RedisEndpointError) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte != UInt8(ascii: "%") else {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw .badPercentEncoding(field.rawValue)
                }
                bytes.append(high << 4 | low)
                continue
            }
            guard byte >= 0x20, byte != 0x7F else { throw .controlCharacter(field.rawValue) }
            bytes.append(byte)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else { throw .notUTF8(field.rawValue) }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: Use

    /// What the socket connects to: a name to resolve, or an address as text.
    public var connectHost: String {
        switch host {
        case .name(let name): name
        case .ipv4(let address): "\(address)"
        case .ipv6(let address): "\(address)"
        }
    }

    /// The name TLS sends as SNI and checks the certificate against: a host name, or nil for an IP
    /// address (SNI carries names only; the certificate's IP SANs are checked against the peer's address).
    public var tlsServerName: String? {
        if case .name(let name) = host { return name }
        return nil
    }

    /// Sent, in order, on every new connection before anything else: AUTH when there are
    /// credentials, SELECT when the database is not 0, and PING, whose answer shows the connection
    /// is usable (a Redis that wants a password answers it NOAUTH).
    public var setupCommands: [[String]] {
        var commands: [[String]] = []
        if let password {
            commands.append(username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if database != 0 { commands.append(["SELECT", "\(database)"]) }
        commands.append(["PING"])
        return commands
    }

    /// The endpoint as a URL with the password shown as `***`: for logs, errors and metrics.
    public var redacted: String {
        var text = tls ? "rediss://" : "redis://"
        if username != nil || password != nil {
            text += username.map(Self.percentEncoded) ?? ""
            if password != nil { text += ":***" }
            text += "@"
        }
        switch host {
        case .ipv6: text += "[\(connectHost)]"
        default: text += connectHost
        }
        text += ":\(port)"
        if database != 0 { text += "/\(database)" }
        return text
    }

    public var description: String { redacted }

    /// Replaces the password wherever it occurs in `text` (a server's reply, an error): a reply is
    /// not expected to echo it, and this keeps it out of logs even if one did.
    public func scrubbed(_ text: String) -> String {
        guard let password, !password.isEmpty else { return text }
        return text.replacing(password, with: "***")
    }

    /// `text` (which may not parse) with anything between the scheme's `://` or the start, and the
    /// last `@`, past the first `:`, replaced by `***`: for messages about a value that was refused.
    public static func redact(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@") else { return text }
        let start = text.range(of: "://").map(\.upperBound) ?? text.startIndex
        guard start <= at else { return text }
        // Without a colon the lone user part may well be a password written in the wrong place
        // (redis://PASSWORD@host): hidden too.
        guard let colon = text[start..<at].firstIndex(of: ":") else { return String(text[..<start]) + "***" + String(text[at...]) }
        return String(text[...colon]) + "***" + String(text[at...])
    }

    private static func percentEncoded(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            if ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
                || "-._~".unicodeScalars.contains(scalar) {
                result.unicodeScalars.append(scalar)
            } else {
                result += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return result
    }
}

/// Why a `--redis` value was refused, said so the fix is plain. Never carries the password.
public enum RedisEndpointError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case unknownForm
    case unsupportedScheme(String)
    case missingHost
    case missingPort
    case badHost(String)
    case unbracketedIPv6
    case unclosedBracket
    case badIPv6(String)
    case badPort(String)
    case badDatabase(String)
    case badPercentEncoding(String)
    case controlCharacter(String)
    case notUTF8(String)
    case userWithoutPassword(String)
    case unsupportedSuffix(String)

    public var description: String {
        switch self {
        case .empty: "empty; expected redis://[user[:password]@]host[:port][/db], rediss://… (TLS) or host:port"
        case .unknownForm: "expected redis://[user[:password]@]host[:port][/db], rediss://… (TLS) or host:port"
        case .unsupportedScheme(let scheme): "unsupported scheme \"\(scheme)://\": expected redis:// or rediss:// (TLS)"
        case .missingHost: "no host"
        case .missingPort: "no port: the bare form is host:port (or use redis://host, port 6379 by default)"
        case .badHost(let host): "host \"\(host)\" is neither a host name, an IPv4 address nor a bracketed IPv6 address"
        case .unbracketedIPv6: "an IPv6 address goes in brackets: redis://[2001:db8::1]:6379"
        case .unclosedBracket: "\"[\" without \"]\" around the IPv6 address"
        case .badIPv6(let text): "\"\(text)\" is not an IPv6 address"
        case .badPort(let text): "port \"\(text)\" is not a number 1…65535"
        case .badDatabase(let text): "database \"\(text)\" is not a number 0…\(RedisEndpoint.maximumDatabase)"
        case .badPercentEncoding(let field): "bad percent-encoding in the \(field): '%' must be followed by two hex digits (write a '%' as %25)"
        case .controlCharacter(let field): "a control character in the \(field) (percent-encode it)"
        case .notUTF8(let field): "the \(field) is not UTF-8 once percent-decoded"
        case .userWithoutPassword: "a user without a password (the part before @ is not shown: it may be a password in the user's place): "
            + "redis://USER:PASSWORD@host, or redis://:PASSWORD@host for the default user"
        case .unsupportedSuffix(let first): "\"\(first)…\" is not supported: no query or fragment; the database goes in the path (redis://host:6379/2)"
        }
    }
}

/// How a new connection's setup went, decided from the replies to `RedisEndpoint.setupCommands`
/// (nil: no reply, the connection went away or timed out first).
public enum RedisSetupOutcome: Equatable, Sendable {
    case ready
    /// AUTH refused (WRONGPASS, or a password given to a Redis that has none), or NOAUTH/NOPERM:
    /// the credentials are wrong or missing. The text is the server's reply.
    case authenticationFailed(String)
    /// Another error, e.g. SELECT of a database the server does not have, or a reply that is not
    /// the one the command calls for.
    case refused(String)
    case noReply

    public init(commands: [[String]], replies: [RESPValue?]) {
        for (index, command) in commands.enumerated() {
            guard index < replies.count, let reply = replies[index] else {
                self = .noReply
                return
            }
            let name = command.first ?? ""
            switch reply {
            case .error(let message):
                let code = message.prefix(while: { $0 != " " })
                if name == "AUTH" || ["NOAUTH", "WRONGPASS", "NOPERM"].contains(code) {
                    self = .authenticationFailed(message)
                } else {
                    self = .refused(message)
                }
                return
            case .simple(let text) where name == "PING" ? text == "PONG" : text == "OK":
                continue
            default:
                self = .refused("unexpected reply to \(name): \(reply)")
                return
            }
        }
        self = .ready
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
    fileprivate var isASCIILetterOrDigit: Bool { isASCII && (isLetter || isNumber) }
}
