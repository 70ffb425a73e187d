import Crypto
import Foundation
import ParleyTestSupport
import ParleyWire
import Testing

@testable import ParleySignaling

private let keyA = "sk_test_aaaaaaaaaaaaaaaaaaaaaaaa"
private let keyB = "sk_test_bbbbbbbbbbbbbbbbbbbbbbbb"

private func keyring(_ ids: [UInt8], current: UInt8) -> RoutingKeyring {
    func key(_ id: UInt8) -> RoutingKey { RoutingKey(id: id, secret: (0..<32).map { UInt8($0) &+ id &* 37 }) }
    return RoutingKeyring(current: key(current), others: ids.filter { $0 != current }.map(key))
}

private func authenticator(keys: [String] = [keyA, keyB], ring: RoutingKeyring = keyring([1], current: 1)) throws -> Authenticator {
    Authenticator(apiKeys: try APIKeys(keys), secrets: ClientSecrets(keyring: ring))
}

private func claims(owner: String = APIKeys.id(of: keyA), expiresAt: Int64 = 2_000_000_600,
                    session: JSONValue = .object(["agent": .string("parrot")])) -> ClientSecretClaims {
    ClientSecretClaims(id: "cs_0123456789abcdef", owner: owner, createdAt: 2_000_000_000, expiresAt: expiresAt, session: session)
}

@Suite struct APIKeyTests {
    @Test func shortOrUnprintableKeysAreRefused() {
        #expect(throws: SignalingError.self) { try APIKeys(["short"]) }
        #expect(throws: SignalingError.self) { try APIKeys(["has a space in it, sixteen+"]) }
        #expect(throws: SignalingError.self) { try APIKeys([String(repeating: "x", count: 513)]) }
    }

    @Test func aKeyMatchesOnlyItselfAndIsKnownByItsDigest() throws {
        let keys = try APIKeys([keyA, keyB, keyA])
        #expect(keys.keys.count == 2)
        let id = try #require(keys.match(Array(keyA.utf8)))
        #expect(id == APIKeys.id(of: keyA))
        #expect(id.hasPrefix("key_") && id.count == 16)
        #expect(!id.contains("aaaa"))
        #expect(keys.match(Array(keyB.utf8)) == APIKeys.id(of: keyB))
        #expect(keys.match(Array((keyA + "x").utf8)) == nil)
        #expect(keys.match(Array(keyA.dropLast().utf8)) == nil)
        #expect(keys.match([]) == nil)
    }

    @Test func generatedKeysAreLongAndDistinct() throws {
        var generator = SplitMix64(seed: 7)
        let first = APIKeys.generate(using: &generator), second = APIKeys.generate(using: &generator)
        #expect(first != second && first.hasPrefix("sk_parley_") && first.count == 50)
        _ = try APIKeys([first, second])
    }
}

@Suite struct AuthenticatorTests {
    @Test func missingOrOtherSchemesAre401() throws {
        let auth = try authenticator()
        for header in [nil, "", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer", "Bearer   ", keyA] {
            #expect(throws: SignalingError.missingCredentials) { try auth.authenticate(authorization: header, unixSeconds: 0) }
        }
    }

    @Test func apiKeysInAnyCaseOfTheScheme() throws {
        let auth = try authenticator()
        #expect(try auth.authenticate(authorization: "Bearer \(keyA)", unixSeconds: 0) == .apiKey(id: APIKeys.id(of: keyA)))
        #expect(try auth.authenticate(authorization: "bearer  \(keyB) ", unixSeconds: 0) == .apiKey(id: APIKeys.id(of: keyB)))
        #expect(throws: SignalingError.invalidAPIKey) { try auth.authenticate(authorization: "Bearer sk_wrong_key_0000000000", unixSeconds: 0) }
    }

    @Test func clientSecretsOpenUntilTheyExpire() throws {
        let auth = try authenticator()
        let secret = auth.secrets.seal(claims())
        #expect(secret.hasPrefix("ek_"))
        #expect(try auth.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_599) == .clientSecret(claims()))
        #expect(throws: SignalingError.clientSecretExpired(ago: 0)) {
            try auth.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_600)
        }
        // Minted (by a clock) more than a minute ahead: not believed.
        #expect(throws: SignalingError.invalidClientSecret) {
            try auth.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_000 - 61)
        }
    }

    @Test func aSecretLivesNoLongerThanTheKeyThatMintedIt() throws {
        let secret = try authenticator().secrets.seal(claims())
        // keyA removed (a SIGHUP after a leak): its secrets are refused at once, not when they expire.
        let withoutA = try authenticator(keys: [keyB])
        #expect(throws: SignalingError.clientSecretRevoked) {
            try withoutA.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_100)
        }
        // A secret sealed for an owner this server never had (by anyone else holding the sealing key).
        let stranger = try authenticator().secrets.seal(claims(owner: "key_000000000000"))
        #expect(throws: SignalingError.clientSecretRevoked) {
            try authenticator().authenticate(authorization: "Bearer " + stranger, unixSeconds: 2_000_000_100)
        }
    }

    @Test func keysCannotLookLikeClientSecrets() {
        #expect(throws: SignalingError.self) { try APIKeys(["ek_this_would_be_read_as_a_secret"]) }
    }

    @Test func forgedTruncatedOrForeignSecretsAre401() throws {
        let auth = try authenticator()
        let secret = auth.secrets.seal(claims())
        var generator = SplitMix64(seed: 3)
        var characters = Array(secret.utf8)
        for _ in 0..<500 {
            var forged = characters
            let index = Int.random(in: 3..<forged.count, using: &generator)
            forged[index] = forged[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            #expect(throws: SignalingError.invalidClientSecret) {
                try auth.authenticate(authorization: "Bearer " + String(decoding: forged, as: UTF8.self), unixSeconds: 2_000_000_001)
            }
        }
        characters.removeLast(5)
        for text in [String(decoding: characters, as: UTF8.self), "ek_", "ek_!!!!", "ek_" + String(repeating: "A", count: 9000)] {
            #expect(throws: SignalingError.invalidClientSecret) { try auth.authenticate(authorization: "Bearer " + text, unixSeconds: 2_000_000_001) }
        }
        let other = try authenticator(ring: keyring([2], current: 2))
        #expect(throws: SignalingError.invalidClientSecret) { try other.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_001) }
    }

    @Test func aSecretOutlivesARotationUntilItsKeyIsRetired() throws {
        let old = try authenticator(ring: keyring([1], current: 1))
        let secret = old.secrets.seal(claims())
        let both = try authenticator(ring: keyring([1, 2], current: 2))
        #expect(try both.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_001) == .clientSecret(claims()))
        let newOnly = try authenticator(ring: keyring([2], current: 2))
        #expect(throws: SignalingError.invalidClientSecret) { try newOnly.authenticate(authorization: "Bearer " + secret, unixSeconds: 2_000_000_001) }
        // New secrets are sealed under the current key: the old ring cannot open them.
        let fresh = both.secrets.seal(claims())
        #expect(throws: SignalingError.invalidClientSecret) { try old.authenticate(authorization: "Bearer " + fresh, unixSeconds: 2_000_000_001) }
    }

    @Test func insecureModeTakesAnyoneAsAnonymousButStillKnowsKeys() throws {
        var auth = try authenticator()
        auth.requireCredentials = false
        #expect(try auth.authenticate(authorization: nil, unixSeconds: 0) == .anonymous)
        #expect(try auth.authenticate(authorization: "Bearer nonsense-nonsense-nonsense", unixSeconds: 0) == .anonymous)
        #expect(try auth.authenticate(authorization: "Bearer \(keyA)", unixSeconds: 0) == .apiKey(id: APIKeys.id(of: keyA)))
    }

    /// The vector in docs/api.md: a secret's exact bytes for a given key, nonce and claims.
    @Test func theDocumentedClientSecretVector() throws {
        let ring = RoutingKeyring(current: try #require(RoutingKey(id: 1, hexSecret: String(repeating: "0f", count: 32))))
        let secrets = ClientSecrets(keyring: ring)
        let vector = ClientSecretClaims(id: "cs_00112233445566ff", owner: "key_5d6bf5a3b6b0", createdAt: 1_764_590_400,
                                        expiresAt: 1_764_591_000, session: .object(["agent": .string("parrot")]))
        let nonce = try AES.GCM.Nonce(data: Array(repeating: UInt8(0x2a), count: 12))
        let secret = secrets.seal(vector, nonce: nonce)
        #expect(secret == ClientSecretVector.text)
        #expect(try secrets.open(Array(ClientSecretVector.text.utf8), unixSeconds: 1_764_590_401) == vector)
    }
}

/// docs/api.md shows this secret; the test above must produce it byte for byte.
enum ClientSecretVector {
    static let text = "ek_AQEqKioqKioqKioqKipBQS6pTsa-vmJO9JeM0nUA-0tQ4x0NaWmp_n7_km4OcFXSSFUiKARepwAqwN0MucPB9rJIlMwRRX4g78ql6nXt8x7RwEW5Ug5gpGjhaocRotGgkKYaok9x1qjgkjoSqotecubn0r00AyWA8zE4O4jwZyzfix1HWp6Yo5sO38wh78FIO50t9g"
}

@Suite struct OwnershipTests {
    @Test func theCreatingKeyOrSecretMayAccessOthersMayNot() {
        let idA = APIKeys.id(of: keyA), idB = APIKeys.id(of: keyB)
        let byKey = Credential.apiKey(id: idA).owner
        #expect(Credential.apiKey(id: idA).mayAccess(byKey))
        #expect(!Credential.apiKey(id: idB).mayAccess(byKey))
        #expect(!Credential.clientSecret(claims()).mayAccess(byKey))
        #expect(!Credential.anonymous.mayAccess(byKey))

        let bySecret = Credential.clientSecret(claims()).owner
        #expect(bySecret == CallOwner(keyID: idA, secretID: "cs_0123456789abcdef"))
        #expect(Credential.clientSecret(claims()).mayAccess(bySecret))
        #expect(Credential.apiKey(id: idA).mayAccess(bySecret), "the key that minted the secret owns its calls")
        #expect(!Credential.apiKey(id: idB).mayAccess(bySecret))
        var another = claims()
        another.id = "cs_ffffffffffffffff"
        #expect(!Credential.clientSecret(another).mayAccess(bySecret), "another secret of the same key")
        #expect(Credential.anonymous.mayAccess(Credential.anonymous.owner))
    }
}
