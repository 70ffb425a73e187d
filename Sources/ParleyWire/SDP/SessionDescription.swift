/// An SDP session description (RFC 8866) as WebRTC uses it (RFC 9429): the lines WebRTC gives
/// meaning to are typed fields; every other attribute is kept in `otherAttributes`, in order.
public struct SessionDescription: Sendable, Equatable {
    public var origin: Origin
    public var sessionName: String
    public var timing: String
    public var connection: String?
    /// `a=ice-lite`.
    public var iceLite: Bool
    public var iceUfrag: String?
    public var icePassword: String?
    public var iceOptions: [String]
    public var fingerprints: [CertificateFingerprint]
    public var setup: DTLSSetupRole?
    public var direction: MediaDirection?
    public var groups: [MediaGroup]
    public var extmapAllowMixed: Bool
    public var otherAttributes: [SDPAttribute]
    public var media: [MediaDescription]

    public init(origin: Origin, sessionName: String = "-", timing: String = "0 0", connection: String? = nil,
                iceLite: Bool = false, iceUfrag: String? = nil, icePassword: String? = nil, iceOptions: [String] = [],
                fingerprints: [CertificateFingerprint] = [], setup: DTLSSetupRole? = nil, direction: MediaDirection? = nil,
                groups: [MediaGroup] = [], extmapAllowMixed: Bool = false, otherAttributes: [SDPAttribute] = [],
                media: [MediaDescription] = []) {
        self.origin = origin
        self.sessionName = sessionName
        self.timing = timing
        self.connection = connection
        self.iceLite = iceLite
        self.iceUfrag = iceUfrag
        self.icePassword = icePassword
        self.iceOptions = iceOptions
        self.fingerprints = fingerprints
        self.setup = setup
        self.direction = direction
        self.groups = groups
        self.extmapAllowMixed = extmapAllowMixed
        self.otherAttributes = otherAttributes
        self.media = media
    }

    /// `o=<username> <sess-id> <sess-version> IN <IP4|IP6> <address>`.
    public struct Origin: Sendable, Equatable {
        public var username: String
        public var sessionID: String
        public var sessionVersion: UInt64
        public var addressType: String
        public var address: String

        public init(username: String = "-", sessionID: String, sessionVersion: UInt64 = 2,
                    addressType: String = "IP4", address: String = "127.0.0.1") {
            self.username = username
            self.sessionID = sessionID
            self.sessionVersion = sessionVersion
            self.addressType = addressType
            self.address = address
        }
    }

    /// The mids of the first BUNDLE group (RFC 9143), empty when the description bundles nothing.
    public var bundleMids: [String] { groups.first { $0.semantics == "BUNDLE" }?.mids ?? [] }

    public func media(mid: String) -> MediaDescription? { media.first { $0.mid == mid } }
}

/// One `m=` section and its lines.
public struct MediaDescription: Sendable, Equatable {
    /// `audio`, `video`, `application`, …
    public var kind: String
    public var port: UInt16
    public var portCount: Int?
    /// `UDP/TLS/RTP/SAVPF`, `UDP/DTLS/SCTP`, …
    public var proto: String
    /// Payload types for RTP, or `webrtc-datachannel` for data channels.
    public var formats: [String]
    public var connection: String?
    public var bandwidths: [String]
    public var mid: String?
    public var iceUfrag: String?
    public var icePassword: String?
    public var iceOptions: [String]
    public var fingerprints: [CertificateFingerprint]
    public var setup: DTLSSetupRole?
    public var direction: MediaDirection?
    public var rtcpMux: Bool
    public var rtcpReducedSize: Bool
    /// Codecs in the order of the m-line's formats (formats without `a=rtpmap` are left out,
    /// except the static payload types 0 and 8 which imply PCMU and PCMA).
    public var codecs: [RTPCodec]
    public var headerExtensions: [RTPHeaderExtension]
    public var ssrcs: [SSRCAttribute]
    public var ssrcGroups: [SSRCGroup]
    public var msid: String?
    public var candidates: [ICECandidate]
    public var endOfCandidates: Bool
    public var sctpPort: Int?
    public var maxMessageSize: Int?
    /// SNAP's `a=sctp-init` (draft-hancke-tsvwg-snap): an SCTP INIT chunk in base64, checked here
    /// only for its alphabet and size (the SCTP layer decodes it).
    public var sctpInit: String?
    public var otherAttributes: [SDPAttribute]

    public init(kind: String, port: UInt16 = 9, portCount: Int? = nil, proto: String, formats: [String],
                connection: String? = nil, bandwidths: [String] = [], mid: String? = nil, iceUfrag: String? = nil,
                icePassword: String? = nil, iceOptions: [String] = [], fingerprints: [CertificateFingerprint] = [],
                setup: DTLSSetupRole? = nil, direction: MediaDirection? = nil, rtcpMux: Bool = false,
                rtcpReducedSize: Bool = false, codecs: [RTPCodec] = [], headerExtensions: [RTPHeaderExtension] = [],
                ssrcs: [SSRCAttribute] = [], ssrcGroups: [SSRCGroup] = [], msid: String? = nil,
                candidates: [ICECandidate] = [], endOfCandidates: Bool = false, sctpPort: Int? = nil,
                maxMessageSize: Int? = nil, sctpInit: String? = nil, otherAttributes: [SDPAttribute] = []) {
        self.kind = kind
        self.port = port
        self.portCount = portCount
        self.proto = proto
        self.formats = formats
        self.connection = connection
        self.bandwidths = bandwidths
        self.mid = mid
        self.iceUfrag = iceUfrag
        self.icePassword = icePassword
        self.iceOptions = iceOptions
        self.fingerprints = fingerprints
        self.setup = setup
        self.direction = direction
        self.rtcpMux = rtcpMux
        self.rtcpReducedSize = rtcpReducedSize
        self.codecs = codecs
        self.headerExtensions = headerExtensions
        self.ssrcs = ssrcs
        self.ssrcGroups = ssrcGroups
        self.msid = msid
        self.candidates = candidates
        self.endOfCandidates = endOfCandidates
        self.sctpPort = sctpPort
        self.maxMessageSize = maxMessageSize
        self.sctpInit = sctpInit
        self.otherAttributes = otherAttributes
    }

    public var isRTP: Bool { proto.uppercased().contains("RTP") }
    /// An SCTP-over-DTLS data channel section (RFC 8841).
    public var isDataChannel: Bool { kind == "application" && proto.uppercased().hasSuffix("SCTP") && formats == ["webrtc-datachannel"] }
    /// Port 0 marks a section the answerer rejected (or the offerer stopped).
    public var isRejected: Bool { port == 0 }

    public func codec(payloadType: UInt8) -> RTPCodec? { codecs.first { $0.payloadType == payloadType } }

    /// The first SSRC that carries a `cname`.
    public var primarySSRC: UInt32? { ssrcs.first { $0.name == "cname" }?.ssrc ?? ssrcs.first?.ssrc }
}

extension SessionDescription {
    /// ICE credentials of a section: its own, else the session's (RFC 8839 §5.4).
    public func iceCredentials(for media: MediaDescription) -> (ufrag: String, password: String)? {
        guard let ufrag = media.iceUfrag ?? iceUfrag, let password = media.icePassword ?? icePassword else { return nil }
        return (ufrag, password)
    }

    /// Certificate fingerprints of a section: its own, else the session's (RFC 8122 §5).
    public func fingerprints(for media: MediaDescription) -> [CertificateFingerprint] {
        media.fingerprints.isEmpty ? fingerprints : media.fingerprints
    }

    public func setup(for media: MediaDescription) -> DTLSSetupRole? { media.setup ?? setup }

    public func direction(for media: MediaDescription) -> MediaDirection { media.direction ?? direction ?? .sendrecv }
}
