import Testing

@testable import ParleyWire

@Suite struct RoutingKeyFileTests {
    private let a = String(repeating: "ab", count: 32), b = String(repeating: "cd", count: 32)

    @Test func theMarkedKeySealsAndAllOpen() throws {
        let ring = try RoutingKeyFile.parse("# rotating\n1 \(a)\n\n2 \(b) current   # new\n")
        #expect(ring.currentKeyID == 2 && ring.keyIDs == [1, 2])
        let marked = try RoutingKeyFile.parse("3 \(a)\r\n7\t\(b) current\r\n")
        #expect(marked.currentKeyID == 7 && marked.keyIDs == [3, 7], "CRLF lines, tabs")
        #expect(try RoutingKeyFile.parse("4 \(a)\n").currentKeyID == 4, "a lone key seals unmarked")
        // A token sealed under the old key opens with the rotated ring; one under the new key does not open with the old.
        let old = try RoutingKeyFile.parse("1 \(a)\n")
        let token = RoutingToken(keyID: 1, clusterID: 0, worker: .v4(IPv4Address(10, 0, 0, 1), port: 3478), issuedHour: 5, nonce: 9)
        #expect(try ring.open(old.seal(token)) == token)
        let fresh = RoutingToken(keyID: 2, clusterID: 0, worker: .v4(IPv4Address(10, 0, 0, 1), port: 3478), issuedHour: 5, nonce: 9)
        #expect(throws: RoutingTokenError.unknownKey(2)) { try old.open(ring.seal(fresh)) }
    }

    @Test func mistakesNameTheirLine() {
        let cases: [(String, Int)] = [
            ("", 0), ("# nothing\n", 0),
            ("1 \(a)\n16 \(b)\n", 2), ("1 abc\n", 1), ("x \(a)\n", 1),
            ("1 \(a)\n1 \(b)\n", 2), ("1 \(a) current\n2 \(b) current\n", 2),
            ("1 \(a) now\n", 1), ("1 \(a) current extra\n", 1),
            ("1 \(a)\n2 \(b)\n", 0),  // two keys, none marked: which seals must be said
        ]
        for (text, line) in cases {
            #expect(throws: RoutingKeyFile.ParseError.self) { try RoutingKeyFile.parse(text) }
            do { _ = try RoutingKeyFile.parse(text) } catch { #expect(error.line == line, "\(text)") }
        }
    }
}
