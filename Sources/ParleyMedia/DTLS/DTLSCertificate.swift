import COpenSSL
import CParleyShims
import ParleyWire

/// Why a DTLS object could not be made or a handshake failed.
public enum DTLSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An OpenSSL call failed while setting up (the call's name and OpenSSL's reason).
    case setup(String)
    /// The peer's certificate does not hash to any fingerprint its SDP announced.
    case fingerprintMismatch
    /// The peer presented no certificate.
    case noPeerCertificate
    /// The handshake failed (OpenSSL's reason).
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

/// OpenSSL's queued error, as text, emptying the queue.
func openSSLErrorDescription() -> String {
    var reasons: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return reasons.isEmpty ? "unknown error" : reasons.joined(separator: "; ")
}

/// A self-signed ECDSA P-256 certificate, made once per process: WebRTC authenticates it by the
/// fingerprint in SDP, not by a chain. Immutable after creation, so one instance serves every
/// worker thread (OpenSSL reference-counts and locks the objects it shares).
public final class DTLSCertificate: @unchecked Sendable {
    let certificate: OpaquePointer
    let privateKey: OpaquePointer
    /// The SHA-256 fingerprint for `a=fingerprint`.
    public let fingerprint: CertificateFingerprint

    /// Generates a key pair and a certificate valid from a day ago for `validityDays` days.
    public init(commonName: String = "parley", validityDays: Int = 30) throws(DTLSError) {
        guard let key = parley_generate_p256_key() else { throw .setup("EC key generation: \(openSSLErrorDescription())") }
        guard let x509 = X509_new() else {
            EVP_PKEY_free(key)
            throw .setup("X509_new")
        }
        privateKey = key
        certificate = x509
        var serial = [UInt8](repeating: 0, count: 8)
        _ = RAND_bytes(&serial, 8)
        let serialNumber = serial.reduce(0) { $0 << 8 | Int($1) } & 0x7FFF_FFFF_FFFF_FFFF
        guard X509_set_version(x509, 2) == 1,
              ASN1_INTEGER_set_int64(X509_get_serialNumber(x509), Int64(serialNumber)) == 1,
              X509_gmtime_adj(X509_getm_notBefore(x509), -86_400) != nil,
              X509_gmtime_adj(X509_getm_notAfter(x509), validityDays * 86_400) != nil,
              X509_set_pubkey(x509, key) == 1,
              let name = X509_get_subject_name(x509),
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, commonName, -1, -1, 0) == 1,
              X509_set_issuer_name(x509, name) == 1,
              X509_sign(x509, key, EVP_sha256()) > 0 else {
            // `fingerprint` is not set yet, so deinit will not run: free here.
            X509_free(x509)
            EVP_PKEY_free(key)
            throw .setup("certificate: \(openSSLErrorDescription())")
        }
        do {
            fingerprint = try Self.sha256Fingerprint(of: x509)
        } catch {
            X509_free(x509)
            EVP_PKEY_free(key)
            throw error
        }
    }

    deinit {
        X509_free(certificate)
        EVP_PKEY_free(privateKey)
    }

    static func sha256Fingerprint(of certificate: OpaquePointer) throws(DTLSError) -> CertificateFingerprint {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(certificate, EVP_sha256(), &digest, &length) == 1 else {
            throw .setup("X509_digest: \(openSSLErrorDescription())")
        }
        return CertificateFingerprint(algorithm: "sha-256", digest: Array(digest.prefix(Int(length))))
    }

    /// The certificate's digest under the hash an SDP fingerprint names; nil for hashes Parley does not support.
    static func digest(of certificate: OpaquePointer, algorithm: String) -> [UInt8]? {
        let method: OpaquePointer?
        switch algorithm.lowercased() {
        case "sha-256": method = EVP_sha256()
        case "sha-384": method = EVP_sha384()
        case "sha-512": method = EVP_sha512()
        case "sha-1": method = EVP_sha1()
        default: return nil
        }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(certificate, method, &digest, &length) == 1 else { return nil }
        return Array(digest.prefix(Int(length)))
    }
}
