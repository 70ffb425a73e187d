import Crypto
import Foundation

/// The client's side of a WebSocket opening handshake (RFC 6455 §4.1): the upgrade request it
/// sends, and the decision on what the server answered — sans-IO, so every byte the server sends
/// before its frames is judged here and the channel handler only moves bytes.
///
/// Parley dials WebSockets to agents (`--agent ws://…`) and to the transceiver that owns a call
/// (a forwarded sideband). Only the 101 is ever accepted; the head is bounded; the server's
/// `Sec-WebSocket-Accept` must prove it read this request's key; extensions and subprotocols were
/// not offered, so a server that names one is refused (§4.1, items 5 and 6 of the client's checks).
public struct WebSocketClientHandshake: Sendable, Equatable {
    /// A response head longer than this is refused: an upgrade answer is a few hundred bytes.
    public static let maximumHeadBytes = 16 * 1024
    /// RFC 6455 §1.3.
    static let acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// `Sec-WebSocket-Key`: 16 random bytes, base64.
    public let key: String

    public init(nonce: [UInt8]) {
        precondition(nonce.count == 16, "RFC 6455 §4.1: the key is a 16-byte nonce")
        key = Data(nonce).base64EncodedString()
    }

    public static func random() -> WebSocketClientHandshake {
        var generator = SystemRandomNumberGenerator()
        return WebSocketClientHandshake(nonce: (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// What the server must answer in `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)).
    public var expectedAccept: String {
        Data(Insecure.SHA1.hash(data: Array((key + Self.acceptGUID).utf8))).base64EncodedString()
    }

    /// The upgrade request, or nil when a field would break the request's framing (a CR, LF or
    /// NUL in a value, a path that is not an origin-form target — no fragment —, a host with
    /// spaces or bytes outside ASCII, a header name that is not a token).
    public func request(host: String, path: String, headers: [(name: String, value: String)] = []) -> String? {
        guard path.hasPrefix("/"), path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "#") }),
              !host.isEmpty, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        var text = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte), Self.isFieldValue(value) else { return nil }
            text += "\(name): \(value)\r\n"
        }
        return text + "\r\n"
    }

    /// What the bytes received so far say.
    public enum Outcome: Sendable, Equatable {
        /// The head has not ended yet: read more.
        case incomplete
        /// Upgraded: the head is `headLength` bytes; every byte after it is the server's frames.
        case upgraded(headLength: Int)
        /// The server answered with another status (its body is not read).
        case refused(status: Int)
        /// Not a WebSocket server's answer to this request.
        case invalid(String)
        /// An interim 1xx response of `headLength` bytes, to be skipped (RFC 9110 §15.2): the
        /// answer is judged from the bytes after it.
        case interim(headLength: Int)
    }

    /// Judges the response received so far. `searchFrom` lets a caller that has already looked at a
    /// prefix say where the end of the head may start, so work stays linear in the bytes received:
    /// the bytes are scanned in place and copied once, when a head has ended.
    public func evaluate<Bytes: RandomAccessCollection<UInt8>>(_ received: Bytes, searchFrom: Int = 0) -> Outcome {
        let limit = min(received.count, Self.maximumHeadBytes)
        // Back three bytes: a CRLF CRLF may straddle what was searched and what is new.
        let from = searchFrom <= 3 ? 0 : max(0, min(searchFrom, limit) - 3)
        guard let end = Self.endOfHead(received, from: from, limit: limit) else {
            return received.count >= Self.maximumHeadBytes ? .invalid("response head longer than \(Self.maximumHeadBytes) bytes") : .incomplete
        }
        let head = Array(received.prefix(end - 4))
        switch judge(Self.lines(head[...])) {
        case .interim: return .interim(headLength: end)
        case .final(.upgraded): return .upgraded(headLength: end)
        case .final(let outcome): return outcome
        }
    }

    private enum Judgement {
        case interim
        case final(Outcome)
    }

    private func judge(_ lines: [Substring]) -> Judgement {
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1.1 "),
              let status = Int(statusLine.dropFirst(9).prefix(3)), (100...599).contains(status),
              statusLine.utf8.count == 12 || statusLine.dropFirst(12).first == " " else {
            return .final(.invalid("not an HTTP/1.1 status line"))
        }
        if (100...199).contains(status), status != 101 { return .interim }
        guard status == 101 else { return .final(.refused(status: status)) }
        var fields: [String: [String]] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex,
                  line[..<colon].utf8.allSatisfy(Self.isTokenByte) else {
                // Obsolete line folding (a line starting with whitespace) is refused too: an
                // upgrade answer has no reason to fold, and RFC 9112 §5.2 lets a client reject it.
                return .final(.invalid("malformed header line"))
            }
            let value = line[line.index(after: colon)...].trimmingOWS()
            fields[Self.asciiLowercased(line[..<colon]), default: []].append(value)
        }
        /// A list header's items, lowercased (ASCII), empty items left out (RFC 9110 §5.6.1).
        func tokens(_ name: String) -> [String] {
            (fields[name] ?? []).flatMap { $0.split(separator: ",") }.map { Self.asciiLowercased(Substring($0.trimmingOWS())) }
                .filter { !$0.isEmpty }
        }
        guard tokens("upgrade") == ["websocket"] else { return .final(.invalid("Upgrade is not websocket")) }
        guard tokens("connection").contains("upgrade") else { return .final(.invalid("Connection does not say upgrade")) }
        guard fields["sec-websocket-accept"] == [expectedAccept] else {
            return .final(.invalid("Sec-WebSocket-Accept does not answer the key"))
        }
        guard tokens("sec-websocket-extensions").isEmpty else { return .final(.invalid("an extension was not offered")) }
        guard tokens("sec-websocket-protocol").isEmpty else { return .final(.invalid("a subprotocol was not offered")) }
        return .final(.upgraded(headLength: 0))
    }

    /// The offset just past the first CRLF CRLF that starts at or after `from` and ends within `limit`.
    static func endOfHead<Bytes: RandomAccessCollection<UInt8>>(_ bytes: Bytes, from: Int, limit: Int) -> Int? {
        guard limit >= 4, from <= limit - 4 else { return nil }
        var index = bytes.index(bytes.startIndex, offsetBy: from)
        var offset = from
        var matched = 0  // how much of CR LF CR LF the bytes before `index` end with
        while offset < limit {
            let byte = bytes[index]
            matched = byte == (matched % 2 == 0 ? 13 : 10) ? matched + 1 : (byte == 13 ? 1 : 0)
            offset += 1
            index = bytes.index(after: index)
            if matched == 4 { return offset }
        }
        return nil
    }

    /// ASCII-only lowercasing: header names and tokens compare case-insensitively in ASCII
    /// (`String.lowercased` would also fold, say, a Kelvin sign into "k").
    static func asciiLowercased(_ text: Substring) -> String {
        String(decoding: text.utf8.map { (65...90).contains($0) ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// Lines split on CRLF; a bare CR or LF, or any control byte but HTAB, makes a line no header
    /// parser may accept, so it is kept for the colon check to refuse.
    static func lines(_ head: ArraySlice<UInt8>) -> [Substring] {
        let text = String(decoding: head, as: UTF8.self)
        return text.split(separator: "\r\n", omittingEmptySubsequences: false).map { line in
            line.utf8.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) ? "\u{0}" : line
        }
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }

    static func isFieldValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }
    }
}

extension Substring {
    /// Without the optional whitespace (SP, HTAB) at either end.
    func trimmingOWS() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
