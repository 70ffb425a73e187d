/// RESP2 (Redis's protocol), as far as the relay's route store speaks it: commands out as arrays
/// of bulk strings, replies in. Sans-IO: the reader takes whatever bytes arrived and says what one
/// complete reply they hold, or that more are needed. Replies are bounded (bulk size, array length,
/// nesting, elements in all), so a server that misbehaves costs bounded work and memory.
public enum RESPValue: Equatable, Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk(String?)
    case array([RESPValue]?)

    /// A command as a RESP array of bulk strings.
    public static func encode(command: [String]) -> [UInt8] {
        var bytes = Array("*\(command.count)\r\n".utf8)
        for part in command {
            bytes += Array("$\(part.utf8.count)\r\n".utf8)
            bytes += Array(part.utf8)
            bytes += [0x0D, 0x0A]
        }
        return bytes
    }
}

public enum RESPError: Error, Equatable, Sendable {
    case unknownType(UInt8)
    case badInteger
    case badLength
    case tooLarge
    case tooDeep
}

public enum RESPReader {
    public static let maximumBulk = 1 << 20
    public static let maximumArray = 1024
    public static let maximumDepth = 8
    /// Values in one reply, all levels together.
    public static let maximumElements = 4096
    /// A line (a simple string, an error, a length) longer than this is refused.
    public static let maximumLine = 4096

    /// The first complete reply in `bytes` and how many bytes it took; nil when it is not complete yet.
    public static func read(_ bytes: UnsafeRawBufferPointer) throws(RESPError) -> (value: RESPValue, length: Int)? {
        var cursor = Cursor(bytes: bytes)
        guard let value = try cursor.value(depth: 0) else { return nil }
        return (value, cursor.offset)
    }

    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var offset = 0
        var elements = 0

        mutating func value(depth: Int) throws(RESPError) -> RESPValue? {
            guard depth < RESPReader.maximumDepth else { throw .tooDeep }
            elements += 1
            guard elements <= RESPReader.maximumElements else { throw .tooLarge }
            guard offset < bytes.count else { return nil }
            let type = bytes[offset]
            offset += 1
            guard let line = try line() else { return nil }
            switch type {
            case UInt8(ascii: "+"): return .simple(line)
            case UInt8(ascii: "-"): return .error(line)
            case UInt8(ascii: ":"):
                guard let value = Int(line) else { throw .badInteger }
                return .integer(value)
            case UInt8(ascii: "$"):
                guard let length = Int(line), length >= -1 else { throw .badLength }
                guard length <= RESPReader.maximumBulk else { throw .tooLarge }
                if length == -1 { return .bulk(nil) }
                guard bytes.count - offset >= length + 2 else { return nil }
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]), as: UTF8.self)
                guard bytes[offset + length] == 0x0D, bytes[offset + length + 1] == 0x0A else { throw .badLength }
                offset += length + 2
                return .bulk(text)
            case UInt8(ascii: "*"):
                guard let count = Int(line), count >= -1 else { throw .badLength }
                guard count <= RESPReader.maximumArray else { throw .tooLarge }
                if count == -1 { return .array(nil) }
                var items: [RESPValue] = []
                for _ in 0..<count {
                    guard let item = try value(depth: depth + 1) else { return nil }
                    items.append(item)
                }
                return .array(items)
            default:
                throw .unknownType(type)
            }
        }

        /// The text up to CRLF, and past it; nil when no CRLF has arrived yet.
        mutating func line() throws(RESPError) -> String? {
            var index = offset
            while index + 1 < bytes.count {
                if bytes[index] == 0x0D, bytes[index + 1] == 0x0A {
                    let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<index]), as: UTF8.self)
                    offset = index + 2
                    return text
                }
                index += 1
                guard index - offset <= RESPReader.maximumLine else { throw .tooLarge }
            }
            return nil
        }
    }
}
