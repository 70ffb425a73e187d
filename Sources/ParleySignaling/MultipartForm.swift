/// `multipart/form-data` (RFC 7578) as `POST /v1/realtime/calls` takes it: named text fields, here
/// `sdp` and `session`. Written here rather than taken from MultipartKit: its 4.7.1 (the newest in
/// reach) traps on a header byte of 0x80 or more (a 128-entry table indexed by the byte), and one
/// hostile POST must not end every call in the process. Bounded: at most `maximumParts` parts,
/// `maximumHeaderBytes` of headers each; work is linear in the body.
public enum MultipartForm {
    public static let maximumParts = 8
    public static let maximumHeaderBytes = 2048

    /// The fields by name. Refused (400): no boundary found, a part without a name, a name twice,
    /// too many parts, headers too long or not text, a body that ends before its closing delimiter.
    public static func parse(_ body: [UInt8], boundary: String) throws(SignalingError) -> [String: [UInt8]] {
        let boundary = Array(boundary.utf8)
        guard (1...70).contains(boundary.count) else { throw invalid("the boundary must be 1–70 characters") }
        let dashBoundary = Array("--".utf8) + boundary
        let delimiter = [13, 10] + dashBoundary
        // The first delimiter may open the body without a CRLF before it (no preamble).
        var position: Int
        if body.starts(with: dashBoundary) {
            position = dashBoundary.count
        } else if let found = find(delimiter, in: body, from: 0) {
            position = found + delimiter.count
        } else {
            throw invalid("the body has no boundary line")
        }
        var fields: [String: [UInt8]] = [:]
        var parts = 0
        while true {
            // After a delimiter: `--` closes the form; otherwise optional spaces and a CRLF.
            if body[position...].starts(with: [45, 45]) { return fields }
            while position < body.count, body[position] == 32 || body[position] == 9 { position += 1 }
            guard body[position...].starts(with: [13, 10]) else { throw invalid("a boundary line must end in CRLF") }
            position += 2
            parts += 1
            guard parts <= maximumParts else { throw invalid("more than \(maximumParts) parts") }
            guard !body[position...].starts(with: [13, 10]) else { throw invalid("a part has no headers (no name)") }
            guard let headersEnd = find([13, 10, 13, 10], in: body, from: position, limit: maximumHeaderBytes) else {
                throw invalid("a part's headers do not end within \(maximumHeaderBytes) bytes")
            }
            let name = try fieldName(headers: Array(body[position..<headersEnd]))
            let contentStart = headersEnd + 4
            guard contentStart <= body.count, let contentEnd = find(delimiter, in: body, from: contentStart) else {
                throw invalid("the body ends inside a part")
            }
            guard fields[name] == nil else { throw invalid("the field \(name) appears twice") }
            fields[name] = Array(body[contentStart..<contentEnd])
            position = contentEnd + delimiter.count
        }
    }

    /// The `name` of a part's `Content-Disposition: form-data; name="…"`.
    static func fieldName(headers: [UInt8]) throws(SignalingError) -> String {
        guard headers.allSatisfy({ $0 == 9 || (32...126).contains($0) || $0 == 13 || $0 == 10 }) else {
            throw invalid("a part's headers must be ASCII text")
        }
        let text = String(decoding: headers, as: UTF8.self)
        for line in text.split(separator: "\r\n") {
            guard let colon = line.firstIndex(of: ":"),
                  line[..<colon].trimmingSpaces().lowercased() == "content-disposition" else { continue }
            let value = line[line.index(after: colon)...]
            let parameters = value.split(separator: ";").map { $0.trimmingSpaces() }
            guard parameters.first?.lowercased() == "form-data" else { throw invalid("a part must be form-data") }
            for parameter in parameters.dropFirst() {
                let pair = parameter.split(separator: "=", maxSplits: 1)
                guard pair.count == 2, pair[0].trimmingSpaces().lowercased() == "name" else { continue }
                var name = pair[1].trimmingSpaces()
                if name.count >= 2, name.first == "\"", name.last == "\"" { name = name.dropFirst().dropLast() }
                guard !name.isEmpty else { break }
                return String(name)
            }
        }
        throw invalid("a part has no Content-Disposition: form-data; name=…")
    }

    private static func invalid(_ reason: String) -> SignalingError {
        .badRequest("the multipart body is malformed: \(reason)", code: "invalid_multipart")
    }

    /// The first index of `needle` in `haystack` at or after `start` (and, with `limit`, starting
    /// within `limit` bytes of it).
    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int, limit: Int = .max) -> Int? {
        guard !needle.isEmpty, start >= 0, haystack.count >= needle.count else { return nil }
        let last = min(haystack.count - needle.count, start > Int.max - limit ? Int.max : start + limit)
        guard start <= last else { return nil }
        var index = start
        while index <= last {
            if haystack[index] == needle[0], haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}
