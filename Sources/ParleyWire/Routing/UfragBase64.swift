/// Base64 without padding over the standard alphabet, which is exactly the ICE ufrag/pwd character
/// set (`A–Z a–z 0–9 + /`, RFC 8839 §5.4). Works on caller buffers; never allocates.
enum UfragBase64 {
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 0–63 for an alphabet character, 0xFF for anything else.
    static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, character) in alphabet.enumerated() { table[Int(character)] = UInt8(truncatingIfNeeded: value) }
        return table
    }()

    /// Characters needed for `byteCount` bytes (a multiple of 3 keeps the text free of padding).
    static func encodedLength(_ byteCount: Int) -> Int { (byteCount * 4 + 2) / 3 }

    /// Encodes `input` (length a multiple of 3) into `output`.
    static func encode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) {
        precondition(input.count % 3 == 0 && output.count >= input.count / 3 * 4)
        alphabet.withUnsafeBufferPointer { alphabet in
            var out = 0
            var index = 0
            while index < input.count {
                let group = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
                output[out] = alphabet[Int(group >> 18)]
                output[out + 1] = alphabet[Int((group >> 12) & 0x3F)]
                output[out + 2] = alphabet[Int((group >> 6) & 0x3F)]
                output[out + 3] = alphabet[Int(group & 0x3F)]
                out += 4
                index += 3
            }
        }
    }

    /// Decodes `input` (length a multiple of 4) into `output`; false on any character outside the alphabet.
    static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        precondition(input.count % 4 == 0 && output.count >= input.count / 4 * 3)
        return decodeTable.withUnsafeBufferPointer { table in
            var out = 0
            var index = 0
            var invalid: UInt8 = 0
            while index < input.count {
                let a = table[Int(input[index])], b = table[Int(input[index + 1])]
                let c = table[Int(input[index + 2])], d = table[Int(input[index + 3])]
                invalid |= (a | b | c | d) & 0xC0
                let group = UInt32(a & 0x3F) << 18 | UInt32(b & 0x3F) << 12 | UInt32(c & 0x3F) << 6 | UInt32(d & 0x3F)
                output[out] = UInt8(truncatingIfNeeded: group >> 16)
                output[out + 1] = UInt8(truncatingIfNeeded: group >> 8)
                output[out + 2] = UInt8(truncatingIfNeeded: group)
                out += 3
                index += 4
            }
            return invalid == 0
        }
    }
}
