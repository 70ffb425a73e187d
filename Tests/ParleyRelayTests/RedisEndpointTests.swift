import ParleyWire
import Testing
@testable import ParleyRelay
@testable import ParleyRouting

@Suite struct RedisEndpointTests {
    static func parse(_ text: String) throws(RedisEndpointError) -> RedisEndpoint { try RedisEndpoint(parsing: text) }

    /// Text → what the relay connects to and sends on each new connection.
    @Test func urlVectors() throws {
        struct Vector {
            var text: String
            var host: RedisEndpoint.Host
            var port: UInt16 = 6379
            var tls = false
            var user: String?
            var password: String?
            var database: Int32 = 0
            var setup: [[String]]
            var redacted: String
        }
        let v4 = RedisEndpoint.Host.ipv4(IPv4Address(127, 0, 0, 1))
        let vectors: [Vector] = [
            // The bare form Parley always took.
            Vector(text: "127.0.0.1:6380", host: v4, port: 6380, setup: [["PING"]], redacted: "redis://127.0.0.1:6380"),
            Vector(text: "redis.internal:7000", host: .name("redis.internal"), port: 7000, setup: [["PING"]],
                   redacted: "redis://redis.internal:7000"),
            Vector(text: "[::1]:6379", host: .ipv6(IPv6Address("::1")!), setup: [["PING"]], redacted: "redis://[::1]:6379"),
            // URLs.
            Vector(text: "redis://localhost", host: .name("localhost"), setup: [["PING"]], redacted: "redis://localhost:6379"),
            Vector(text: "redis://localhost/", host: .name("localhost"), setup: [["PING"]], redacted: "redis://localhost:6379"),
            Vector(text: "REDIS://10.1.2.3:6390/0", host: .ipv4(IPv4Address(10, 1, 2, 3)), port: 6390, setup: [["PING"]],
                   redacted: "redis://10.1.2.3:6390"),
            Vector(text: "redis://:s3cret@127.0.0.1:6379/2", host: v4, password: "s3cret", database: 2,
                   setup: [["AUTH", "s3cret"], ["SELECT", "2"], ["PING"]], redacted: "redis://:***@127.0.0.1:6379/2"),
            Vector(text: "rediss://parley:pa55@redis.example.com:6380/15", host: .name("redis.example.com"), port: 6380, tls: true,
                   user: "parley", password: "pa55", database: 15,
                   setup: [["AUTH", "parley", "pa55"], ["SELECT", "15"], ["PING"]],
                   redacted: "rediss://parley:***@redis.example.com:6380/15"),
            Vector(text: "rediss://[2001:db8::7]:6380", host: .ipv6(IPv6Address("2001:db8::7")!), port: 6380, tls: true,
                   setup: [["PING"]], redacted: "rediss://[2001:db8::7]:6380"),
            Vector(text: "redis://u:p@[fd00::1]/1", host: .ipv6(IPv6Address("fd00::1")!), user: "u", password: "p", database: 1,
                   setup: [["AUTH", "u", "p"], ["SELECT", "1"], ["PING"]], redacted: "redis://u:***@[fd00::1]:6379/1"),
            // Percent-decoding, and a password with characters a URL reserves, unencoded but for '%'.
            Vector(text: "redis://us%40er:p%40ss%3Aw%2Fd%25@h:1", host: .name("h"), port: 1, user: "us@er", password: "p@ss:w/d%",
                   setup: [["AUTH", "us@er", "p@ss:w/d%"], ["PING"]], redacted: "redis://us%40er:***@h:1"),
            Vector(text: "redis://:a@b/c:d?e#f@h", host: .name("h"), password: "a@b/c:d?e#f", setup: [["AUTH", "a@b/c:d?e#f"], ["PING"]],
                   redacted: "redis://:***@h:6379"),
            Vector(text: "redis://:p%C3%A4ss@h", host: .name("h"), password: "päss", setup: [["AUTH", "päss"], ["PING"]],
                   redacted: "redis://:***@h:6379"),
            // Encoded, any byte may be in a password (RESP sends it length-prefixed).
            Vector(text: "redis://:a%0Ab%00@h", host: .name("h"), password: "a\nb\0", setup: [["AUTH", "a\nb\0"], ["PING"]],
                   redacted: "redis://:***@h:6379"),
            // No credentials at all.
            Vector(text: "redis://:@h", host: .name("h"), setup: [["PING"]], redacted: "redis://h:6379"),
            Vector(text: "redis://h/2147483647", host: .name("h"), database: Int32.max, setup: [["SELECT", "2147483647"], ["PING"]],
                   redacted: "redis://h:6379/2147483647"),
        ]
        for vector in vectors {
            let endpoint = try Self.parse(vector.text)
            #expect(endpoint.host == vector.host, "\(vector.text)")
            #expect(endpoint.port == vector.port, "\(vector.text)")
            #expect(endpoint.tls == vector.tls, "\(vector.text)")
            #expect(endpoint.username == vector.user, "\(vector.text)")
            #expect(endpoint.password == vector.password, "\(vector.text)")
            #expect(endpoint.database == vector.database, "\(vector.text)")
            #expect(endpoint.setupCommands == vector.setup, "\(vector.text)")
            #expect(endpoint.redacted == vector.redacted, "\(vector.text)")
            #expect("\(endpoint)" == vector.redacted, "description is the redacted form")
            // The redacted form parses back to the same endpoint but for the password.
            if endpoint.password == nil { #expect(try Self.parse(endpoint.redacted) == endpoint) }
        }
    }

    @Test func connectionTargets() throws {
        let name = try Self.parse("rediss://redis.example.com")
        #expect(name.connectHost == "redis.example.com" && name.tlsServerName == "redis.example.com")
        // SNI carries names only: an address is checked against the certificate's IP SANs instead.
        let v4 = try Self.parse("rediss://10.0.0.9:6380")
        #expect(v4.connectHost == "10.0.0.9" && v4.tlsServerName == nil)
        let v6 = try Self.parse("rediss://[fd00::9]")
        #expect(v6.connectHost == "fd00::9" && v6.tlsServerName == nil)
    }

    /// Each mistake gets its own error, and no error's text holds the password.
    @Test func refusedValues() {
        let cases: [(String, RedisEndpointError)] = [
            ("", .empty),
            ("localhost", .missingPort),
            ("user:secret@host:6379", .unknownForm),
            ("host:6379/1", .unknownForm),
            ("http://host", .unsupportedScheme("http")),
            ("redis://", .missingHost),
            ("redis://:secret@", .missingHost),
            ("redis://:secret@:6379", .missingHost),
            ("redis://host:", .badPort("")),
            ("redis://host:0", .badPort("0")),
            ("redis://host:65536", .badPort("65536")),
            ("redis://host:+80", .badPort("+80")),
            ("redis://host:99999999999999999999", .badPort("99999999999999999999")),
            ("redis://host:http", .badPort("http")),
            ("redis://::1", .unbracketedIPv6),
            ("::1:6379", .unbracketedIPv6),
            ("redis://[::1", .unclosedBracket),
            ("redis://[::1]x", .badHost("[::1]x")),
            ("redis://[not-v6]:6379", .badIPv6("not-v6")),
            ("redis://[1.2.3.4]", .badIPv6("1.2.3.4")),
            ("redis://exa mple", .badHost("exa mple")),
            ("redis://1.2.3.256", .badHost("1.2.3.256")),
            ("redis://host/x", .badDatabase("x")),
            ("redis://host/-1", .badDatabase("-1")),
            ("redis://host/2147483648", .badDatabase("2147483648")),
            ("redis://host/1/2", .badDatabase("1/2")),
            ("redis://host?db=1", .unsupportedSuffix("?")),
            ("redis://host/1#x", .unsupportedSuffix("#")),
            ("redis://:se%2cret%@host", .badPercentEncoding("password")),
            ("redis://:se%zzret@host", .badPercentEncoding("password")),
            ("redis://us%4@host", .badPercentEncoding("user")),
            ("redis://:sec\tret@host", .controlCharacter("password")),
            ("redis://:sec%FFret@host", .notUTF8("password")),
            ("redis://parley@host", .userWithoutPassword("parley")),
            ("redis://parley:@host", .userWithoutPassword("parley")),
        ]
        for (text, expected) in cases {
            #expect(throws: expected, "\(text)") { try Self.parse(text) }
            do {
                _ = try Self.parse(text)
            } catch {
                #expect(!error.description.contains("secret") && !error.description.contains("se%"), "\(error)")
                #expect(!error.description.isEmpty)
            }
        }
    }

    /// A value that did not parse is shown with its password hidden.
    @Test func redactionOfRawText() {
        #expect(RedisEndpoint.redact("redis://:secret@host:99999") == "redis://:***@host:99999")
        #expect(RedisEndpoint.redact("rediss://user:se:cr@et@host") == "rediss://user:***@host")
        #expect(RedisEndpoint.redact("user:secret@host:1") == "user:***@host:1")
        #expect(RedisEndpoint.redact("redis://hunter2secret@host") == "redis://***@host", "a password in the user's place")
        #expect(!RedisEndpointError.userWithoutPassword("hunter2secret").description.contains("hunter2secret"))
        #expect(RedisEndpoint.redact("redis://host:6379") == "redis://host:6379")
        #expect(RedisEndpoint.redact("host:6379") == "host:6379")
    }

    @Test func scrubbingRemovesThePasswordFromServerText() throws {
        let endpoint = try Self.parse("redis://u:hunter2@h")
        #expect(endpoint.scrubbed("ERR hunter2 is wrong, hunter2") == "ERR *** is wrong, ***")
        #expect(try Self.parse("redis://h").scrubbed("ERR x") == "ERR x")
    }

    /// What a new connection's setup replies mean.
    @Test func setupOutcomes() throws {
        let acl = try Self.parse("redis://parley:pw@h/2").setupCommands
        #expect(RedisSetupOutcome(commands: acl, replies: [.simple("OK"), .simple("OK"), .simple("PONG")]) == .ready)
        let wrongPassword = "WRONGPASS invalid username-password pair or user is disabled."
        #expect(RedisSetupOutcome(commands: acl, replies: [.error(wrongPassword), .error("NOAUTH Authentication required."),
                                                           .error("NOAUTH Authentication required.")])
                == .authenticationFailed(wrongPassword))
        // A password given to a Redis that has none is refused by AUTH, whatever the words.
        let legacy = try Self.parse("redis://:pw@h").setupCommands
        let noPassword = "ERR AUTH <password> called without any password configured for the default user."
        #expect(RedisSetupOutcome(commands: legacy, replies: [.error(noPassword), .simple("PONG")]) == .authenticationFailed(noPassword))
        // No credentials, but the server wants them: PING says NOAUTH.
        let none = try Self.parse("redis://h").setupCommands
        #expect(RedisSetupOutcome(commands: none, replies: [.error("NOAUTH Authentication required.")])
                == .authenticationFailed("NOAUTH Authentication required."))
        #expect(RedisSetupOutcome(commands: acl, replies: [.simple("OK"), .error("ERR DB index is out of range"), .simple("PONG")])
                == .refused("ERR DB index is out of range"))
        #expect(RedisSetupOutcome(commands: acl, replies: [.simple("OK"), .simple("OK"), .bulk("PONG")])
                == .refused("unexpected reply to PING: bulk(Optional(\"PONG\"))"))
        // The connection went away before every reply came.
        #expect(RedisSetupOutcome(commands: acl, replies: [.simple("OK"), nil, nil]) == .noReply)
        #expect(RedisSetupOutcome(commands: acl, replies: [.simple("OK")]) == .noReply)
    }
}
