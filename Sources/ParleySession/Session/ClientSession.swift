import ParleyMedia
import ParleySCTP
import ParleyWire

/// The client side of a WebRTC call, sans-IO, built from Parley's own pieces: a full controlling
/// ICE agent (aggressive nomination with USE-CANDIDATE; it answers the server's own checks, which
/// full-ICE servers such as Pion need before they nominate), DTLS in whichever role the answer
/// leaves us, SRTP, RTP, and a data channel over SCTP. It is what `parley load` runs by the hundred,
/// and what the tests call Parley with. Confined to one thread.
public final class ClientSession {
    public enum Event: Sendable, Equatable {
        case iceConnected
        case dtlsConnected(SRTPProfile)
        /// An echoed (or any) Opus frame from the server.
        case audio(sequenceNumber: UInt16, timestamp: UInt32, payload: [UInt8])
        /// The data channel the client opened is acknowledged by the server (DCEP ACK).
        case dataChannelOpen(label: String)
        case dataChannelMessage(label: String, binary: Bool, payload: [UInt8])
        /// The data channels' SCTP association ended; the call itself goes on.
        case dataChannelClosed(reason: String)
        case failed(String)
    }

    public let ufrag: String
    public let password: String
    public let audioSSRC: UInt32
    public let certificate: DTLSCertificate
    /// The label of the channel the client opens once SCTP is up (nil: no data channel offered).
    public let dataChannelLabel: String?
    /// WARP's client side: the offer carries this client's SCTP INIT (`a=sctp-init`, SNAP), and the
    /// channel is negotiated on stream `negotiatedChannelID` (the offer is POSTed with `?dcid=`), so
    /// neither SCTP's handshake nor DCEP's is needed when the server answers in kind.
    public let warp: Bool
    public var negotiatedChannelID: UInt16? { warp && dataChannelLabel != nil ? 0 : nil }
    /// Whether the answer took up SNAP (it carried an `a=sctp-init` of the server's).
    public var answeredSNAP: Bool { snap != nil }
    /// Whether the answer took up SPED (`a=ice-options:sped`): the ClientHello rides the first check.
    public var answeredSPED: Bool { sped != nil }
    /// The DTLS version the handshake agreed, once connected.
    public var dtlsVersion: DTLSVersion? { dtls?.version }
    /// SPED: our DTLS datagrams that rode checks, and the server's that rode its answers.
    public private(set) var dtlsInSTUNSent = 0
    public private(set) var dtlsInSTUNReceived = 0
    /// The server's address, from the answer's first UDP candidate.
    public private(set) var serverAddress: TransportAddress?
    public private(set) var isICEConnected = false
    public private(set) var isConnected = false
    public private(set) var isDataChannelOpen = false
    /// Round-trip time of the latest answered connectivity or consent check.
    public private(set) var roundTripTime: Duration?
    /// When set, received audio goes here (sequence number, timestamp, payload valid during the call)
    /// instead of becoming `.audio` events: no copy per packet.
    public var audioHandler: ((UInt16, UInt32, UnsafeRawBufferPointer) -> Void)?
    /// Checks from the server answered (full-ICE servers send them; ICE-lite ones do not).
    public private(set) var checksAnswered = 0

    private let dtlsContext: any DTLSContext
    private var dtls: (any DTLSConnection)?
    private var outboundSRTP: SRTPContext?
    private var inboundSRTP: SRTPContext?
    private var serverUfrag = ""
    /// Key for checks we send (the server's password) and for checks we answer (ours).
    private var integrityKey: STUNIntegrityKey?
    private let localIntegrityKey: STUNIntegrityKey
    /// USERNAME the server's checks must carry: "ourUfrag:serverUfrag".
    private var expectedInboundUsername: [UInt8] = []
    private var payloadType: UInt8 = 111
    private var sequenceNumber: UInt16
    private let tieBreaker: UInt64
    private var nextCheck: Instant?
    /// The time of the latest input, from which DTLS's timer (a delay, not an instant) is counted.
    private var lastNow: Instant?
    private var checkInterval: Duration = .milliseconds(50)
    private var pendingCheck: (id: STUNTransactionID, sentAt: Instant)?
    private var dataChannels: DataChannels?
    private var dataChannelID: UInt16?
    private var answeredDataChannel = false
    private var remoteSCTPPort = 5000
    private var remoteMaximumMessageSize = 65536
    private let localSCTPInit: String?
    private var snap: SNAPInits?
    private var sped: DTLSInSTUN?
    private var dtlsStarted = false
    private var transmits: [[UInt8]] = []
    private var events: [Event] = []
    private var scratch = [UInt8](repeating: 0, count: 1500 + SRTPContext.maximumOverhead)

    public init(dtlsContext: any DTLSContext, dataChannelLabel: String? = "oai-events", warp: Bool = false) {
        var generator = SystemRandomNumberGenerator()
        self.warp = warp
        localSCTPInit = warp && dataChannelLabel != nil ? SNAPInits.draw(using: &generator) : nil
        ufrag = ICECredentials.randomString(length: 8, using: &generator)
        password = ICECredentials.randomString(length: 24, using: &generator)
        audioSSRC = UInt32.random(in: 1...UInt32.max, using: &generator)
        sequenceNumber = UInt16.random(in: 0...UInt16.max, using: &generator)
        tieBreaker = generator.next()
        certificate = dtlsContext.certificate
        localIntegrityKey = STUNIntegrityKey(shortTermPassword: password)
        self.dtlsContext = dtlsContext
        self.dataChannelLabel = dataChannelLabel
    }

    /// The offer: audio (Opus) and, with a label, a data channel, bundled, as a browser sends it.
    public var offer: String {
        Self.offer(ufrag: ufrag, password: password, fingerprint: certificate.fingerprint, audioSSRC: audioSSRC,
                   dataChannel: dataChannelLabel != nil, sctpInit: localSCTPInit, sped: warp)
    }

    /// A browser-shaped offer for the given credentials.
    public static func offer(ufrag: String, password: String, fingerprint: CertificateFingerprint, audioSSRC: UInt32,
                             cname: String = "parley-load", dataChannel: Bool = true, sctpInit: String? = nil,
                             sped: Bool = false) -> String {
        let transport = "a=ice-ufrag:\(ufrag)\r\na=ice-pwd:\(password)\r\na=fingerprint:\(fingerprint)\r\na=setup:actpass\r\n"
            + (sped ? "a=ice-options:sped\r\n" : "")
        var text = "v=0\r\no=- \(audioSSRC) 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\(dataChannel ? " 1" : "")\r\n"
            + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n" + transport
            + "a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
            + "a=ssrc:\(audioSSRC) cname:\(cname)\r\n"
        if dataChannel {
            text += "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n" + transport
                + "a=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
                + (sctpInit.map { "a=sctp-init:\($0)\r\n" } ?? "")
        }
        return text
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
        expectedInboundUsername = Array("\(ufrag):\(credentials.ufrag)".utf8)
        payloadType = audio.codecs.first(where: \.isOpus)?.payloadType ?? 111
        if let data = answer.media.first(where: { $0.kind == "application" && !$0.isRejected }) {
            remoteSCTPPort = data.sctpPort ?? 5000
            remoteMaximumMessageSize = data.maxMessageSize ?? 65536
            answeredDataChannel = dataChannelLabel != nil
            // SNAP when both INITs are known; an answer without one means SCTP's own handshake.
            if let local = localSCTPInit, let remote = data.sctpInit {
                do { snap = try SNAPInits(local: local, remote: remote, localWhose: "this client's", remoteWhose: "the answer's") } catch {
                    throw ClientError.unusableAnswer("\(error)")
                }
            }
        }
        let role: DTLSConnection.Role = answer.setup(for: audio) == .active ? .server : .client
        let answeredOptions = answer.iceOptions + audio.iceOptions
        let answeredSPED = warp && role == .client && answeredOptions.contains(where: spedICEOptions.contains)
        // Under SPED the ClientHello rides a check: room for the check's own attributes (Chromium: 900).
        let dtls = try dtlsContext.makeConnection(role: role, remoteFingerprints: answer.fingerprints(for: audio),
                                      mtu: answeredSPED ? dtlsContext.configuration.mtu - WebRTCSession.spedOverhead : nil)
        dtls.advanceClock(to: now)
        self.dtls = dtls
        if answeredSPED {
            // SPED: the ClientHello is written now and rides the first check.
            sped = DTLSInSTUN()
            dtlsStarted = true
            dtls.start()
            flushDTLS(now: now)
        }
        nextCheck = now
        handleTimeout(now: now)
    }

    /// Sends checks until answered (every 50 ms), then consent checks every 2.5 s; runs SCTP's timers.
    public func handleTimeout(now: Instant) {
        lastNow = now
        dtls?.advanceClock(to: now)
        if let due = nextCheck, now >= due {
            sendCheck(now: now)
            nextCheck = now + (isICEConnected ? .milliseconds(2500) : checkInterval)
        }
        // DTLS 1.3's timers run past the handshake too: this client's last flight awaits the server's ACK.
        if let dtls, let delay = dtls.retransmitDelay, delay <= .zero {
            dtls.handleTimeout()
            flushDTLS(now: now)
            if case .failed(let error) = dtls.state { events.append(.failed("DTLS: \(error)")) }
        }
        if let dataChannels, let due = dataChannels.association.nextWakeup, now >= due {
            dataChannels.handleTimeout(now: now)
            pumpDataChannels(now: now)
        }
    }

    public var nextWakeup: Instant? {
        let dtlsTimer = lastNow.flatMap { now in dtls?.retransmitDelay.map { now + $0 } }
        return [nextCheck, dataChannels?.association.nextWakeup, dtlsTimer].compactMap { $0 }.min()
    }

    /// Feeds one datagram from the server. `source` is where it came from: the client answers the
    /// server's checks with it (XOR-MAPPED-ADDRESS); without it those checks go unanswered.
    public func receive(_ datagram: UnsafeRawBufferPointer, from source: TransportAddress? = nil, now: Instant) {
        lastNow = now
        dtls?.advanceClock(to: now)
        // Only the server's address speaks for the call (a load client's socket takes any source).
        if let source, let serverAddress, source != serverAddress { return }
        switch PacketKind.classify(datagram) {
        case .stun:
            guard let message = try? STUNMessage.parse(datagram), let integrityKey else { return }
            switch message.type {
            case .bindingRequest:
                // A server's own check may carry SPED's attributes as its answers do.
                answerCheck(message, datagram, from: source, now: now)
            case .bindingSuccess:
                guard message.hasValidMessageIntegrity(in: datagram, key: integrityKey) else { return }
                if let pendingCheck, pendingCheck.id == message.transactionID {
                    let roundTrip = now - pendingCheck.sentAt
                    roundTripTime = roundTrip
                    self.pendingCheck = nil
                    dtls?.seedRoundTrip(roundTrip)  // WARP's RTO sync: the flights from now on
                }
                if !isICEConnected {
                    isICEConnected = true
                    events.append(.iceConnected)
                    nextCheck = now + .milliseconds(2500)
                    if !dtlsStarted {
                        dtlsStarted = true
                        dtls?.start()
                    }
                    // SPED: what DTLS wrote before ICE was up (a flight answering the server's check) goes now too.
                    if let sped { transmits += sped.pendingDatagrams }
                }
                receiveDTLSInSTUN(message, datagram, now: now)
                flushDTLS(now: now)
            case .bindingError:
                events.append(.failed("ICE check refused: \(message.errorCode?.code ?? 0)"))
            default:
                break
            }
        case .dtls:
            if sped?.receivedDirectly(datagram) == false { return }  // it rode an answer already
            receiveDTLS(datagram, now: now)
        case .rtp:
            guard let inboundSRTP, datagram.count <= scratch.count else { return }
            scratch.withUnsafeMutableBytes { buffer in
                buffer.baseAddress!.copyMemory(from: datagram.baseAddress!, byteCount: datagram.count)
                guard let length = try? inboundSRTP.unprotectRTP(buffer, length: datagram.count),
                      let header = try? RTPHeader.parse(UnsafeRawBufferPointer(rebasing: buffer[0..<length])) else { return }
                let payload = UnsafeRawBufferPointer(rebasing: buffer[header.payload])
                if let audioHandler {
                    audioHandler(header.sequenceNumber, header.timestamp, payload)
                } else {
                    events.append(.audio(sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, payload: Array(payload)))
                }
            }
        default:
            break
        }
    }

    /// SPED's attributes in an authenticated Binding message from the server.
    private func receiveDTLSInSTUN(_ message: STUNMessage, _ datagram: UnsafeRawBufferPointer, now: Instant) {
        guard let before = sped else { return }
        let data = message.dtlsInSTUN.map { UnsafeRawBufferPointer(rebasing: datagram[$0]) }
        let acknowledgement = message.dtlsInSTUNAcknowledgement.map { UnsafeRawBufferPointer(rebasing: datagram[$0]) }
        if let embedded = sped?.receive(data: data, acknowledgement: acknowledgement) {
            dtlsInSTUNReceived += 1
            receiveDTLS(embedded, now: now)
        }
        // The server does not speak SPED after all: what waited for a check goes directly.
        if before.phase == .tentative, sped?.phase == .finished { transmits += before.pendingDatagrams }
    }

    private func receiveDTLS(_ datagram: UnsafeRawBufferPointer, now: Instant) {
        guard let dtls else { return }
        dtls.receive(datagram)
        if dtls.state == .connected, !isConnected, let keys = dtls.srtpKeys {
            outboundSRTP = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.localKeyAndSalt, direction: .outbound)
            inboundSRTP = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.remoteKeyAndSalt, direction: .inbound)
            isConnected = outboundSRTP != nil && inboundSRTP != nil
            sped?.handshakeCompleted(asClient: dtls.role == .client)
            flushDTLS(now: now)
            if isConnected {
                events.append(.dtlsConnected(keys.profile))
                startDataChannels(role: dtls.role, now: now)
            }
        } else {
            flushDTLS(now: now)
            if case .failed(let error) = dtls.state { events.append(.failed("DTLS: \(error)")) }
        }
        let records = dtls.takeApplicationData()
        if let dataChannels, !records.isEmpty {
            for record in records { record.withUnsafeBytes { dataChannels.handle($0, now: now) } }
            pumpDataChannels(now: now)
        }
    }

    /// Sends what DTLS wrote: directly once ICE is connected, and under SPED also on our next checks
    /// until the server acknowledges it (before ICE is connected, only there).
    private func flushDTLS(now: Instant) {
        guard let dtls else { return }
        let datagrams = dtls.takeOutgoing()
        guard !datagrams.isEmpty else { return }
        if !isConnected { sped?.sent(flight: datagrams) }
        if isICEConnected { transmits += datagrams }
    }

    /// Sends one Opus frame; false before DTLS is up.
    @discardableResult
    public func sendAudio(_ payload: [UInt8], timestamp: UInt32) -> Bool {
        let length = payload.withUnsafeBytes { payload in
            scratch.withUnsafeMutableBytes { writeAudio(payload, timestamp: timestamp, into: $0) }
        }
        guard let length else { return false }
        transmits.append(Array(scratch[0..<length]))
        return true
    }

    /// Writes one Opus frame as a protected RTP datagram into `buffer` (the caller sends it) and
    /// returns its length; nil before DTLS is up or when `buffer` is too small. The load generator's
    /// per-packet path: nothing is queued or copied.
    public func writeAudio(_ payload: UnsafeRawBufferPointer, timestamp: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let outboundSRTP,
              buffer.count >= RTPHeader.fixedLength + payload.count + SRTPContext.maximumOverhead else { return nil }
        RTPHeader.write(marker: false, payloadType: payloadType, sequenceNumber: sequenceNumber, timestamp: timestamp,
                        ssrc: audioSSRC, into: buffer)
        if let source = payload.baseAddress, payload.count > 0 {
            (buffer.baseAddress! + RTPHeader.fixedLength).copyMemory(from: source, byteCount: payload.count)
        }
        guard let length = try? outboundSRTP.protectRTP(buffer, length: RTPHeader.fixedLength + payload.count) else { return nil }
        sequenceNumber &+= 1
        return length
    }

    /// Sends a message on the client's data channel; false until it is open or when SCTP's buffer is full.
    @discardableResult
    public func sendDataChannelMessage(_ payload: [UInt8], binary: Bool, now: Instant) -> Bool {
        guard isDataChannelOpen, let dataChannels, let dataChannelID else { return false }
        do {
            try dataChannels.send(payload, binary: binary, channel: dataChannelID, now: now)
        } catch {
            return false
        }
        pumpDataChannels(now: now)
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

    // MARK: ICE

    private func sendCheck(now: Instant) {
        guard let integrityKey else { return }
        let id = STUNTransactionID.random()
        let piggyback = sped?.nextAttributes()
        let bytes = try? STUNWriter.build(type: .bindingRequest, transactionID: id, capacity: 1500) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(serverUfrag):\(ufrag)")
            try writer.appendPriority(ICECandidate.priority(typePreference: 126, localPreference: 65535, component: 1))
            try writer.appendICEControlling(tieBreaker: tieBreaker)
            try writer.appendUseCandidate()
            if let piggyback {
                try writer.appendDTLSInSTUNAcknowledgement(piggyback.acknowledgements)
                if let datagram = piggyback.datagram { try writer.appendDTLSInSTUN(datagram) }
            }
            try writer.appendMessageIntegrity(key: integrityKey)
            try writer.appendFingerprint()
        }
        if let bytes {
            transmits.append(bytes)
            pendingCheck = (id, now)
            if piggyback?.datagram != nil { dtlsInSTUNSent += 1 }
        }
    }

    /// Answers a check the server sent (RFC 8445 §7.3): right USERNAME and our password's integrity.
    private func answerCheck(_ request: STUNMessage, _ datagram: UnsafeRawBufferPointer, from source: TransportAddress?, now: Instant) {
        guard let source, let username = request.username,
              datagram[username].elementsEqual(expectedInboundUsername),
              request.hasValidMessageIntegrity(in: datagram, key: localIntegrityKey) else { return }
        // A server's own check may carry SPED's attributes as its answers do; ours carry them back.
        receiveDTLSInSTUN(request, datagram, now: now)
        let piggyback = sped?.nextAttributes()
        let bytes = try? STUNWriter.build(type: .bindingSuccess, transactionID: request.transactionID, capacity: 1500) { writer throws(STUNBuildError) in
            try writer.appendXORMappedAddress(source)
            if let piggyback {
                try writer.appendDTLSInSTUNAcknowledgement(piggyback.acknowledgements)
                if let datagram = piggyback.datagram { try writer.appendDTLSInSTUN(datagram) }
            }
            try writer.appendMessageIntegrity(key: localIntegrityKey)
            try writer.appendFingerprint()
        }
        if let bytes {
            transmits.append(bytes)
            checksAnswered += 1
            if piggyback?.datagram != nil { dtlsInSTUNSent += 1 }
        }
    }

    // MARK: Data channel

    private func startDataChannels(role: DTLSConnection.Role, now: Instant) {
        guard answeredDataChannel else { return }
        var configuration = SNAPInits.configuration
        configuration.remotePort = UInt16(clamping: remoteSCTPPort)
        let association = SCTPAssociation(configuration: configuration, now: now, identity: snap?.local.identity)
        if let roundTripTime { association.seedRoundTrip(roundTripTime) }  // WARP's RTO sync
        let channels = DataChannels(association: association, dtlsServer: role == .server,
                                    remoteMaximumMessageSize: remoteMaximumMessageSize)
        dataChannels = channels
        if let snap {
            association.startOutOfBand(peer: snap.remote, now: now)
        } else if role == .client {
            // Browsers send INIT whatever their DTLS role; the DTLS client always does here. As the
            // DTLS server we wait for the server's INIT (Pion, Parley as DTLS client).
            association.connect(now: now)
        }
        if let id = negotiatedChannelID, let label = dataChannelLabel, channels.addNegotiated(id: id, label: label) {
            dataChannelID = id
        }
        pumpDataChannels(now: now)
    }

    private func pumpDataChannels(now: Instant) {
        guard let dataChannels, let dtls else { return }
        if lastNow.map({ now > $0 }) ?? true { lastNow = now }
        if let lastNow { dtls.advanceClock(to: lastNow) }
        if dataChannelID == nil, let label = dataChannelLabel, dataChannels.association.state == .established {
            dataChannelID = dataChannels.open(label: label, now: now)
        }
        for packet in dataChannels.takeOutgoing() { _ = packet.withUnsafeBytes { dtls.send($0) } }
        transmits += dtls.takeOutgoing()
        for event in dataChannels.takeEvents() {
            switch event {
            case .opened(let channel) where channel.id == dataChannelID:
                isDataChannelOpen = true
                events.append(.dataChannelOpen(label: channel.label))
            case .message(_, let label, let binary, let payload):
                events.append(.dataChannelMessage(label: label, binary: binary, payload: payload))
            case .transportClosed(let reason):
                isDataChannelOpen = false
                events.append(.dataChannelClosed(reason: reason))
            case .opened, .closed:
                break
            }
        }
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

// MARK: For the fuzz harnesses

/// What the fuzz harnesses (Fuzz/) need to play this client's server with bytes of their own.
/// Not for production use.
extension ClientSession {
    @_spi(Fuzzing) public var srtpKeys: SRTPKeyMaterial? { dtls?.srtpKeys }

    /// `bytes` as a DTLS application-data record toward the server: the datagrams to deliver.
    @_spi(Fuzzing) public func sealApplicationData(_ bytes: [UInt8]) -> [[UInt8]] {
        guard let dtls, isConnected else { return [] }
        if let lastNow { dtls.advanceClock(to: lastNow) }
        guard bytes.withUnsafeBytes({ dtls.send($0) }) else { return [] }
        return dtls.takeOutgoing()
    }

    /// The data channels' SCTP verification tags: ours, and the server's.
    @_spi(Fuzzing) public var sctpTags: (local: UInt32, peer: UInt32)? {
        dataChannels.map { ($0.association.localTag, $0.association.peerTag) }
    }
}
