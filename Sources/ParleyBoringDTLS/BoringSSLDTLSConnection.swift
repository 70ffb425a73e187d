// DTLS 1.3 (RFC 9147), and 1.2 for clients that offer no more, on the BoringSSL that swift-nio-ssl
// vendors: Debian's OpenSSL 3.0 has no DTLS 1.3 and its wolfSSL neither DTLS 1.3 nor DTLS-SRTP
// (docs/warp-research.md §4). This is the one Parley module that imports BoringSSL; it never imports
// OpenSSL (their names are the same, and a call would silently bind to the other library).
//
// `CNIOBoringSSL` is an internal target of swift-nio-ssl, reached through the `NIOSSL` product this
// module depends on (docs/dtls.md says why that is acceptable and what would replace it).
internal import CNIOBoringSSL
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import ParleyDTLS
import ParleyWire

/// An SSL_CTX on BoringSSL with Parley's certificate: DTLS 1.2 to `maximumVersion` (1.3 by default),
/// DTLS-SRTP, no session tickets, and the caller's clock for the library's timers. BoringSSL allows
/// concurrent SSL_new on one context, so every worker thread shares it.
public final class BoringSSLDTLSContext: DTLSContext, @unchecked Sendable {
    let context: OpaquePointer
    public let certificate: DTLSCertificate
    public let configuration: DTLSConfiguration
    public let maximumVersion: DTLSVersion

    public init(certificate: DTLSCertificate, configuration: DTLSConfiguration = .init(),
                maximumVersion: DTLSVersion = .dtls1_3) throws(DTLSError) {
        guard let context = SSL_CTX_new(DTLS_method()) else { throw .setup("SSL_CTX_new: \(boringSSLErrorDescription())") }
        self.context = context
        self.certificate = certificate
        self.configuration = configuration
        self.maximumVersion = maximumVersion
        let profiles = configuration.srtpProfiles.map(\.dtlsSRTPName).joined(separator: ":")
        let loaded = certificate.certificateDER.withUnsafeBufferPointer { der in
            SSL_CTX_use_certificate_ASN1(context, der.count, der.baseAddress)
        } == 1 && certificate.privateKeyDER.withUnsafeBufferPointer { der in
            SSL_CTX_use_PrivateKey_ASN1(EVP_PKEY_EC, context, der.baseAddress, der.count)
        } == 1
        guard loaded, SSL_CTX_check_private_key(context) == 1,
              SSL_CTX_set_min_proto_version(context, UInt16(DTLS1_2_VERSION)) == 1,
              SSL_CTX_set_max_proto_version(context, maximumVersion.wireValue) == 1,
              SSL_CTX_set_srtp_profiles(context, profiles) == 1,
              // A session is one call: nothing to resume, so no NewSessionTicket after a 1.3
              // handshake (each would cost a record and an ACK on a path still starting up).
              SSL_CTX_set_num_tickets(context, 0) == 1 else {
            // Every stored property is set, so deinit runs and frees the context.
            throw .setup("SSL_CTX configuration: \(boringSSLErrorDescription())")
        }
        _ = SSL_CTX_set_options(context, UInt32(truncatingIfNeeded: SSL_OP_NO_QUERY_MTU | SSL_OP_NO_TICKET))
        _ = SSL_CTX_set_session_cache_mode(context, Int32(SSL_SESS_CACHE_OFF))
        // WebRTC certificates are self-signed: accept any chain here, then compare the peer's
        // certificate with the fingerprint from its SDP once the handshake completes.
        SSL_CTX_set_custom_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT) { _, _ in ssl_verify_ok }
        SSL_CTX_set_current_time_cb(context) { _, clock in
            guard let clock else { return }
            clock.pointee = CallerClock.current()
        }
    }

    deinit { SSL_CTX_free(context) }

    public var library: String { "boringssl" }

    public func makeConnection(role: DTLSRole, remoteFingerprints: [CertificateFingerprint], mtu: Int?) throws(DTLSError)
        -> any DTLSConnection {
        try BoringSSLDTLSConnection(context: self, role: role, remoteFingerprints: remoteFingerprints, mtu: mtu)
    }
}

/// One DTLS 1.3 or 1.2 connection on BoringSSL (see `DTLSConnection`).
public final class BoringSSLDTLSConnection: DTLSConnection {
    public let role: DTLSRole
    public private(set) var state: DTLSState = .handshaking
    public private(set) var srtpKeys: SRTPKeyMaterial?
    public private(set) var version: DTLSVersion?
    /// Timer firings that resent something: the handshake's flights, and under DTLS 1.3 the last
    /// flight or an ACK after it.
    public private(set) var handshakeRetransmissions = 0

    private let ssl: OpaquePointer
    private let readBIO: OpaquePointer
    private let remoteFingerprints: [CertificateFingerprint]
    /// The caller's time of the current input; BoringSSL reads it through the context's time callback.
    private var now: Instant?
    private var outgoing: [[UInt8]] = []
    private var applicationData: [[UInt8]] = []

    public init(context: BoringSSLDTLSContext, role: DTLSRole, remoteFingerprints: [CertificateFingerprint],
                mtu: Int? = nil) throws(DTLSError) {
        guard let ssl = SSL_new(context.context) else { throw .setup("SSL_new: \(boringSSLErrorDescription())") }
        guard let readBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw .setup("BIO_new")
        }
        self.ssl = ssl
        self.readBIO = readBIO
        self.role = role
        self.remoteFingerprints = remoteFingerprints
        // An empty read BIO means "no more for now", not end of file.
        _ = BIO_set_mem_eof_return(readBIO, -1)
        guard let method = DatagramWriter.method, let writeBIO = BIO_new(method) else {
            BIO_free(readBIO)  // not yet owned by `ssl`, which deinit frees
            throw .setup("datagram BIO")
        }
        // The BIO holds an unretained pointer to self; it lives inside `ssl`, which self frees in deinit.
        BIO_set_data(writeBIO, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(writeBIO, 1)
        SSL_set_bio(ssl, readBIO, writeBIO)
        _ = SSL_set_mtu(ssl, UInt32(clamping: mtu ?? context.configuration.mtu))
        DTLSv1_set_initial_timeout_duration(
            ssl, UInt32(clamping: context.configuration.initialRetransmitDelay.microseconds / 1000))
        switch role {
        case .client: SSL_set_connect_state(ssl)
        case .server: SSL_set_accept_state(ssl)
        }
    }

    deinit { SSL_free(ssl) }

    public func advanceClock(to now: Instant) { self.now = now }

    public func start() {
        if role == .client { withClock { advanceHandshake() } }
    }

    public func receive(_ datagram: UnsafeRawBufferPointer) {
        guard state == .handshaking || state == .connected, let base = datagram.baseAddress, !datagram.isEmpty else { return }
        withClock {
            _ = BIO_write(readBIO, base, Int32(clamping: datagram.count))
            if state == .handshaking { advanceHandshake() }
            if state == .connected { readApplicationData() }
            // Whatever the handshake or reads left unread (a stray or undecryptable record) is
            // dropped, so the next datagram starts on a record boundary.
            _ = BIO_reset(readBIO)
        }
    }

    /// BoringSSL runs timers after the handshake too: under DTLS 1.3 the client's last flight waits
    /// for the server's ACK (RFC 9147 §5.8.4).
    public var retransmitDelay: Duration? {
        guard state == .handshaking || state == .connected else { return nil }
        return withClock {
            var remaining = timeval()
            guard DTLSv1_get_timeout(ssl, &remaining) == 1 else { return nil }
            return .seconds(Int64(remaining.tv_sec)) + .microseconds(Int64(remaining.tv_usec))
        }
    }

    public func seedRoundTrip(_ roundTrip: Duration) {
        guard state == .handshaking, roundTrip > .zero else { return }
        let initial = Self.seededRetransmitDelay(roundTrip: roundTrip)
        withClock { DTLSv1_set_initial_timeout_duration(ssl, UInt32(clamping: initial.microseconds / 1000)) }
    }

    public func handleTimeout() {
        guard state == .handshaking || state == .connected else { return }
        withClock {
            ERR_clear_error()
            let result = DTLSv1_handle_timeout(ssl)
            if result > 0 {
                handshakeRetransmissions += 1
            } else if result < 0 {
                // During the handshake, or after it under DTLS 1.3 when the peer never acknowledged
                // the last flight: BoringSSL then reads nothing more (it keeps trying to flush the
                // flight first), so the connection is dead either way.
                state = .failed(.handshake("retransmission: \(boringSSLErrorDescription())"))
            }
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
        guard data.count <= 16_384 else { return false }  // one DTLS record at most
        return withClock {
            ERR_clear_error()
            return SSL_write(ssl, base, Int32(truncatingIfNeeded: data.count)) == Int32(truncatingIfNeeded: data.count)
        }
    }

    public func close() {
        guard state == .connected || state == .handshaking else { return }
        withClock {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
        }
        state = .closed
    }

    /// Runs `body` with BoringSSL's clock set to this connection's input time.
    private func withClock<Result>(_ body: () -> Result) -> Result {
        CallerClock.set(now)
        defer { CallerClock.set(nil) }
        return body()
    }

    fileprivate func emit(_ bytes: UnsafeRawBufferPointer) {
        outgoing.append(Array(bytes))
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
        default: state = .failed(.handshake(boringSSLErrorDescription()))
        }
    }

    private func finishHandshake() {
        guard let peer = SSL_get_peer_certificate(ssl) else {
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
            fail(.handshake("keying material export: \(boringSSLErrorDescription())"))
            return
        }
        srtpKeys = keys
        version = DTLSVersion(wireValue: SSL_version(ssl))
        state = .connected
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
            default: break  // A record that does not authenticate is dropped; the connection lives on.
            }
            return
        }
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
}

/// A write BIO that hands each datagram BoringSSL writes to its connection, one `BIO_write` per
/// datagram (a memory BIO would glue a flight's datagrams into one blob).
private enum DatagramWriter {
    nonisolated(unsafe) static let method: OpaquePointer? = {
        guard let method = BIO_meth_new(0, "parley datagram writer") else { return nil }
        _ = BIO_meth_set_write(method) { bio, bytes, length in
            guard let bio, let bytes, length > 0, let context = BIO_get_data(bio) else { return 0 }
            let connection = Unmanaged<BoringSSLDTLSConnection>.fromOpaque(context).takeUnretainedValue()
            connection.emit(UnsafeRawBufferPointer(start: bytes, count: Int(length)))
            return length
        }
        // Flushes are no-ops (each write is already a whole datagram); every other control is unsupported.
        _ = BIO_meth_set_ctrl(method) { _, command, _, _ in command == BIO_CTRL_FLUSH ? 1 : 0 }
        return method
    }()
}

/// The time BoringSSL's context callback reports: the input time of the connection calling into
/// BoringSSL on this thread, or the system's monotonic clock outside such a call. Per thread, because
/// BoringSSL passes the callback no connection, and a connection is confined to its worker's thread.
enum CallerClock {
    /// Instants from an arbitrary origin may be negative; BoringSSL wants a non-negative time, so
    /// they are shifted by about 31 years (a clock earlier than that would stand still at zero;
    /// CLOCK_MONOTONIC, which production's instants are, starts at boot).
    private static let origin = Duration.seconds(1_000_000_000)

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // Without a key the slot would be another library's thread-local: nothing sane to do.
        guard pthread_key_create(&key, { free($0) }) == 0 else { fatalError("pthread_key_create failed") }
        return key
    }()

    /// The slot of this thread: nil means "no connection is calling".
    private static func slot() -> UnsafeMutablePointer<Int64?> {
        if let existing = pthread_getspecific(key) { return existing.assumingMemoryBound(to: Int64?.self) }
        // malloc'd, as the key's destructor frees it when the thread ends.
        guard let raw = malloc(MemoryLayout<Int64?>.size) else { fatalError("out of memory") }
        let slot = raw.bindMemory(to: Int64?.self, capacity: 1)
        slot.initialize(to: nil)
        pthread_setspecific(key, slot)
        return slot
    }

    static func set(_ now: Instant?) { slot().pointee = now?.nanoseconds }

    static func current() -> timeval {
        let nanoseconds: Int64
        if let now = slot().pointee {
            nanoseconds = now
        } else {
            var monotonic = timespec()
            clock_gettime(CLOCK_MONOTONIC, &monotonic)
            nanoseconds = Int64(monotonic.tv_sec) &* 1_000_000_000 &+ Int64(monotonic.tv_nsec)
        }
        let shifted = max(0, nanoseconds &+ origin.nanoseconds)
        return timeval(tv_sec: Int(shifted / 1_000_000_000), tv_usec: Int(shifted % 1_000_000_000 / 1000))
    }
}

/// BoringSSL's queued error, as text, emptying the queue.
func boringSSLErrorDescription() -> String {
    var reasons: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return reasons.isEmpty ? "unknown error" : reasons.joined(separator: "; ")
}
