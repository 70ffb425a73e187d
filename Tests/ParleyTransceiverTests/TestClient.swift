import ParleyClient
import ParleyMedia
import ParleySCTP
import Testing
import ParleyWire
@testable import ParleySession
@testable import ParleyTransceiver

/// A WebRTC client made of Parley's own pieces (ICE controlling agent, DTLS client, SRTP), sans-IO
/// like the session, so a whole call runs in memory on a virtual clock.
final class TestClient {
    let ufrag = "tcli"
    let password = "testclientpassword123456"
    let ssrc: UInt32 = 0x0C11_E47
    let certificate: DTLSCertificate
    var address: TransportAddress
    var serverUfrag = ""
    var serverPassword = ""
    private(set) var dtls: (any DTLSConnection)!
    private var outboundSRTP: SRTPContext?
    private var inboundSRTP: SRTPContext?
    private var sequence: UInt16 = 1000
    private(set) var successResponses: [STUNMessage] = []
    private(set) var errorCodes: [Int] = []
    private(set) var mappedAddresses: [TransportAddress] = []
    private(set) var audio: [(ssrc: UInt32, sequence: UInt16, timestamp: UInt32, payload: [UInt8])] = []
    private(set) var rtcp: [RTCPPacket] = []
    /// The server's own checks (path validation, consent), as received.
    private(set) var serverChecks: [[UInt8]] = []
    /// Whether the client answers the server's checks (a full ICE agent does; set false to play
    /// one that stopped answering, or an address that is not the client's).
    var answersChecks = true
    /// SCTP over the DTLS connection, once `startSCTP` made one.
    private(set) var sctp: SCTPAssociation?

    init(address: TransportAddress, certificate: DTLSCertificate) {
        self.address = address
        self.certificate = certificate
    }

    /// An offer in the shape browsers send: Opus PT 111, BUNDLE audio and data, rtcp-mux.
    var offer: String {
        ClientSession.offer(ufrag: ufrag, password: password, fingerprint: certificate.fingerprint, audioSSRC: ssrc,
                            cname: "testclient")
    }

    /// Reads the answer: the server's credentials and fingerprint; prepares the DTLS client.
    func accept(answer: SessionDescription, context: any DTLSContext) throws {
        let audio = answer.media[0]
        serverUfrag = try #require(audio.iceUfrag)
        serverPassword = try #require(audio.icePassword)
        // The answer's role decides ours: a server that answers `active` makes us the DTLS server.
        let role: DTLSConnection.Role = audio.setup == .active ? .server : .client
        dtls = try context.makeConnection(role: role, remoteFingerprints: audio.fingerprints)
        dtls.advanceClock(to: clock)
    }

    /// An ICE connectivity check as a controlling agent sends it.
    func check(useCandidate: Bool, password: String? = nil) -> [UInt8] {
        try! STUNWriter.build(type: .bindingRequest, transactionID: .random()) { writer throws(STUNBuildError) in
            try writer.appendUsername("\(serverUfrag):\(ufrag)")
            try writer.appendPriority(1_853_824_767)
            try writer.appendICEControlling(tieBreaker: 0x1234_5678_9ABC_DEF0)
            if useCandidate { try writer.appendUseCandidate() }
            try writer.appendMessageIntegrity(key: STUNIntegrityKey(shortTermPassword: password ?? serverPassword))
            try writer.appendFingerprint()
        }
    }

    /// A success response to a server check that names us and carries our password's integrity.
    func answer(_ request: STUNMessage, _ datagram: UnsafeRawBufferPointer) -> [UInt8]? {
        let key = STUNIntegrityKey(shortTermPassword: password)
        guard let username = request.username, datagram[username].elementsEqual(Array("\(ufrag):\(serverUfrag)".utf8)),
              request.hasValidMessageIntegrity(in: datagram, key: key) else { return nil }
        return try? STUNWriter.build(type: .bindingSuccess, transactionID: request.transactionID) { writer throws(STUNBuildError) in
            try writer.appendXORMappedAddress(address)
            try writer.appendMessageIntegrity(key: key)
            try writer.appendFingerprint()
        }
    }

    /// The call's virtual clock, which the client's DTLS (BoringSSL) runs its timers on.
    var clock = Instant(nanoseconds: 0) {
        didSet { dtls?.advanceClock(to: clock) }
    }

    func startDTLS() -> [[UInt8]] {
        dtls.advanceClock(to: clock)
        dtls.start()
        return dtls.takeOutgoing()
    }

    /// Takes a datagram from the server; returns datagrams to send back.
    func receive(_ bytes: [UInt8]) -> [[UInt8]] {
        bytes.withUnsafeBytes { datagram -> [[UInt8]] in
            switch PacketKind.classify(datagram) {
            case .stun:
                guard let message = try? STUNMessage.parse(datagram) else { return [] }
                if message.type == .bindingRequest {
                    serverChecks.append(Array(datagram))
                    return answersChecks ? answer(message, datagram).map { [$0] } ?? [] : []
                }
                if message.type == .bindingSuccess {
                    precondition(message.hasValidMessageIntegrity(in: datagram, key: STUNIntegrityKey(shortTermPassword: serverPassword)))
                    precondition(message.hasValidFingerprint(in: datagram))
                    successResponses.append(message)
                    if let mapped = message.xorMappedAddress { mappedAddresses.append(mapped) }
                } else if message.type == .bindingError, let code = message.errorCode?.code {
                    errorCodes.append(code)
                }
                return []
            case .dtls:
                dtls.receive(datagram)
                if dtls.state == .connected, outboundSRTP == nil, let keys = dtls.srtpKeys {
                    outboundSRTP = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.localKeyAndSalt, direction: .outbound)
                    inboundSRTP = try? SRTPContext(profile: keys.profile, keyAndSalt: keys.remoteKeyAndSalt, direction: .inbound)
                }
                for record in dtls.takeApplicationData() { record.withUnsafeBytes { sctp?.handle($0, now: sctpClock) } }
                return sctpOutgoing()
            case .rtp:
                var buffer = Array(datagram)
                guard let length = try? buffer.withUnsafeMutableBytes({ try inboundSRTP?.unprotectRTP($0, length: datagram.count) }),
                      let header = try? buffer.withUnsafeBytes({ try RTPHeader.parse(UnsafeRawBufferPointer(rebasing: $0[0..<length])) })
                else { return [] }
                audio.append((header.ssrc, header.sequenceNumber, header.timestamp, Array(buffer[header.payload])))
                return []
            case .rtcp:
                var buffer = Array(datagram)
                guard let length = try? buffer.withUnsafeMutableBytes({ try inboundSRTP?.unprotectRTCP($0, length: datagram.count) }),
                      let packets = try? buffer.withUnsafeBytes({ try RTCPCompound.parse(UnsafeRawBufferPointer(rebasing: $0[0..<length])) })
                else { return [] }
                rtcp += packets
                return []
            default:
                return []
            }
        }
    }

    var isConnected: Bool { outboundSRTP != nil }

    /// The clock the client's SCTP runs on (tests move it along with the call's).
    var sctpClock = Instant(nanoseconds: 0)

    /// Starts SCTP as the DTLS client does (INIT); returns datagrams to send.
    func startSCTP(now: Instant) -> [[UInt8]] {
        sctpClock = now
        let association = SCTPAssociation(now: now)
        sctp = association
        association.connect(now: now)
        return sctpOutgoing()
    }

    /// SCTP packets, as DTLS records.
    func sctpOutgoing() -> [[UInt8]] {
        for packet in sctp?.takeOutgoing() ?? [] { _ = packet.withUnsafeBytes { dtls.send($0) } }
        return dtls.takeOutgoing()
    }

    /// An SRTP-protected Opus packet.
    func audioPacket(timestamp: UInt32, payload: [UInt8]) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 12 + payload.count + SRTPContext.maximumOverhead)
        let length = buffer.withUnsafeMutableBytes { raw -> Int in
            RTPHeader.write(marker: false, payloadType: 111, sequenceNumber: sequence, timestamp: timestamp, ssrc: ssrc, into: raw)
            for (index, byte) in payload.enumerated() { raw[12 + index] = byte }
            return try! outboundSRTP!.protectRTP(raw, length: 12 + payload.count)
        }
        sequence &+= 1
        return Array(buffer[0..<length])
    }

    /// An SRTCP receiver report about the server's stream.
    func receiverReport(about block: RTCPReportBlock) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: RTCPCompound.maximumReportLength + 64)
        let length = buffer.withUnsafeMutableBytes { raw -> Int in
            let written = RTCPCompound.writeReport(ssrc: ssrc, sender: nil, blocks: [block], cname: "testclient", into: raw)
            return try! outboundSRTP!.protectRTCP(raw, length: written)
        }
        return Array(buffer[0..<length])
    }
}
