// The DTLS interface, its value types and the certificate are ParleyDTLS's (no C library); this
// module's users get them with ParleyMedia.
@_exported import ParleyDTLS
internal import COpenSSL
internal import CParleyShims
import ParleyWire

/// An SSL_CTX with Parley's certificate and DTLS 1.2 settings (Debian's OpenSSL 3.0 has no DTLS 1.3);
/// makes one `OpenSSLDTLSConnection` per session. OpenSSL allows concurrent SSL_new on one context,
/// so every worker thread shares it.
public final class OpenSSLDTLSContext: DTLSContext, @unchecked Sendable {
    let context: OpaquePointer
    public let certificate: DTLSCertificate
    public let configuration: DTLSConfiguration

    public init(certificate: DTLSCertificate, configuration: DTLSConfiguration = .init()) throws(DTLSError) {
        guard let context = SSL_CTX_new(DTLS_method()) else { throw .setup("SSL_CTX_new: \(openSSLErrorDescription())") }
        self.context = context
        self.certificate = certificate
        self.configuration = configuration
        let profiles = configuration.srtpProfiles.map(\.dtlsSRTPName).joined(separator: ":")
        guard parley_ssl_ctx_set_min_proto_dtls12(context) == 1,
              parley_ssl_ctx_set_max_proto_dtls12(context) == 1,
              SSL_CTX_use_certificate_ASN1(context, Int32(clamping: certificate.certificateDER.count), certificate.certificateDER) == 1,
              SSL_CTX_use_PrivateKey_ASN1(EVP_PKEY_EC, context, certificate.privateKeyDER, certificate.privateKeyDER.count) == 1,
              SSL_CTX_check_private_key(context) == 1,
              SSL_CTX_set_tlsext_use_srtp(context, profiles) == 0 else {
            // Every stored property is set, so deinit runs and frees the context.
            throw .setup("SSL_CTX configuration: \(openSSLErrorDescription())")
        }
        // No renegotiation: the peer's certificate is checked against its fingerprint once.
        _ = SSL_CTX_set_options(context, parley_ssl_op_no_query_mtu() | parley_ssl_op_no_renegotiation())
        // WebRTC certificates are self-signed: accept any chain here, then compare the peer's
        // certificate with the fingerprint from its SDP once the handshake completes.
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT) { _, _ in 1 }
    }

    deinit { SSL_CTX_free(context) }

    public var library: String { "openssl" }

    public func makeConnection(role: DTLSRole, remoteFingerprints: [CertificateFingerprint], mtu: Int?) throws(DTLSError)
        -> any DTLSConnection {
        try OpenSSLDTLSConnection(context: self, role: role, remoteFingerprints: remoteFingerprints, mtu: mtu)
    }
}

/// One DTLS 1.2 connection on OpenSSL (see `DTLSConnection`).
public final class OpenSSLDTLSConnection: DTLSConnection {
    public let role: Role
    public private(set) var state: State = .handshaking
    /// The SRTP keys, once connected.
    public private(set) var srtpKeys: SRTPKeyMaterial?
    public private(set) var handshakeRetransmissions = 0

    private let ssl: OpaquePointer
    private let readBIO: OpaquePointer
    private let remoteFingerprints: [CertificateFingerprint]
    private let maximumRetransmitDelay: Duration
    private var outgoing: [[UInt8]] = []
    private var applicationData: [[UInt8]] = []

    /// `mtu` overrides the context's for this connection's handshake datagrams (SPED's ride STUN
    /// messages, whose attributes take their share of the path's MTU).
    public init(context: OpenSSLDTLSContext, role: Role, remoteFingerprints: [CertificateFingerprint], mtu: Int? = nil) throws(DTLSError) {
        guard let ssl = SSL_new(context.context) else { throw .setup("SSL_new: \(openSSLErrorDescription())") }
        guard let readBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw .setup("BIO_new")
        }
        self.ssl = ssl
        self.readBIO = readBIO
        self.role = role
        self.remoteFingerprints = remoteFingerprints
        maximumRetransmitDelay = context.configuration.maximumRetransmitDelay
        _ = parley_bio_set_mem_eof_return(readBIO, -1)
        let sink: parley_datagram_sink = { context, bytes, length in
            guard let context, let bytes else { return }
            let connection = Unmanaged<OpenSSLDTLSConnection>.fromOpaque(context).takeUnretainedValue()
            connection.outgoing.append(Array(UnsafeBufferPointer(start: bytes, count: length)))
        }
        // The BIO holds an unretained pointer to self; it lives inside `ssl`, which self frees in deinit.
        guard let writeBIO = parley_bio_datagram_writer_new(sink, Unmanaged.passUnretained(self).toOpaque()) else {
            BIO_free(readBIO)  // not yet owned by `ssl`, which deinit frees
            throw .setup("datagram BIO")
        }
        SSL_set_bio(ssl, readBIO, writeBIO)
        _ = parley_dtls_set_link_mtu(ssl, mtu ?? context.configuration.mtu)
        _ = parley_dtls_set_retransmit_schedule(
            ssl, UInt32(clamping: context.configuration.initialRetransmitDelay.microseconds),
            UInt32(clamping: context.configuration.maximumRetransmitDelay.microseconds))
        switch role {
        case .client: SSL_set_connect_state(ssl)
        case .server: SSL_set_accept_state(ssl)
        }
    }

    deinit { SSL_free(ssl) }

    /// OpenSSL 3.0 keeps DTLS timers on its own clock, the one piece of a session that does not run
    /// on the caller's clock (docs/architecture.md).
    public func advanceClock(to now: Instant) {}

    public var version: DTLSVersion? { state == .connected ? .dtls1_2 : nil }

    public func start() {
        if role == .client { advanceHandshake() }
    }

    public func receive(_ datagram: UnsafeRawBufferPointer) {
        guard state == .handshaking || state == .connected, let base = datagram.baseAddress, !datagram.isEmpty else { return }
        _ = BIO_write(readBIO, base, Int32(clamping: datagram.count))
        if state == .handshaking { advanceHandshake() }
        if state == .connected { readApplicationData() }
        // Whatever the handshake or reads left unread (a stray or undecryptable record) is dropped,
        // so the next datagram starts on a record boundary.
        _ = BIO_ctrl(readBIO, BIO_CTRL_RESET, 0, nil)
    }

    /// OpenSSL runs no timer once connected: under DTLS 1.2 the server's last flight is answered by
    /// the client's retransmission, not by a timer.
    public var retransmitDelay: Duration? {
        guard state == .handshaking else { return nil }
        let milliseconds = parley_dtls_timeout_ms(ssl)
        return milliseconds < 0 ? nil : .milliseconds(milliseconds)
    }

    public func seedRoundTrip(_ roundTrip: Duration) {
        guard state == .handshaking, roundTrip > .zero else { return }
        let initial = Self.seededRetransmitDelay(roundTrip: roundTrip)
        _ = parley_dtls_set_retransmit_schedule(
            ssl, UInt32(clamping: initial.microseconds), UInt32(clamping: maximumRetransmitDelay.microseconds))
    }

    public func handleTimeout() {
        guard state == .handshaking else { return }
        ERR_clear_error()
        let result = parley_dtls_handle_timeout(ssl)
        if result > 0 {
            handshakeRetransmissions += 1
        } else if result < 0 {
            state = .failed(.handshake("retransmission: \(openSSLErrorDescription())"))
        }
    }

    public func takeOutgoing() -> [[UInt8]] {
        defer { outgoing.removeAll(keepingCapacity: true) }
        return outgoing
    }

    public func takeApplicationData() -> [[UInt8]] {
        defer { applicationData.removeAll(keepingCapacity: true) }
        return applicationData
    }

    public func send(_ data: UnsafeRawBufferPointer) -> Bool {
        guard state == .connected, let base = data.baseAddress else { return false }
        ERR_clear_error()
        guard data.count <= 16_384 else { return false }  // one DTLS record at most
        return SSL_write(ssl, base, Int32(truncatingIfNeeded: data.count)) == Int32(truncatingIfNeeded: data.count)
    }

    public func close() {
        guard state == .connected || state == .handshaking else { return }
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        state = .closed
    }

    private func advanceHandshake() {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            finishHandshake()
            return
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: break
        case SSL_ERROR_ZERO_RETURN: state = .closed
        default: state = .failed(.handshake(openSSLErrorDescription()))
        }
    }

    private func finishHandshake() {
        guard let peer = SSL_get1_peer_certificate(ssl) else {
            fail(.noPeerCertificate)
            return
        }
        defer { X509_free(peer) }
        guard let der = Self.der(of: peer), DTLSCertificate.matches(der: der, anyOf: remoteFingerprints) else {
            fail(.fingerprintMismatch)
            return
        }
        guard let selected = SSL_get_selected_srtp_profile(ssl),
              let profile = SRTPProfile(dtlsSRTPID: UInt(selected.pointee.id)) else {
            fail(.noSRTPProfile)
            return
        }
        var material = [UInt8](repeating: 0, count: 2 * (profile.keyLength + profile.saltLength))
        let label = SRTPKeyMaterial.exporterLabel
        guard SSL_export_keying_material(ssl, &material, material.count, label, label.utf8.count, nil, 0, 0) == 1,
              let keys = SRTPKeyMaterial(profile: profile, exported: material, isClient: role == .client) else {
            fail(.handshake("keying material export: \(openSSLErrorDescription())"))
            return
        }
        srtpKeys = keys
        state = .connected
    }

    /// A certificate's DER encoding.
    private static func der(of certificate: OpaquePointer) -> [UInt8]? {
        let length = i2d_X509(certificate, nil)
        guard length > 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        let written = bytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_X509(certificate, &cursor)
        }
        return written == length ? bytes : nil
    }

    private func fail(_ error: DTLSError) {
        state = .failed(error)
        // Tell the peer at once instead of letting it retransmit into silence.
        _ = SSL_shutdown(ssl)
    }

    private func readApplicationData() {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            ERR_clear_error()
            let read = SSL_read(ssl, &buffer, Int32(truncatingIfNeeded: buffer.count))  // 16 KiB
            if read > 0 {
                applicationData.append(Array(buffer[0..<Int(read)]))
                continue
            }
            switch SSL_get_error(ssl, read) {
            case SSL_ERROR_ZERO_RETURN: state = .closed
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: break
            default: break  // A record that does not authenticate is dropped; the connection lives on.
            }
            return
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
