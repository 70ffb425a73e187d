import ParleyWire

/// Settings shared by every DTLS connection of a process, whichever library runs them.
public struct DTLSConfiguration: Sendable {
    /// First retransmission delay of a lost flight; doubles per retry up to `maximumRetransmitDelay`.
    /// Shorter than OpenSSL's 1 s default: call setup time is what a voice agent is judged on.
    public var initialRetransmitDelay: Duration = .milliseconds(400)
    /// OpenSSL's cap on the doubling (BoringSSL keeps its own, 60 s; a session's DTLS deadline ends
    /// a handshake long before either).
    public var maximumRetransmitDelay: Duration = .seconds(8)
    /// Largest datagram DTLS writes (1200 fits any path WebRTC is used on, tunnel header included).
    public var mtu = 1200
    /// SRTP profiles in preference order: the server's order decides (RFC 5764 §4.1.2).
    public var srtpProfiles: [SRTPProfile] = [.aeadAES128GCM, .aes128CMHMACSHA1_80]

    public init() {}
}

/// A DTLS protocol version a handshake agreed.
public enum DTLSVersion: Sendable, Equatable, CustomStringConvertible {
    case dtls1_2
    case dtls1_3

    /// The version's number on the wire (RFC 6347, RFC 9147): 0xFEFD, 0xFEFC.
    public var wireValue: UInt16 { self == .dtls1_2 ? 0xFEFD : 0xFEFC }

    public init?(wireValue: Int32) {
        switch wireValue {
        case 0xFEFD: self = .dtls1_2
        case 0xFEFC: self = .dtls1_3
        default: return nil
        }
    }

    public var description: String { self == .dtls1_2 ? "DTLS 1.2" : "DTLS 1.3" }
}

public enum DTLSRole: Sendable { case client, server }

public enum DTLSState: Equatable, Sendable {
    case handshaking
    case connected
    case failed(DTLSError)
    /// The peer sent close_notify, or `close()` was called.
    case closed
}

/// What makes a process's DTLS connections: one certificate, one configuration, one C library
/// (OpenSSL for DTLS 1.2 in ParleyMedia, BoringSSL for 1.3 and 1.2 in ParleyBoringDTLS). Shared
/// by every worker thread; the connections it makes are each confined to one.
public protocol DTLSContext: AnyObject, Sendable {
    var certificate: DTLSCertificate { get }
    var configuration: DTLSConfiguration { get }
    /// The library behind the connections, for logs and a call's status ("openssl", "boringssl").
    var library: String { get }
    /// A new connection. `mtu` overrides the configuration's for its handshake datagrams (SPED's ride
    /// STUN messages, whose attributes take their share of the path's MTU).
    func makeConnection(role: DTLSRole, remoteFingerprints: [CertificateFingerprint], mtu: Int?) throws(DTLSError)
        -> any DTLSConnection
}

extension DTLSContext {
    public func makeConnection(role: DTLSRole, remoteFingerprints: [CertificateFingerprint]) throws(DTLSError)
        -> any DTLSConnection {
        try makeConnection(role: role, remoteFingerprints: remoteFingerprints, mtu: nil)
    }
}

/// One DTLS connection over datagrams, sans-IO: feed it received records with `receive`, send what
/// `takeOutgoing` returns, and call `handleTimeout` when `retransmitDelay` has passed. Confined to one
/// thread (the session's worker). The peer's certificate is accepted only if it hashes to one of the
/// fingerprints its SDP announced; the SRTP keys are ready once `state` is `.connected`.
public protocol DTLSConnection: AnyObject {
    typealias Role = DTLSRole
    typealias State = DTLSState

    var role: DTLSRole { get }
    var state: DTLSState { get }
    /// The SRTP keys, once connected.
    var srtpKeys: SRTPKeyMaterial? { get }
    /// The version the handshake agreed, once connected.
    var version: DTLSVersion? { get }
    var handshakeRetransmissions: Int { get }

    /// The caller's clock, for the library's timers where it takes one (BoringSSL); OpenSSL 3.0 reads
    /// its own. Call it with the time of each input before the input, from the connection's first
    /// use on: until then BoringSSL's timers read the monotonic clock (production's instants are
    /// that clock, a test's virtual ones are not).
    func advanceClock(to now: Instant)
    /// Starts the handshake. A client writes its ClientHello; a server waits for one.
    func start()
    /// Takes one received DTLS datagram. Application data it carries is returned by `takeApplicationData`.
    func receive(_ datagram: UnsafeRawBufferPointer)
    /// Time until the library wants `handleTimeout` (a flight to retransmit, or under DTLS 1.3 an
    /// unacknowledged last flight after the handshake), or nil when no timer runs.
    var retransmitDelay: Duration? { get }
    /// Seeds the handshake's retransmission timer from a measured round trip (ICE's, as
    /// draft-uberti-tsvwg-warp says): twice the round trip within 50 ms–3 s. It applies from the
    /// next flight sent.
    func seedRoundTrip(_ roundTrip: Duration)
    /// Retransmits what is due if its timer has expired.
    func handleTimeout()
    /// Datagrams to send, in order; the queue is emptied.
    func takeOutgoing() -> [[UInt8]]
    /// Application data received since the last call, one element per record.
    func takeApplicationData() -> [[UInt8]]
    /// Sends application data (one record) once connected.
    func send(_ data: UnsafeRawBufferPointer) -> Bool
    /// Sends close_notify and stops.
    func close()
}

extension DTLSConnection {
    /// The first retransmission delay `seedRoundTrip` sets: libwebrtc's rule, twice the round trip
    /// within 50 ms–3 s (OpenSSL's timer is coarse below that).
    public static func seededRetransmitDelay(roundTrip: Duration) -> Duration {
        min(max(roundTrip * 2, .milliseconds(50)), .seconds(3))
    }
}

extension Duration {
    /// The duration in whole microseconds, saturating.
    public var microseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, sumOverflow) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000_000)
        return sumOverflow ? (seconds < 0 ? .min : .max) : sum
    }
}
