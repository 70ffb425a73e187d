import Crypto
import Foundation
import ParleyWire
import SwiftASN1
import X509

/// Why a DTLS object could not be made or a handshake failed.
public enum DTLSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A library call failed while setting up (the call's name and the library's reason).
    case setup(String)
    /// The peer's certificate does not hash to any fingerprint its SDP announced.
    case fingerprintMismatch
    /// The peer presented no certificate.
    case noPeerCertificate
    /// The handshake failed (the library's reason).
    case handshake(String)
    /// No SRTP protection profile was agreed.
    case noSRTPProfile
    /// The handshake did not finish within its deadline.
    case timedOut

    public var description: String {
        switch self {
        case .setup(let reason): "DTLS setup failed: \(reason)"
        case .fingerprintMismatch: "the peer's certificate does not match the fingerprint in its SDP"
        case .noPeerCertificate: "the peer presented no certificate"
        case .handshake(let reason): "DTLS handshake failed: \(reason)"
        case .noSRTPProfile: "no SRTP protection profile in common"
        case .timedOut: "the DTLS handshake timed out"
        }
    }
}

/// A self-signed ECDSA P-256 certificate, made once per process with swift-certificates: WebRTC
/// authenticates it by the fingerprint in SDP, not by a chain. A value (DER bytes), so each DTLS
/// library loads the same certificate and the answer's fingerprint holds whichever runs a call.
public final class DTLSCertificate: Sendable {
    /// The certificate in DER.
    public let certificateDER: [UInt8]
    /// Its private key in DER (PKCS #8).
    public let privateKeyDER: [UInt8]
    /// The SHA-256 fingerprint for `a=fingerprint`.
    public let fingerprint: CertificateFingerprint

    /// Generates a key pair and a certificate valid from a day ago for `validityDays` days.
    public init(commonName: String = "parley", validityDays: Int = 30) throws(DTLSError) {
        let key = P256.Signing.PrivateKey()
        do {
            let name = try DistinguishedName { CommonName(commonName) }
            let now = Date()
            let certificate = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                notValidBefore: now - 86_400, notValidAfter: now + Double(validityDays) * 86_400,
                issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: Certificate.Extensions {}, issuerPrivateKey: .init(key))
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            certificateDER = serializer.serializedBytes
        } catch {
            throw .setup("certificate: \(error)")
        }
        privateKeyDER = Array(key.derRepresentation)
        fingerprint = CertificateFingerprint(algorithm: "sha-256", digest: Array(SHA256.hash(data: certificateDER)))
    }

    /// The digest of a certificate's DER under the hash an SDP fingerprint names (RFC 8122 §5);
    /// nil for hashes Parley does not support.
    public static func digest(ofDER der: some DataProtocol, algorithm: String) -> [UInt8]? {
        switch algorithm.lowercased() {
        case "sha-256": Array(SHA256.hash(data: der))
        case "sha-384": Array(SHA384.hash(data: der))
        case "sha-512": Array(SHA512.hash(data: der))
        case "sha-1": Array(Insecure.SHA1.hash(data: der))
        default: nil
        }
    }

    /// Whether a peer certificate's DER hashes to one of the fingerprints its SDP announced.
    public static func matches(der: some DataProtocol, anyOf fingerprints: [CertificateFingerprint]) -> Bool {
        fingerprints.contains { digest(ofDER: der, algorithm: $0.algorithm) == $0.digest }
    }
}
