import ParleyTestSupport
import Testing

@testable import ParleySignaling

@Suite struct MultipartFormTests {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func namedFieldsAsCurlSendsThem() throws {
        let body = "--xyz\r\nContent-Disposition: form-data; name=\"sdp\"\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nline\r\n"
            + "--xyz\r\ncontent-disposition: FORM-DATA; name=session\r\n\r\n{\"agent\":\"parrot\"}\r\n--xyz--\r\n"
        let fields = try MultipartForm.parse(bytes(body), boundary: "xyz")
        #expect(fields == ["sdp": bytes("v=0\r\nline"), "session": bytes("{\"agent\":\"parrot\"}")])
        // A preamble before the first delimiter, and an empty field.
        let preamble = "ignored\r\n--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n--xyz--"
        #expect(try MultipartForm.parse(bytes(preamble), boundary: "xyz") == ["a": []])
    }

    @Test func malformedFormsAreRefusedWithAReason() {
        let part = "Content-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n"
        for body in [
            "no boundary at all",
            "--xyz\r\n" + part,                                            // never closed
            "--xyz\r\n" + part + "--xyz\r\n" + part + "--xyz--",           // a name twice
            "--xyz\r\nContent-Type: text/plain\r\n\r\nx\r\n--xyz--",       // no name
            "--xyz\r\n\r\nx\r\n--xyz--",                                   // no headers
            "--xyz\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--xyz--",
            "--xyzjunk\r\n" + part + "--xyz--",
            "--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\nX-" + String(repeating: "h", count: 3000) + ": 1\r\n\r\nx\r\n--xyz--",
            "--xyz\r\n" + String(repeating: "--xyz\r\n" + part, count: 9) + "--xyz--",
        ] {
            #expect(throws: SignalingError.self, "\(body.prefix(60))") { try MultipartForm.parse(bytes(body), boundary: "xyz") }
        }
        #expect(throws: SignalingError.self) { try MultipartForm.parse(bytes("--\r\n"), boundary: "") }
    }

    /// MultipartKit 4.7.1 trapped on this (a header name byte ≥ 0x80): it must be a 400.
    @Test func aHighByteInAHeaderNameIsA400NotATrap() {
        var body = bytes("--b\r\nContent-Disposition: form-data; name=\"sdp\"\r\n")
        body += [0xC3, 0xA9] + bytes(": x\r\n\r\nv=0\r\n--b--")
        #expect(throws: SignalingError.self) { try MultipartForm.parse(body, boundary: "b") }
    }

    @Test func randomBytesAndCutsNeverTrap() throws {
        var generator = SplitMix64(seed: 23)
        let good = bytes("--b\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\nv=0\r\n--b\r\n"
                         + "Content-Disposition: form-data; name=\"session\"\r\n\r\n{}\r\n--b--\r\n")
        #expect(try MultipartForm.parse(good, boundary: "b").count == 2)
        for cut in 0...good.count { _ = try? MultipartForm.parse(Array(good[0..<cut]), boundary: "b") }
        for _ in 0..<30_000 {
            var body = good
            for _ in 0..<Int.random(in: 1...6, using: &generator) where !body.isEmpty {
                let index = Int.random(in: 0..<body.count, using: &generator)
                switch Int.random(in: 0..<4, using: &generator) {
                case 0: body[index] = UInt8.random(in: 0...255, using: &generator)
                case 1: body.remove(at: index)
                case 2: body.insert(contentsOf: bytes("\r\n--b"), at: index)
                default: body.insert(contentsOf: [13, 10, 13, 10], at: index)
                }
            }
            _ = try? MultipartForm.parse(body, boundary: "b")
        }
    }
}
