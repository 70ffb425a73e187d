import NIOCore
import ParleySignaling
import ParleyTestSupport
import Testing
@testable import ParleyTransceiver

/// The offer forms `POST /v1/realtime/calls` takes and the client-secret request, on good and on
/// mangled bodies (they come from the network: refused with a reason, never a trap).
@Suite struct SignalingRequestTests {
    private let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"

    private func form(_ parts: [(String, String)], boundary: String = "b0undary") -> ByteBuffer {
        var text = ""
        for (name, value) in parts {
            text += "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n"
        }
        return ByteBuffer(string: text + "--\(boundary)--\r\n")
    }

    @Test func rawSDPAndMultipartWithASession() throws {
        #expect(try OfferRequest.parse(contentType: "application/sdp; charset=utf-8", body: ByteBuffer(string: sdp))
                == OfferRequest(sdp: Array(sdp.utf8), session: nil))
        let offer = try OfferRequest.parse(contentType: "multipart/form-data; boundary=\"b0undary\"",
                                           body: form([("sdp", sdp), ("session", #"{"agent":"parrot"}"#)]))
        #expect(offer.sdp == Array(sdp.utf8) && offer.session?.agent == "parrot")
        #expect(try OfferRequest.parse(contentType: "Multipart/Form-Data; boundary=b0undary", body: form([("sdp", sdp)])).session == nil)
    }

    @Test func badFormsSayWhy() {
        let cases: [(String?, ByteBuffer, Int)] = [
            (nil, ByteBuffer(string: sdp), 415),
            ("text/plain", ByteBuffer(string: sdp), 415),
            ("multipart/form-data", form([("sdp", sdp)]), 400),
            ("multipart/form-data; boundary=" + String(repeating: "x", count: 71), form([("sdp", sdp)]), 400),
            ("multipart/form-data; boundary=b0undary", form([("session", "{}")]), 400),
            ("multipart/form-data; boundary=b0undary", form([("sdp", sdp), ("session", "not json")]), 400),
            ("multipart/form-data; boundary=b0undary", ByteBuffer(string: "--b0undary\r\ngarbage"), 400),
        ]
        for (contentType, body, status) in cases {
            do {
                _ = try OfferRequest.parse(contentType: contentType, body: body)
                Issue.record("\(contentType ?? "none") was taken")
            } catch {
                #expect(error.statusCode == status, "\(contentType ?? "none"): \(error)")
            }
        }
    }

    @Test func mangledMultipartBodiesNeverTrap() {
        var generator = SplitMix64(seed: 17)
        let good = Array(form([("sdp", sdp), ("session", #"{"agent":"echo","x":[1,2,{"y":null}]}"#)]).readableBytesView)
        for _ in 0..<20_000 {
            var bytes = good
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes.remove(at: index)
                default: bytes.insert(contentsOf: Array("\r\n--b0undary".utf8), at: index)
                }
                if bytes.isEmpty { break }
            }
            _ = try? OfferRequest.parse(contentType: "multipart/form-data; boundary=b0undary", body: ByteBuffer(bytes: bytes))
        }
    }

    @Test func clientSecretRequests() throws {
        let (session, lifetime) = try ClientSecretRequest.parse(ByteBuffer(string:
            #"{"expires_after":{"anchor":"created_at","seconds":120},"session":{"agent":"parrot"}}"#))
        #expect(session.agent == "parrot" && lifetime == 120)
        #expect(try ClientSecretRequest.parse(ByteBuffer()).1 == ClientSecrets.defaultLifetime)
        for bad in [#"{"expires_after":{"seconds":1.5}}"#, #"{"expires_after":{"seconds":1e300}}"#, #"{"expires_after":3}"#,
                    #"{"session":[]}"#, #"{"expires_after":{"anchor":"now","seconds":60}}"#, "nope"] {
            #expect(throws: SignalingError.self) { try ClientSecretRequest.parse(ByteBuffer(string: bad)) }
        }
    }
}
