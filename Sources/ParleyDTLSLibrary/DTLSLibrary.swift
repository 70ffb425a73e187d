// The choice between Parley's two DTLS libraries, in a module of its own: it sees both
// `OpenSSLDTLSContext` (ParleyMedia) and `BoringSSLDTLSContext` (ParleyBoringDTLS) and calls neither
// C library, which no module that calls one may do (the two libraries' names are the same).
import ParleyBoringDTLS
import ParleyMedia

/// Which C library runs a process's DTLS: BoringSSL (DTLS 1.3 and 1.2) or OpenSSL (1.2 only).
public enum DTLSLibrary: String, CaseIterable, Sendable {
    case boringssl
    case openssl

    public func makeContext(certificate: DTLSCertificate, configuration: DTLSConfiguration = .init()) throws(DTLSError)
        -> any DTLSContext {
        switch self {
        case .boringssl: try BoringSSLDTLSContext(certificate: certificate, configuration: configuration)
        case .openssl: try OpenSSLDTLSContext(certificate: certificate, configuration: configuration)
        }
    }
}
