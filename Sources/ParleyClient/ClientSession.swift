import ParleyMedia
import ParleyWire

/// The client side of a WebRTC audio call, sans-IO, built from Parley's own pieces: a controlling
/// ICE agent (aggressive nomination with USE-CANDIDATE), a DTLS client, SRTP, RTP. It is what
/// `parley load` runs by the hundred, and what the tests call Parley with. Confined to one thread.
public final class ClientSession {
    public enum Event: Sendable, Equatable {
        case iceConnected
        case dtlsConnected(SRTPProfile)
        /// An echoed (or any) Opus frame from the server.
        case audio(sequenceNumber: UInt16, timestamp: UInt32, payload: [UInt8])
        case failed(String)
    }

    public let ufrag: String
    public let password: String
    public let audioSSRC: UInt32
    public let certificate: DTLSCertificate
    /// The server's address, from the answer's first UDP candidate.
    public private(set) var serverAddress: TransportAddress?
    public private(set) var isICEConnected = false
    public private(set) var isConnected = false

    private let dtlsContext: DTLSContext
    private var dtls: DTLSConnection?
    private var outboundSRTP: SRTPContext?
    private var inboundSRTP: SRTPContext?
    private var serverUfrag = ""
    private var integrityKey: STUNIntegrityKey?
    private var payloadType: UInt8 = 111
    private var sequenceNumber: UInt16
    private let tieBreaker: UInt64
    private var nextCheck: Instant?
    private var checkInterval: Duration = .milliseconds(50)
    private var transmits: [[UInt8]] = []
    private var events: [Event] = []
    private var scratch = [UInt8](repeating: 0, count: 1500 + SRTPContext.maximumOverhead)

    public init(dtlsContext: DTLSContext) {
        var generator = SystemRandomNumberGenerator()
        ufrag = ICECredentials.randomString(length: 8, using: &generator)
        password = ICECredentials.randomString(length: 24, using: &generator)
        audioSSRC = UInt32.random(in: 1...UInt32.max, using: &generator)
        sequenceNumber = UInt16.random(in: 0...UInt16.max, using: &generator)
        tieBreaker = generator.next()
        certificate = dtlsContext.certificate
        self.dtlsContext = dtlsContext
    }

    /// The offer: audio (Opus) and a data channel, bundled, as a browser sends it.
    public var offer: String {
        Self.offer(ufrag: ufrag, password: password, fingerprint: certificate.fingerprint, audioSSRC: audioSSRC)
    }

    /// A browser-shaped offer for the given credentials.
    public static func offer(ufrag: String, password: String, fingerprint: CertificateFingerprint, audioSSRC: UInt32,
                             cname: String = "parley-load") -> String {
        let transport = "a=ice-ufrag:\(ufrag)\r\na=ice-pwd:\(password)\r\na=fingerprint:\(fingerprint)\r\na=setup:actpass\r\n"
        return "v=0\r\no=- \(audioSSRC) 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
            + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n" + transport
            + "a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
            + "a=ssrc:\(audioSSRC) cname:\(cname)\r\n"
            + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n" + transport
            + "a=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
    }

    /// Takes the server's answer and starts connectivity checks.
    public func accept(answer text: String, now: Instant) throws {
        let answer = try SessionDescription(parsing: text)
        guard let audio = answer.media.first(where: { $0.kind == "audio" && !$0.isRejected }),
              let credentials = answer.iceCredentials(for: audio) else { throw ClientError.unusableAnswer("no audio") }
        guard let candidate = audio.candidates.first(where: { $0.transport == "udp" && $0.component == 1 }),
              let address = IPv4Address(candidate.address) else { throw ClientError.unusableAnswer("no IPv4 UDP candidate") }
        serverAddress = .v4(address, port: candidate.port)
        serverUfrag = credentials.ufrag
        integrityKey = STUNIntegrityKey(shortTermPassword: credentials.password)
        payloadType = audio.codecs.first(where: \.isOpus)?.payloadType ?? 111
        let role: DTLSConnection.Role = answer.setup(for: audio) == .active ? .server : .client
        dtls = try DTLSConnection(context: dtlsContext, role: role, remoteFingerprints: answer.fingerprints(for: audio))
        nextCheck = now
        handleTimeout(now: now)
    }

    /// Sends checks until answered (every 50 ms), then consent checks every 2.5 s.
    public func handleTimeout(now: Instant) {
        if let due = nextCheck, now >= due {
            sendCheck()
            nextCheck = now + (isICEConnected ? .milliseconds(2500) : checkInterval)
        }
        if let dtls, dtls.state == .handshaking, let delay = dtls.retransmitDelay, delay <= .zero {
            dtls.handleTimeout()
            transmits += dtls.takeOutgoing()
        }
    }

    public var nextWakeup: Instant? { nextCheck }

    public func receive(_ datagram: UnsafeRawBufferPointer, now: Instant) {
        switch PacketKind.classify(datagram) {
        case .stun:
            guard let message = try? STUNMessage.parse(datagram), let integrityKey else { return }
            guard message.type == .bindingSuccess, message.hasValidMessageIntegrity(in: datagram, key: integrityKey) else {
                if message.type == .bindingError { events.append(.failed("ICE check refused: \(message.errorCode?.code ?? 0)")) }
                return
            }
            if !isICEConnected {
                isICEConnected = true
                events.append(.iceConnected)
                nextCheck = now + .milliseconds(2500)
                dtls?.start()
                transmits += dtls?.takeOutgoing() ?? []
            }
        case .dtls:
            guard let dtls else { return }
            dtls.receive(datagram)
            transmits += dtls.takeOutgoing()
            if dtls.state == .connected, !isConnected, let keys = dtls.srtpKeys {
                outboundSRTP = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.localKeyAndSalt, direction: .outbound)
                inboundSRTP = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.remoteKeyAndSalt, direction: .inbound)
                isConnected = outboundSRTP != nil && inboundSRTP != nil
                if isConnected { events.append(.dtlsConnected(keys.profile)) }
            } else if case .failed(let error) = dtls.state {
                events.append(.failed("DTLS: \(error)"))
            }
        case .rtp:
            guard let inboundSRTP, datagram.count <= scratch.count else { return }
            let event: Event? = scratch.withUnsafeMutableBytes { buffer in
                buffer.baseAddress!.copyMemory(from: datagram.baseAddress!, byteCount: datagram.count)
                guard let length = try? inboundSRTP.unprotectRTP(buffer, length: datagram.count),
                      let header = try? RTPHeader.parse(UnsafeRawBufferPointer(rebasing: buffer[0..<length])) else { return nil }
                return .audio(sequenceNumber: header.sequenceNumber, timestamp: header.timestamp,
                              payload: Array(buffer[header.payload]))
            }
            if let event { events.append(event) }
        default:
            break
        }
    }

    /// Sends one Opus frame; false before DTLS is up.
    @discardableResult
    public func sendAudio(_ payload: [UInt8], timestamp: UInt32) -> Bool {
        guard let outboundSRTP else { return false }
        let length = scratch.withUnsafeMutableBytes { buffer -> Int? in
            RTPHeader.write(marker: false, payloadType: payloadType, sequenceNumber: sequenceNumber, timestamp: timestamp,
                            ssrc: audioSSRC, into: buffer)
            for (index, byte) in payload.enumerated() { buffer[RTPHeader.fixedLength + index] = byte }
            return try? outboundSRTP.protectRTP(buffer, length: RTPHeader.fixedLength + payload.count)
        }
        guard let length else { return false }
        sequenceNumber &+= 1
        transmits.append(Array(scratch[0..<length]))
        return true
    }

    public func takeTransmits() -> [[UInt8]] {
        defer { transmits.removeAll(keepingCapacity: true) }
        return transmits
    }

    public func takeEvents() -> [Event] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    private func sendCheck() {
        guard let integrityKey else { return }
        let bytes = try? STUNWriter.build(type: .bindingRequest, transactionID: .random()) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(serverUfrag):\(ufrag)")
            try writer.appendPriority(ICECandidate.priority(typePreference: 126, localPreference: 65535, component: 1))
            try writer.appendICEControlling(tieBreaker: tieBreaker)
            try writer.appendUseCandidate()
            try writer.appendMessageIntegrity(key: integrityKey)
            try writer.appendFingerprint()
        }
        if let bytes { transmits.append(bytes) }
    }
}

public enum ClientError: Error, CustomStringConvertible {
    case unusableAnswer(String)

    public var description: String {
        switch self {
        case .unusableAnswer(let reason): "unusable answer: \(reason)"
        }
    }
}
