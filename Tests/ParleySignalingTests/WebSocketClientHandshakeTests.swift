import Testing
import ParleySignaling

/// The client's WebSocket opening handshake: the request's bytes and the judgement of every
/// answer, byte by byte (RFC 6455 §4.1, §4.2.2; vector from §1.3).
@Suite struct WebSocketClientHandshakeTests {
    /// RFC 6455 §1.3: the nonce "the sample nonce" is the key dGhlIHNhbXBsZSBub25jZQ==.
    static let sample = WebSocketClientHandshake(nonce: Array("the sample nonce".utf8))

    static func response(_ lines: [String], frames: [UInt8] = []) -> [UInt8] {
        Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8) + frames
    }

    static let goodLines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]

    @Test func theKeyAndAcceptAreRFC6455sVector() {
        #expect(Self.sample.key == "dGhlIHNhbXBsZSBub25jZQ==")
        #expect(Self.sample.expectedAccept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(WebSocketClientHandshake.random().key.utf8.count == 24)
        #expect(WebSocketClientHandshake.random() != WebSocketClientHandshake.random())
    }

    @Test func theRequestIsExactlyAnUpgradeWithTheGivenFields() {
        #expect(Self.sample.request(host: "10.0.0.7:8080", path: "/v1/realtime?call_id=rtc_x", headers: [("X-Parley-Forwarded", "pf1.abc")])
                == "GET /v1/realtime?call_id=rtc_x HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Parley-Forwarded: pf1.abc\r\n\r\n")
        // Nothing that would end a line or the request early, or is no origin-form target.
        #expect(Self.sample.request(host: "h", path: "/", headers: [("X", "a\r\nInjected: 1")]) == nil)
        #expect(Self.sample.request(host: "h", path: "/", headers: [("X", "a\nb")]) == nil)
        #expect(Self.sample.request(host: "h", path: "/", headers: [("Bad Name", "v")]) == nil)
        #expect(Self.sample.request(host: "h", path: "/", headers: [("", "v")]) == nil)
        #expect(Self.sample.request(host: "h\r\n", path: "/") == nil)
        #expect(Self.sample.request(host: "h", path: "/a b") == nil)
        #expect(Self.sample.request(host: "h", path: "a") == nil)
        #expect(Self.sample.request(host: "h", path: "/\u{0}") == nil)
        #expect(Self.sample.request(host: "h", path: "/a#fragment") == nil)
        #expect(Self.sample.request(host: "h h", path: "/") == nil)
        #expect(Self.sample.request(host: "", path: "/") == nil)
        #expect(Self.sample.request(host: "[::1]:9000", path: "/") != nil)
    }

    @Test func a101ThatAnswersTheKeyUpgradesAndWhatFollowsIsFrames() {
        let frames: [UInt8] = [0x81, 2, 0x68, 0x69, 0x88, 2, 0x11, 0x94]
        let bytes = Self.response(Self.goodLines, frames: frames)
        #expect(Self.sample.evaluate(bytes) == .upgraded(headLength: bytes.count - frames.count))
        // Header names in any case, values with optional whitespace, tokens in lists.
        let relaxed = Self.response(["HTTP/1.1 101 Web Socket Protocol Handshake", "upgrade:WebSocket", "CONNECTION:  keep-alive, Upgrade\t",
                                     "sec-websocket-accept:\ts3pPLMBiTxaQ9kYGzzhZRbK+xOo= ", "Date: Tue, 01 Dec 2026 22:00:00 GMT"])
        #expect(Self.sample.evaluate(relaxed) == .upgraded(headLength: relaxed.count))
        // Empty list items are no items (RFC 9110 §5.6.1); an empty extensions header names none.
        let lists = Self.response(Self.goodLines.map { $0.hasPrefix("Upgrade") ? "Upgrade: websocket, ," : $0 }
                                  + ["Sec-WebSocket-Extensions: ", "Sec-WebSocket-Protocol:"])
        #expect(Self.sample.evaluate(lists) == .upgraded(headLength: lists.count))
        // An interim 1xx before the 101 is skipped (RFC 9110 §15.2): the caller drops it and judges the rest.
        let interim = Self.response(["HTTP/1.1 100 Continue"])
        #expect(Self.sample.evaluate(interim + Self.response(Self.goodLines)) == .interim(headLength: interim.count))
        let hints = Self.response(["HTTP/1.1 103 Early Hints", "Link: </a>"])
        #expect(Self.sample.evaluate(hints) == .interim(headLength: hints.count))
        let bare = Self.response(["HTTP/1.1 101"] + Self.goodLines.dropFirst())  // a reason phrase is optional
        #expect(Self.sample.evaluate(bare) == .upgraded(headLength: bare.count))
    }

    @Test func aHeadArrivingByteByByteIsJudgedOnceItEnds() {
        let bytes = Self.response(Self.goodLines, frames: [0x81, 0])
        var searched = 0
        for end in 1..<(bytes.count - 2) {
            #expect(Self.sample.evaluate(bytes[..<end], searchFrom: searched) == .incomplete, "at \(end)")
            searched = end
        }
        #expect(Self.sample.evaluate(bytes[...], searchFrom: searched) == .upgraded(headLength: bytes.count - 2))
        // Whatever the caller says it searched, nothing traps.
        for from in [Int.min, -1, 0, 3, bytes.count, Int.max] {
            #expect(Self.sample.evaluate(bytes, searchFrom: from) != .invalid("not an HTTP/1.1 status line"), "\(from)")
        }
    }

    @Test func otherStatusesAreRefusals() {
        #expect(Self.sample.evaluate(Self.response(["HTTP/1.1 403 Forbidden", "Content-Length: 0"])) == .refused(status: 403))
        #expect(Self.sample.evaluate(Self.response(["HTTP/1.1 200 OK"])) == .refused(status: 200))
        #expect(Self.sample.evaluate(Self.response(["HTTP/1.1 426 Upgrade Required"], frames: Array("body".utf8))) == .refused(status: 426))
    }

    @Test func anythingElseIsNoWebSocketServer() {
        func invalid(_ lines: [String]) -> Bool {
            if case .invalid = Self.sample.evaluate(Self.response(lines)) { return true }
            return false
        }
        let good = Self.goodLines
        #expect(invalid(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                         "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ=="]))  // the key echoed, not answered
        #expect(invalid(Array(good.prefix(3))))  // no accept
        #expect(invalid(good + ["Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]))  // twice
        #expect(invalid([good[0], "Upgrade: h2c", good[2], good[3]]))
        #expect(invalid([good[0], good[1], "Connection: keep-alive", good[3]]))
        #expect(invalid([good[0], good[2], good[3]]))  // no Upgrade
        #expect(invalid(good + ["Sec-WebSocket-Extensions: permessage-deflate"]))
        #expect(invalid(good + ["Sec-WebSocket-Protocol: chat"]))
        #expect(invalid(["HTTP/1.0 101 Switching Protocols"] + good.dropFirst()))
        #expect(invalid(["HTTP/1.1 1010 Switching Protocols"] + good.dropFirst()))
        #expect(invalid(["HTTP/1.1 abc"] + good.dropFirst()))
        #expect(invalid(["HTTP/1.1 099 Continue"] + good.dropFirst()))
        #expect(invalid(["SSH-2.0-OpenSSH_9.2"]))
        #expect(invalid(good + ["no colon here"]))
        #expect(invalid(good + [": empty name"]))
        #expect(invalid(good + ["Bad Name: v"]))
        #expect(invalid(good + [" folded: continuation"]))
        #expect(invalid(good + ["X: bare\nLF"]))
        #expect(invalid(good + ["X: a\u{0}b"]))
        #expect(invalid([good[0], "Upgrade: websoc\u{212A}et", good[2], good[3]]))  // a Kelvin sign is no ASCII "k"
        #expect(invalid([good[0], "Upgrade: websocket, h2c", good[2], good[3]]))
    }

    @Test func theHeadIsBounded() {
        let filler = String(repeating: "a", count: WebSocketClientHandshake.maximumHeadBytes)
        let long = Array("HTTP/1.1 101 Switching Protocols\r\nX: \(filler)".utf8)
        guard case .invalid = Self.sample.evaluate(long) else {
            Issue.record("a head without end was not refused")
            return
        }
        #expect(Self.sample.evaluate(long.prefix(WebSocketClientHandshake.maximumHeadBytes - 1)) == .incomplete)
        // A head of exactly the bound is accepted, and frames past the bound do not count against it.
        let padding = WebSocketClientHandshake.maximumHeadBytes - Self.response(Self.goodLines + ["X: "]).count
        let exact = Self.response(Self.goodLines + ["X: " + String(repeating: "b", count: padding)])
        #expect(exact.count == WebSocketClientHandshake.maximumHeadBytes)
        #expect(Self.sample.evaluate(exact + [UInt8](repeating: 0x82, count: 40_000)) == .upgraded(headLength: exact.count))
        // Ending just past the bound is refused too: the head must fit.
        let endsLate = long.prefix(WebSocketClientHandshake.maximumHeadBytes - 2) + Array("\r\n\r\n".utf8)
        guard case .invalid = Self.sample.evaluate(endsLate) else {
            Issue.record("a head past the bound was accepted")
            return
        }
    }
}
