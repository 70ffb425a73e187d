import ParleyMedia
import ParleyWire

/// Where a session's client is, and how to reach it: directly, or through a relay's tunnel.
public struct PeerPath: Hashable, Sendable, CustomStringConvertible {
    /// The client's address as seen by whoever received its datagram (the relay, when relayed).
    public var client: TransportAddress
    /// The relay the datagram came through, when it did.
    public var relay: RelayHop?

    public init(client: TransportAddress, relay: RelayHop? = nil) {
        self.client = client
        self.relay = relay
    }

    public var description: String {
        relay.map { "\(client) via \($0.address)#\($0.ingressID)" } ?? "\(client)"
    }
}

/// A relay in front of a path: where to send tunnel datagrams, and the header fields to put on them.
public struct RelayHop: Hashable, Sendable {
    public var address: TransportAddress
    public var ingressID: UInt16
    public var transport: TunnelHeader.Transport

    public init(address: TransportAddress, ingressID: UInt16, transport: TunnelHeader.Transport) {
        self.address = address
        self.ingressID = ingressID
        self.transport = transport
    }
}

/// A datagram the session wants sent to its client along `path`.
public struct Transmit: Sendable {
    public var path: PeerPath
    public var bytes: [UInt8]
    /// Set when the datagram is one of the session's own checks: its answer carries no USERNAME,
    /// so whoever routes datagrams to sessions finds the session by this transaction id.
    public var check: STUNTransactionID?
}

/// Why a session ended.
public enum CloseReason: Equatable, Sendable, CustomStringConvertible {
    /// No authenticated ICE check arrived in time.
    case iceTimeout
    /// Consent freshness (RFC 7675): our checks went unanswered for the consent timeout.
    case consentExpired
    /// The client revoked consent (a 403 answer to our check, RFC 7675 §5.2).
    case consentRevoked
    /// Checks arrived, but no address they came from answered ours in time (path validation).
    case pathUnverified
    case dtlsFailed(DTLSError)
    case dtlsTimeout
    /// The client closed DTLS (close_notify).
    case peerClosed
    /// Ended through signaling (DELETE or hangup).
    case hangup
    /// The process is shutting down.
    case shutdown
    /// The agent ended the call.
    case agent(String)

    public var description: String {
        switch self {
        case .iceTimeout: "ice_timeout"
        case .consentExpired: "consent_expired"
        case .consentRevoked: "consent_revoked"
        case .pathUnverified: "path_unverified"
        case .dtlsFailed(let error): "dtls_failed: \(error)"
        case .dtlsTimeout: "dtls_timeout"
        case .peerClosed: "peer_closed"
        case .hangup: "hangup"
        case .shutdown: "shutdown"
        case .agent(let reason): "agent: \(reason)"
        }
    }

    /// A short label for metrics.
    public var label: String {
        switch self {
        case .dtlsFailed: "dtls_failed"
        case .agent: "agent"
        default: description
        }
    }
}

/// What a session reports to its owner.
public enum SessionEvent: Sendable, Equatable {
    /// The client's first check that authenticated (its USERNAME and MESSAGE-INTEGRITY hold the
    /// answer's credentials): someone who made the call is there. Work a bare POST must not cause
    /// (an external agent's connection) waits for this.
    case clientAuthenticated(PeerPath)
    /// The first authenticated, nominated ICE check: media can flow on `path`.
    case iceConnected(PeerPath)
    /// A nominated check from another address moved the session (e.g. Wi-Fi to cellular).
    case pathChanged(from: PeerPath, to: PeerPath)
    case dtlsConnected(SRTPProfile)
    /// New ICE credentials were installed (an ICE restart through signaling).
    case iceRestarted
    /// An Opus frame from the client (decrypted): its RTP timestamp, marker, and payload.
    case audio(timestamp: UInt32, sequenceNumber: UInt16, marker: Bool, payload: [UInt8])
    /// The client opened a data channel (or one we opened was acknowledged).
    case dataChannelOpened(id: UInt16, label: String)
    /// A whole data-channel message: text or binary, on its channel.
    case dataChannelMessage(id: UInt16, label: String, binary: Bool, payload: [UInt8])
    case dataChannelClosed(id: UInt16, label: String)
    /// The SCTP association under the data channels ended (the peer's SHUTDOWN or ABORT, or too many
    /// retransmissions); audio goes on.
    case dataChannelTransportClosed(reason: String)
    case closed(CloseReason)
}

/// Why a datagram was dropped; counted per reason.
public enum DropReason: String, CaseIterable, Sendable {
    case malformedSTUN = "malformed_stun"
    case unauthenticatedSTUN = "unauthenticated_stun"
    case badFingerprint = "bad_fingerprint"
    case unexpectedSTUN = "unexpected_stun"
    /// An authenticated check whose transaction id came before from another address: a replay.
    case replayedCheck = "replayed_check"
    /// DTLS or media from an address that has not answered our check (path validation).
    case unvalidatedSource = "unvalidated_source"
    /// An authenticated check from an address that has not answered ours, past what such an address
    /// gets answered (a few per round of validation, new addresses within the validation budget).
    case checkRefused = "check_refused"
    /// A STUN response that answers none of our outstanding checks from that address.
    case unmatchedResponse = "unmatched_stun_response"
    case mediaBeforeDTLS = "media_before_dtls"
    case srtpRejected = "srtp_rejected"
    case malformedRTP = "malformed_rtp"
    case malformedRTCP = "malformed_rtcp"
    case unknownPayloadType = "unknown_payload_type"
    case unknownProtocol = "unknown_protocol"
    /// A SPED attribute in an authenticated check that is not what the draft allows (a data value
    /// that is not a DTLS record, an acknowledgement that is not whole CRCs or lists more than four).
    case malformedSPED = "malformed_sped"
    case closed = "session_closed"
}

/// Timeouts of a session's lifecycle.
public struct SessionTimeouts: Sendable {
    /// From creation to the first authenticated check.
    public var ice: Duration = .seconds(30)
    /// RFC 7675: without an answer to our consent checks for this long, consent is lost.
    public var consent: Duration = .seconds(30)
    /// RFC 7675 §5.1: a consent check about this often (randomised by ±20 %).
    public var consentInterval: Duration = .seconds(5)
    /// From the first authenticated check to DTLS connected.
    public var dtls: Duration = .seconds(30)

    public init() {}
}

/// Counters a session keeps about itself (read by metrics and stats).
public struct SessionCounters: Sendable {
    public var datagramsReceived = 0
    public var datagramsSent = 0
    public var rtpReceived = 0
    public var rtpSent = 0
    public var rtcpReceived = 0
    public var rtcpSent = 0
    public var checksAnswered = 0
    /// Our own Binding requests (path validation and consent), and the answers they got.
    public var checksSent = 0
    public var checkResponses = 0
    public var checkErrors = 0
    public var iceRestarts = 0
    public var dataChannelMessagesReceived = 0
    public var dataChannelMessagesSent = 0
    /// SCTP and DCEP drops by reason (malformed chunks, unknown channels, oversized messages, …).
    public var dataChannelDrops: [String: Int] = [:]
    /// Why the data channels' SCTP association ended, once it has.
    public var dataChannelTransportClosed: String?
    /// How the association started: `snap` (INITs exchanged in SDP) or `handshake` (on the wire).
    public var dataChannelStart: String?
    /// How DTLS's handshake started: `sped` (the client's first DTLS datagram rode an ICE check)
    /// or `direct` (a DTLS datagram of its own).
    public var dtlsStart: String?
    /// The DTLS version the handshake agreed ("DTLS 1.3", "DTLS 1.2") and the library that ran it.
    public var dtlsVersion: String?
    public var dtlsLibrary: String?
    /// SPED: the client's DTLS datagrams that rode its checks, and ours that rode the answers.
    public var dtlsInSTUNReceived = 0
    public var dtlsInSTUNSent = 0
    public var drops: [DropReason: Int] = [:]
    /// Round trip of the latest of our checks the client answered (sent once): it seeds DTLS's and
    /// SCTP's retransmission timers.
    public var iceRoundTripTime: Duration?
    /// Round-trip time from the client's last receiver report about our stream.
    public var roundTripTime: Duration?

    public init() {}
}
