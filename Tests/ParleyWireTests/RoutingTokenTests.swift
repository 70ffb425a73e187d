import Foundation
import Testing
@testable import ParleyWire
import ParleyTestSupport

@Suite struct RoutingTokenTests {
    /// The documented test key (docs/protocol.md): secret bytes 0x00, 0x01, …, 0x1f.
    static let secret = (0..<32).map { UInt8($0) }
    static let keyring = RoutingKeyring(current: RoutingKey(id: 1, secret: secret))
    static let ipv4Token = RoutingToken(
        keyID: 1, clusterID: 0x0102, worker: .v4(IPv4Address(10, 1, 2, 3), port: 40000), issuedHour: 0x0B2C,
        nonce: 0xA1B2_C3D4)
    static let ipv6Token = RoutingToken(
        keyID: 1, clusterID: 7, worker: .v6(IPv6Address("fd00::1:2")!, port: 50001), issuedHour: 0x0B2C, nonce: 1)

    static let ipv4Vector = "EQECIZJQfwHzZcdue7vKl5TlEROPVXbv"
    static let ipv6Vector = "EQAHxV97OE6rl4W0LEQSW5Skb9eAUNKnpP1BshkbE0emeXIG"
    /// A call id (purpose `.signaling`): its owner's signaling endpoint, URL-safe after `rtc_`.
    static let callToken = RoutingToken(
        keyID: 1, clusterID: 0x0102, worker: .v4(IPv4Address(10, 1, 2, 3), port: 8080), issuedHour: 0x0B2C, nonce: 2,
        purpose: .signaling)
    static let callIDVector = "rtc_EQECw77qotLmfGzWVHtn-o-1kBC_sEIb"

    @Test func vectorsSealAndOpen() throws {
        #expect(Self.keyring.seal(Self.ipv4Token) == Self.ipv4Vector)
        #expect(Self.keyring.seal(Self.ipv6Token) == Self.ipv6Vector)
        #expect(try Self.keyring.open(Self.ipv4Vector) == Self.ipv4Token)
        #expect(try Self.keyring.open(Self.ipv6Vector) == Self.ipv6Token)
    }

    @Test func vectorsAreTheOnesInTheProtocolDocument() throws {
        let document = try String(contentsOf: Fixtures.directory.appendingPathComponent("../../../docs/protocol.md"), encoding: .utf8)
        #expect(document.contains("`\(Self.ipv4Vector)`"))
        #expect(document.contains("`\(Self.ipv6Vector)`"))
        #expect(document.contains("`\(Self.callIDVector)`"))
    }

    /// An implementation written from docs/protocol.md alone (scripts/routing-token-reference.py)
    /// produces the same tokens.
    @Test func independentReferenceImplementationAgrees() throws {
        let script = Fixtures.directory.appendingPathComponent("../../../scripts/routing-token-reference.py").standardized
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(text == "ipv4 \(Self.ipv4Vector)\nipv6 \(Self.ipv6Vector)\ncall-id \(Self.callIDVector)\n")
    }

    @Test func callIDVectorOpensToItsOwnerAndNeverAsAUfrag() throws {
        #expect(CallID.token(of: Self.callIDVector, keyring: Self.keyring) == Self.callToken)
        let ufrag = Self.keyring.seal(Self.callToken)
        #expect("rtc_" + ufrag.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_") == Self.callIDVector)
        // One purpose never opens as the other: a call id is no ICE ufrag, a ufrag no call id.
        #expect(throws: RoutingTokenError.malformedBody) { try Self.keyring.open(ufrag) }
        #expect(CallID.token(of: "rtc_" + Self.ipv4Vector, keyring: Self.keyring) == nil)
        #expect(try Self.keyring.open(ufrag, purpose: .signaling) == Self.callToken)
    }

    @Test func callIDsRefuseWhatTheyDidNotMake() {
        var generator = SystemRandomNumberGenerator()
        let owner = TransportAddress.v6(IPv6Address("fd00::7")!, port: 8080)
        let id = CallID.make(keyring: Self.keyring, clusterID: 3, owner: owner, issuedHour: 9, using: &generator)
        #expect(id.utf8.count == 4 + RoutingToken.ipv6Length)
        #expect(!id.dropFirst(4).contains("+") && !id.dropFirst(4).contains("/"))
        #expect(CallID.token(of: id, keyring: Self.keyring)?.worker == owner)
        let other = RoutingKeyring(current: RoutingKey(id: 1, secret: Array(repeating: 7, count: 32)))
        #expect(CallID.token(of: id, keyring: other) == nil, "another cluster's keys")
        // The standard alphabet's '+' and '/', a wrong prefix, any other length, a flipped character.
        #expect(CallID.token(of: Self.callIDVector.replacingOccurrences(of: "-", with: "+"), keyring: Self.keyring) == nil)
        #expect(CallID.token(of: "rtx_" + Self.callIDVector.dropFirst(4), keyring: Self.keyring) == nil)
        #expect(CallID.token(of: Self.callIDVector + "A", keyring: Self.keyring) == nil)
        #expect(CallID.token(of: "rtc_0123456789abcdef", keyring: Self.keyring) == nil)
        #expect(CallID.token(of: String(repeating: "é", count: 18), keyring: Self.keyring) == nil)
        var flipped = Array(Self.callIDVector.utf8)
        flipped[10] = flipped[10] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(CallID.token(of: String(decoding: flipped, as: UTF8.self), keyring: Self.keyring) == nil)
    }

    @Test func clusterIDIsReadableWithoutTheKey() {
        let text = Array(Self.ipv4Vector.utf8)
        #expect(text.withUnsafeBytes { RoutingKeyring.clusterID(of: $0) } == 0x0102)
        #expect(Array("short".utf8).withUnsafeBytes { RoutingKeyring.clusterID(of: $0) } == nil)
    }

    @Test func oldAndFutureTokensExpire() throws {
        let issued = Self.ipv4Token.issuedHour
        let text = Self.ipv4Vector
        #expect(try Self.keyring.open(text, currentHour: issued) == Self.ipv4Token)
        #expect(try Self.keyring.open(text, currentHour: issued + 48) == Self.ipv4Token)
        #expect(throws: RoutingTokenError.expired) { try Self.keyring.open(text, currentHour: issued + 49) }
        #expect(try Self.keyring.open(text, currentHour: issued - 1) == Self.ipv4Token, "an hour of clock skew is fine")
        #expect(throws: RoutingTokenError.expired) { try Self.keyring.open(text, currentHour: issued - 2) }
    }

    @Test(arguments: [ipv4Token, ipv6Token])
    func sealOpenRoundTrips(token: RoutingToken) throws {
        let text = Self.keyring.seal(token)
        #expect(text.utf8.count == token.encodedLength)
        #expect(text.utf8.allSatisfy { UfragBase64.decodeTable[Int($0)] != 0xFF }, "only ICE ufrag characters")
        #expect(try Self.keyring.open(text) == token)
    }

    @Test func tokensAreOpaque() {
        // Neither the worker's address nor its port appears in the token's bytes.
        let text = Self.keyring.seal(Self.ipv4Token)
        let decoded = decodeBase64(text)
        for needle: [UInt8] in [[10, 1, 2, 3], [0x9C, 0x40]] {
            #expect(!decoded.indices.contains { decoded[$0...].starts(with: needle) })
        }
        // Two tokens for the same worker differ in every byte position's likelihood: at least most bytes differ.
        var other = Self.ipv4Token
        other.nonce = 0xA1B2_C3D5
        let a = Array(text.utf8), b = Array(Self.keyring.seal(other).utf8)
        #expect(zip(a, b).filter { $0 != $1 }.count > 20)
    }

    @Test func everySingleCharacterChangeIsRejected() {
        let text = Array(Self.keyring.seal(Self.ipv4Token).utf8)
        let alphabet = UfragBase64.alphabet
        for index in text.indices {
            for replacement in [alphabet[(alphabet.firstIndex(of: text[index])! + 1) % 64], alphabet[(alphabet.firstIndex(of: text[index])! + 37) % 64]] {
                var forged = text
                forged[index] = replacement
                #expect(throws: RoutingTokenError.self) { try Self.keyring.open(forged) }
            }
        }
    }

    @Test func otherSecretsAndUnknownKeysAreRejected() {
        let text = Self.keyring.seal(Self.ipv4Token)
        let stranger = RoutingKeyring(current: RoutingKey(id: 1, secret: (0..<32).map { UInt8(31 - $0) }))
        #expect(throws: RoutingTokenError.badTag) { try stranger.open(text) }
        let otherID = RoutingKeyring(current: RoutingKey(id: 2, secret: Self.secret))
        #expect(throws: RoutingTokenError.unknownKey(1)) { try otherID.open(text) }
    }

    @Test func malformedTextIsRejectedWithItsReason() {
        #expect(throws: RoutingTokenError.wrongLength) { try Self.keyring.open("") }
        #expect(throws: RoutingTokenError.wrongLength) { try Self.keyring.open("xOn5") }
        #expect(throws: RoutingTokenError.wrongLength) { try Self.keyring.open(String(repeating: "A", count: 33)) }
        #expect(throws: RoutingTokenError.invalidCharacter) { try Self.keyring.open(String(repeating: "-", count: 32)) }
        #expect(throws: RoutingTokenError.invalidCharacter) { try Self.keyring.open("EQECIZJQfwHzZcdue7vKl5TlEROPVXb:") }
        // Version 2 in the clear header byte.
        #expect(throws: RoutingTokenError.unsupportedVersion(2)) { try Self.keyring.open("IQECIZJQfwHzZcdue7vKl5TlEROPVXbv") }
    }

    @Test func keyRotationKeepsOldTokensValid() throws {
        let old = RoutingKey(id: 1, secret: Self.secret)
        let new = RoutingKey(id: 2, secret: (0..<32).map { UInt8($0 * 3) })
        let rotated = RoutingKeyring(current: new, others: [old])
        #expect(rotated.currentKeyID == 2)
        #expect(try rotated.open(Self.keyring.seal(Self.ipv4Token)) == Self.ipv4Token)
        var fresh = Self.ipv4Token
        fresh.keyID = rotated.currentKeyID
        #expect(try rotated.open(rotated.seal(fresh)) == fresh)
        #expect(throws: RoutingTokenError.unknownKey(2)) { try Self.keyring.open(rotated.seal(fresh)) }
    }

    @Test func hexSecretsParse() {
        let hexSecret = Self.secret.map { String(format: "%02x", $0) }.joined()
        #expect(RoutingKey(id: 1, hexSecret: hexSecret) == RoutingKey(id: 1, secret: Self.secret))
        #expect(RoutingKey(id: 1, hexSecret: "00") == nil)
        #expect(RoutingKey(id: 1, hexSecret: String(repeating: "zz", count: 32)) == nil)
        #expect(RoutingKey(id: 16, hexSecret: hexSecret) == nil)
        // 64 UTF-8 bytes that are not 64 hex digits.
        #expect(RoutingKey(id: 1, hexSecret: "é" + String(repeating: "0", count: 62)) == nil)
        #expect(RoutingKey(id: 1, hexSecret: "+f" + String(repeating: "0", count: 62)) == nil)
    }

    @Test func randomTokensAreDistinct() throws {
        var generator = SplitMix64(seed: 42)
        var seen = Set<String>()
        for _ in 0..<1000 {
            let token = RoutingToken.random(keyID: 1, clusterID: 1, worker: Self.ipv4Token.worker, issuedHour: 9, using: &generator)
            let text = Self.keyring.seal(token)
            seen.insert(text)
            #expect(try Self.keyring.open(text) == token)
        }
        #expect(seen.count == 1000)
    }

    /// Random ufrags of the right shape are all rejected (2^-64 chance per try of a false accept).
    @Test func randomUfragsAreRejected() {
        var generator = SplitMix64(seed: 7)
        for round in 0..<20_000 {
            let length = round % 2 == 0 ? RoutingToken.ipv4Length : RoutingToken.ipv6Length
            let ufrag = (0..<length).map { _ in UfragBase64.alphabet[Int(generator.next() % 64)] }
            #expect(throws: RoutingTokenError.self) { try Self.keyring.open(ufrag) }
        }
    }

    func decodeBase64(_ text: String) -> [UInt8] {
        let input = Array(text.utf8)
        var output = [UInt8](repeating: 0, count: input.count / 4 * 3)
        input.withUnsafeBytes { raw in
            output.withUnsafeMutableBytes { _ = UfragBase64.decode(raw, into: $0) }
        }
        return output
    }
}
