import Foundation

/// Test fixtures, read from the source tree next to this file.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func text(_ name: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
    }

    /// A `.hex` fixture: hex digits, whitespace ignored.
    static func hex(_ name: String) throws -> [UInt8] {
        try bytes(fromHex: text(name))
    }

    static let offerNames = ["chrome", "chrome-warp", "firefox", "aiortc", "pion"]

    static func offer(_ name: String) throws -> String { try text("\(name).sdp") }
}

func bytes(fromHex text: String) -> [UInt8] {
    let digits = text.filter(\.isHexDigit)
    precondition(digits.count % 2 == 0, "odd number of hex digits")
    var result: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        result.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return result
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
