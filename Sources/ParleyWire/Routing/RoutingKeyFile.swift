/// The routing keys of a cluster as a file (`--routing-key-file`, reloaded on SIGHUP): one key
/// per line, `ID HEX` (the id 0–15, 64 hex characters), the one new tokens are sealed with marked
/// `current` (required when the file holds more than one key: appending a new key must not make it
/// seal before every relay has it). Blank lines and `#` comments are skipped.
///
///     # rotating from key 1 to key 2: both open, 2 seals
///     1 8f1c…e2   
///     2 44ab…09 current
///
/// docs/operations.md has the procedure: add the new key everywhere, make it current everywhere,
/// retire the old one once no live token needs it.
public enum RoutingKeyFile {
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    public static func parse(_ text: String) throws(ParseError) -> RoutingKeyring {
        var keys: [RoutingKey] = []
        var current: RoutingKey?
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.prefix { $0 != "#" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard !fields.isEmpty else { continue }
            guard fields.count == 2 || (fields.count == 3 && fields[2] == "current") else {
                throw ParseError(line: index + 1, reason: "expected `ID HEX` or `ID HEX current`")
            }
            guard let id = UInt8(fields[0]), id < 16 else { throw ParseError(line: index + 1, reason: "the key id must be 0–15") }
            guard let key = RoutingKey(id: id, hexSecret: String(fields[1])) else {
                throw ParseError(line: index + 1, reason: "the secret must be 64 hex characters (`openssl rand -hex 32`)")
            }
            guard !keys.contains(where: { $0.id == id }) else { throw ParseError(line: index + 1, reason: "key \(id) appears twice") }
            if fields.count == 3 {
                guard current == nil else { throw ParseError(line: index + 1, reason: "only one key can be current") }
                current = key
            }
            keys.append(key)
        }
        guard !keys.isEmpty else { throw ParseError(line: 0, reason: "the file has no key") }
        guard let sealing = current ?? (keys.count == 1 ? keys[0] : nil) else {
            throw ParseError(line: 0, reason: "\(keys.count) keys and none marked `current`: mark the one that seals new tokens")
        }
        return RoutingKeyring(current: sealing, others: keys.filter { $0.id != sealing.id })
    }
}

extension RoutingKeyring {
    /// The ids of the keys in the ring, ascending.
    public var keyIDs: [UInt8] { (0..<16).filter { key(id: $0) != nil } }
}
