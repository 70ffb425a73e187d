/// What the answering side brings to an answer: its ICE credentials, certificate, candidates and
/// the stream it will send on.
public struct AnswerParameters: Sendable {
    public var iceUfrag: String
    public var icePassword: String
    public var fingerprint: CertificateFingerprint
    /// Where the client should send: the relay (or transceiver) addresses, most preferred first.
    public var candidates: [ICECandidate]
    public var sessionID: UInt64
    /// The SSRC and CNAME of the audio Parley sends.
    public var audioSSRC: UInt32
    public var cname: String
    /// Opus parameters Parley asks for (RFC 7587 §7).
    public var opusParameters: String
    /// The largest data-channel message Parley accepts (RFC 8841 §6).
    public var maxMessageSize: Int
    public var sctpPort: Int
    /// Parley's own SCTP INIT for SNAP (base64), put in the answer only when the offer carried one.
    public var sctpInit: String?
    /// Whether Parley answers SPED (DTLS inside STUN) when the offer asks for it.
    public var sped: Bool

    public init(iceUfrag: String, icePassword: String, fingerprint: CertificateFingerprint, candidates: [ICECandidate],
                sessionID: UInt64, audioSSRC: UInt32, cname: String, opusParameters: String = "minptime=10;useinbandfec=1",
                maxMessageSize: Int = 262_144, sctpPort: Int = 5000, sctpInit: String? = nil, sped: Bool = true) {
        self.iceUfrag = iceUfrag
        self.icePassword = icePassword
        self.fingerprint = fingerprint
        self.candidates = candidates
        self.sessionID = sessionID
        self.audioSSRC = audioSSRC
        self.cname = cname
        self.opusParameters = opusParameters
        self.maxMessageSize = maxMessageSize
        self.sctpPort = sctpPort
        self.sctpInit = sctpInit
        self.sped = sped
    }
}

/// The `a=ice-options` tokens that ask for SPED (draft-hancke-webrtc-sped): the draft's and
/// Chromium's own (`googspedv1` from M155, `goog-sped-v1` in M149–M154).
public let spedICEOptions: Set<String> = ["sped", "googspedv1", "goog-sped-v1"]

/// Why an offer cannot be answered. Each case reads as a reason a client developer can act on.
public enum OfferRejection: Error, Equatable, Sendable, CustomStringConvertible {
    case noAudio
    case noOpus
    case noFingerprint
    case noICECredentials
    case rtcpMuxRequired
    case unsupportedTransport(String)
    case missingMid

    public var description: String {
        switch self {
        case .noAudio: "the offer has no audio section"
        case .noOpus: "the offer's audio does not include Opus at 48000 Hz"
        case .noFingerprint: "the offer has no DTLS certificate fingerprint"
        case .noICECredentials: "the offer has no ice-ufrag/ice-pwd"
        case .rtcpMuxRequired: "the offer's audio does not offer rtcp-mux"
        case .unsupportedTransport(let proto): "the offer's audio uses \(proto), not UDP/TLS/RTP/SAVPF"
        case .missingMid: "the offer's accepted sections have no a=mid"
        }
    }
}

/// The negotiated result: the answer and what was agreed, for the session to act on.
public struct NegotiatedSession: Sendable {
    public var answer: SessionDescription
    /// The client's ICE credentials.
    public var remoteUfrag: String
    public var remotePassword: String
    public var remoteFingerprints: [CertificateFingerprint]
    /// Our DTLS role: `.passive` (the client connects) unless the client insisted on being passive.
    public var localSetup: DTLSSetupRole
    public var audioMid: String
    /// The client's Opus codec (its payload type is the one both sides use).
    public var opus: RTPCodec
    /// The client's audio SSRC when it declared one.
    public var remoteAudioSSRC: UInt32?
    public var audioDirection: MediaDirection
    /// The data-channel section's mid, when the client offered one and it was accepted.
    public var dataChannelMid: String?
    public var remoteSCTPPort: Int?
    /// The client's `max-message-size`: 0 means no limit (RFC 8841 §6), nil means the default 64 KiB.
    public var remoteMaxMessageSize: Int?
    /// SNAP: the client's `a=sctp-init` and the one answered, both or neither (base64 INIT chunks).
    public var remoteSCTPInit: String?
    public var localSCTPInit: String?
    /// SPED: the offer's SPED ice-options, repeated in the answer; empty when SPED is off (not
    /// offered, not enabled, or Parley is the DTLS client, whose ClientHello would have no check to ride).
    public var spedOptions: [String] = []
    public var sped: Bool { !spedOptions.isEmpty }
}

extension SessionDescription {
    /// Answers a WebRTC offer as an ICE-lite endpoint (RFC 8445 §2.5, RFC 9429 §5.3): accepts the
    /// first audio section with Opus and the first data-channel section, rejects every other
    /// section (port 0), and bundles what it accepts on one transport.
    public static func iceLiteAnswer(
        to offer: SessionDescription, parameters: AnswerParameters
    ) throws(OfferRejection) -> NegotiatedSession {
        let bundle = offer.groups.first { $0.semantics == "BUNDLE" }
        /// A section is live unless port 0 rejects it; `a=bundle-only` sections inside the offered
        /// BUNDLE group carry port 0 and are live all the same (RFC 8843 §6).
        func isLive(_ section: MediaDescription) -> Bool {
            !section.isRejected || (section.otherAttributes.contains { $0.name == "bundle-only" }
                && section.mid.map { bundle?.mids.contains($0) ?? false } == true)
        }
        guard let audioIndex = offer.media.firstIndex(where: { $0.kind == "audio" && isLive($0) }) else {
            throw .noAudio
        }
        let audioOffer = offer.media[audioIndex]
        guard audioOffer.proto.uppercased() == "UDP/TLS/RTP/SAVPF" || audioOffer.proto.uppercased() == "UDP/TLS/RTP/SAVP" else {
            throw .unsupportedTransport(audioOffer.proto)
        }
        guard let opus = audioOffer.codecs.first(where: \.isOpus) else { throw .noOpus }
        guard let credentials = offer.iceCredentials(for: audioOffer) else { throw .noICECredentials }
        let remoteFingerprints = offer.fingerprints(for: audioOffer)
        guard !remoteFingerprints.isEmpty else { throw .noFingerprint }
        guard audioOffer.rtcpMux else { throw .rtcpMuxRequired }
        guard let audioMid = audioOffer.mid else { throw .missingMid }

        // RFC 9429 suggests the answerer take `active`; Parley answers `passive` so the client's
        // ClientHello leaves with its first ICE check (no extra round trip, and the client, which
        // knows when its path is ready, starts DTLS). It goes active only when the client insists.
        let localSetup: DTLSSetupRole = offer.setup(for: audioOffer) == .passive ? .active : .passive
        // Data channels share the audio's transport, so they are accepted only when the offer bundles
        // them with the audio; an answer may only bundle what the offer's group contains.
        let bundledWithAudio = bundle?.mids.contains(audioMid) == true ? bundle?.mids ?? [] : []
        let dataIndex = offer.media.firstIndex {
            $0.isDataChannel && isLive($0) && $0.mid.map(bundledWithAudio.contains) == true
                && offer.iceCredentials(for: $0)?.ufrag == credentials.ufrag
        }
        // SPED only as the DTLS server: the client's ClientHello rides its checks and our flight the
        // answers; an ICE-lite server sends no check the client's DTLS could answer in.
        let offeredOptions = offer.iceOptions + audioOffer.iceOptions
        var spedOptions: [String] = []
        if parameters.sped, localSetup == .passive {
            for option in offeredOptions where spedICEOptions.contains(option) && !spedOptions.contains(option) {
                spedOptions.append(option)
            }
        }
        let defaultCandidate = parameters.candidates.first { $0.component == 1 }
        let connection = defaultCandidate.map { "IN \($0.address.contains(":") ? "IP6" : "IP4") \($0.address)" } ?? "IN IP4 0.0.0.0"
        let port = defaultCandidate?.port ?? 9

        func transport(_ section: inout MediaDescription) {
            section.connection = connection
            section.iceUfrag = parameters.iceUfrag
            section.icePassword = parameters.icePassword
            section.fingerprints = [parameters.fingerprint]
            section.setup = localSetup
            section.candidates = parameters.candidates
            section.endOfCandidates = true
            section.iceOptions = spedOptions
        }

        var answer = SessionDescription(
            origin: .init(sessionID: String(parameters.sessionID), sessionVersion: 2),
            iceLite: true
        )
        var accepted: [String] = []
        for (index, section) in offer.media.enumerated() {
            if index == audioIndex {
                var audio = MediaDescription(
                    kind: "audio", port: port, proto: audioOffer.proto, formats: [String(opus.payloadType)],
                    mid: audioMid, direction: offer.direction(for: audioOffer).answer, rtcpMux: true,
                    rtcpReducedSize: audioOffer.rtcpReducedSize,
                    codecs: [RTPCodec(payloadType: opus.payloadType, name: opus.name, clockRate: 48000, channels: 2,
                                      parameters: parameters.opusParameters)],
                    ssrcs: [SSRCAttribute(ssrc: parameters.audioSSRC, name: "cname", value: parameters.cname)]
                )
                transport(&audio)
                answer.media.append(audio)
                accepted.append(audioMid)
            } else if index == dataIndex, let mid = section.mid {
                // SNAP: Parley's own INIT, never an echo of the client's (that breaks Chromium).
                var data = MediaDescription(
                    kind: "application", port: port, proto: section.proto, formats: section.formats, mid: mid,
                    sctpPort: parameters.sctpPort, maxMessageSize: parameters.maxMessageSize,
                    sctpInit: section.sctpInit == nil ? nil : parameters.sctpInit
                )
                transport(&data)
                answer.media.append(data)
                accepted.append(mid)
            } else {
                // A rejected section keeps its kind, protocol and mid, with port 0 (RFC 8843 §7.3.3).
                answer.media.append(MediaDescription(
                    kind: section.kind, port: 0, proto: section.proto, formats: Array(section.formats.prefix(1)),
                    connection: "IN IP4 0.0.0.0", mid: section.mid
                ))
            }
        }
        let answerBundle = accepted.filter(bundledWithAudio.contains)
        if !answerBundle.isEmpty {
            answer.groups = [MediaGroup(semantics: "BUNDLE", mids: answerBundle)]
        }
        let dataOffer = dataIndex.map { offer.media[$0] }
        return NegotiatedSession(
            answer: answer, remoteUfrag: credentials.ufrag, remotePassword: credentials.password,
            remoteFingerprints: remoteFingerprints, localSetup: localSetup, audioMid: audioMid, opus: opus,
            remoteAudioSSRC: audioOffer.primarySSRC, audioDirection: offer.direction(for: audioOffer).answer,
            dataChannelMid: dataOffer?.mid, remoteSCTPPort: dataOffer?.sctpPort,
            remoteMaxMessageSize: dataOffer?.maxMessageSize,
            remoteSCTPInit: parameters.sctpInit == nil ? nil : dataOffer?.sctpInit,
            localSCTPInit: dataOffer?.sctpInit == nil ? nil : parameters.sctpInit,
            spedOptions: spedOptions
        )
    }
}
