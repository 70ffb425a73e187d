/// Random ICE ufrags and passwords (RFC 8839 §5.4: `ice-char`, at least 24 random bits in a
/// ufrag and 128 in a password; 24 characters carry 144 bits).
public enum ICECredentials {
    public static func randomString<G: RandomNumberGenerator>(length: Int, using generator: inout G) -> String {
        String(decoding: (0..<length).map { _ in UfragBase64.alphabet[Int(truncatingIfNeeded: generator.next() % 64)] }, as: UTF8.self)
    }
}
