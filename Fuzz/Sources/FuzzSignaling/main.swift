// libFuzzer entry point: what the signaling API decides from request bytes, on arbitrary bytes.
// The first byte picks the decision: an Authorization header (API key or client secret), a client
// secret's text itself, a sideband message, a session object, X-Forwarded-For, a routing key file,
// a multipart/form-data body (boundary `b`), a WebSocket server's answer to Parley's upgrade.
// Each must return or throw, never trap; a secret that opens re-seals to claims that open the same.
import ParleySignaling
import ParleyWire

private let keyring = RoutingKeyring(current: RoutingKey(id: 3, secret: Array(repeating: 0x5a, count: 32)))
private let authenticator = Authenticator(
    apiKeys: try! APIKeys(["sk_fuzz_0123456789abcdef", "sk_fuzz_fedcba9876543210"]), secrets: ClientSecrets(keyring: keyring))
private let resolver = ClientAddressResolver(trustedProxies: [IPNetwork("10.0.0.0/8")!, IPNetwork("fd00::/8")!])
private let agents: Set<String> = ["echo", "parrot", "loopback"]
private let handshake = WebSocketClientHandshake(nonce: Array("the sample nonce".utf8))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSignaling(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let rest = Array(bytes.dropFirst())
    let text = String(decoding: rest, as: UTF8.self)
    switch bytes[0] % 8 {
    case 0:
        if case .clientSecret(let claims)? = try? authenticator.authenticate(authorization: text, unixSeconds: 1_800_000_000) {
            let resealed = authenticator.secrets.seal(claims)
            precondition((try? authenticator.secrets.open(Array(resealed.utf8), unixSeconds: 1_800_000_000)) == claims)
        }
    case 1:
        if let claims = try? authenticator.secrets.open(rest, unixSeconds: 1_800_000_000) {
            _ = try? SessionConfiguration.resolve(requested: nil, credential: .clientSecret(claims), agents: agents)
        }
    case 2:
        if case .updateSession(let update)? = try? SidebandCommand(decoding: rest) {
            _ = try? SessionConfiguration(validating: ["agent": .string("parrot")]).merging(update)
        }
    case 3:
        if let session = try? SessionConfiguration(parsing: rest) {
            let secret = Credential.clientSecret(ClientSecretClaims(id: "cs_1", owner: "key_1", createdAt: 0, expiresAt: 1,
                                                                     session: .object(["agent": .string("parrot")])))
            _ = try? SessionConfiguration.resolve(requested: session, credential: secret, agents: agents)
            _ = try? SessionConfiguration.resolve(requested: session, credential: .apiKey(id: "key_1"), agents: agents)
            _ = SidebandEvent.sessionUpdated(session: session.json.text).text
        }
    case 4:
        let peer = TransportAddress.v4(IPv4Address(10, 1, 2, 3), port: 443)
        let headers = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        _ = resolver.resolve(peer: peer, forwardedFor: headers)
    case 5:
        _ = try? RoutingKeyFile.parse(text)
    case 7:
        // The answer judged whole, or arriving in two reads (the second search resuming where the
        // first stopped), comes to the same outcome.
        let whole = handshake.evaluate(rest)
        switch whole {
        case .upgraded(let length), .interim(let length):
            precondition(length >= 4 && length <= min(rest.count, WebSocketClientHandshake.maximumHeadBytes))
        default: break
        }
        let split = rest.isEmpty ? 0 : Int(rest[0]) % (rest.count + 1)
        if case .incomplete = handshake.evaluate(rest[..<split]) {
            precondition(handshake.evaluate(rest, searchFrom: split) == whole)
        }
    default:
        if let fields = try? MultipartForm.parse(rest, boundary: "b") {
            precondition(fields.count <= MultipartForm.maximumParts)
            for value in fields.values { precondition(value.count < rest.count) }
        }
    }
    return 0
}
