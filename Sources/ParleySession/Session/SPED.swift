import ParleyWire

/// SPED (draft-hancke-webrtc-sped): the DTLS handshake rides ICE's Binding messages, so the
/// ClientHello leaves with the first check and the server's flight with its answer — ICE's round
/// trip and DTLS's first one become one. This is the bookkeeping of one side, sans-IO: which of our
/// DTLS datagrams still need to ride a Binding message (the draft's L1, until acknowledged), which
/// of the peer's we acknowledge (L2), and when both sides are done with it. The session decides
/// where datagrams go and how much it may send toward an unvalidated address.
///
/// Chromium's rules, which this follows (docs/warp-research.md §2.3): a peer whose message carries
/// neither attribute does not speak SPED (or has finished); a message with an acknowledgement and
/// no data tells a peer that has completed its handshake that we have too.
public struct DTLSInSTUN: Sendable {
    public enum Phase: Sendable, Equatable {
        /// Negotiated; no Binding message from the peer has shown it speaks SPED yet.
        case tentative
        /// Both sides speak it: our Binding messages carry SPED attributes.
        case active
        /// The handshake is over on both sides (or the peer stopped): no more attributes.
        case finished
    }

    /// What a Binding message of ours should carry.
    public struct Attributes: Equatable, Sendable {
        /// CRC-32s of the peer's DTLS datagrams received, oldest first (four at most).
        public var acknowledgements: [UInt32]
        /// One of our pending DTLS datagrams, when one is waiting.
        public var datagram: [UInt8]?
    }

    public private(set) var phase: Phase = .tentative
    /// L1: the current flight's datagrams not yet acknowledged, with their CRC-32s.
    private var pending: [(checksum: UInt32, bytes: [UInt8])] = []
    /// The pending datagram the next Binding message carries (round robin).
    private var cursor = 0
    /// L2: CRC-32s of the peer's datagrams received, newest last.
    private var acknowledgements: [UInt32] = []
    /// CRC-32s of every datagram received lately, so one that arrives both directly and in a
    /// check (or in checks on several paths) reaches DTLS once.
    private var seen: [UInt32] = []
    private var handshakeComplete = false

    /// A flight is a handful of datagrams; more than this is not one we embed.
    static let maximumPending = 8
    static let rememberedDatagrams = 32

    public init() {}

    public var isActive: Bool { phase != .finished }
    public var pendingCount: Int { pending.count }
    /// L1's datagrams: what a side that finds SPED off must send directly instead.
    public var pendingDatagrams: [[UInt8]] { pending.map(\.bytes) }

    /// Our DTLS wrote a new flight (or retransmitted one): it replaces whatever was pending.
    public mutating func sent(flight: [[UInt8]]) {
        guard phase != .finished, !flight.isEmpty else { return }
        pending = flight.prefix(Self.maximumPending).map { datagram in
            (datagram.withUnsafeBytes { CRC32.checksum($0) }, datagram)
        }
        cursor = 0
    }

    /// The SPED attributes of a Binding message from the peer (request or answer). Returns the
    /// embedded DTLS datagram when DTLS should get it: non-empty, a DTLS record's first byte
    /// (RFC 9443: 20–63), and not seen before. A message with neither attribute turns SPED off.
    public mutating func receive(
        data: UnsafeRawBufferPointer?, acknowledgement: UnsafeRawBufferPointer?
    ) -> UnsafeRawBufferPointer? {
        guard phase != .finished else { return nil }
        guard data != nil || acknowledgement != nil else {
            phase = .finished  // the peer does not speak SPED, or is done with it
            pending.removeAll()
            return nil
        }
        phase = .active
        if let acknowledgement {
            var offset = 0
            while offset + 4 <= acknowledgement.count, offset < 4 * maximumDTLSAcknowledgements {
                let checksum = acknowledgement.uint32(at: offset)
                if let index = pending.firstIndex(where: { $0.checksum == checksum }) {
                    pending.remove(at: index)
                    if cursor > index { cursor -= 1 }
                }
                offset += 4
            }
            if cursor >= pending.count { cursor = 0 }
        }
        guard let data, let first = data.first, (20...63).contains(first) else { return nil }
        return noteReceived(data) ? data : nil
    }

    /// A DTLS datagram that arrived directly: acknowledged like an embedded one. False when the
    /// same datagram already arrived (it need not reach DTLS again).
    public mutating func receivedDirectly(_ datagram: UnsafeRawBufferPointer) -> Bool {
        guard phase != .finished else { return true }
        return noteReceived(datagram)
    }

    /// DTLS is connected. As a DTLS 1.2 client our last flight needs no acknowledgement (the
    /// server's Finished answers it); as the server, our Finished stays pending until acknowledged.
    public mutating func handshakeCompleted(asClient: Bool) {
        handshakeComplete = true
        if asClient {
            pending.removeAll()
            cursor = 0
        }
    }

    /// What our next Binding message carries, or nil when it carries no SPED attributes. Once the
    /// handshake is complete and nothing is pending, the acknowledgements go alone (which tells
    /// Chromium we are done); SPED ends with the first such message that `mayFinish` (the one
    /// toward the path the call uses, not a spare or forged one).
    public mutating func nextAttributes(mayFinish: Bool = true) -> Attributes? {
        guard phase != .finished else { return nil }
        if handshakeComplete, pending.isEmpty {
            if mayFinish { phase = .finished }
            return Attributes(acknowledgements: acknowledgements, datagram: nil)
        }
        var datagram: [UInt8]?
        if !pending.isEmpty {
            datagram = pending[cursor].bytes
            cursor = (cursor + 1) % pending.count
        }
        return Attributes(acknowledgements: acknowledgements, datagram: datagram)
    }

    /// Ends SPED where it stands (a client that never acknowledges our last flight, long after
    /// the handshake): no more attributes, no more bookkeeping per DTLS datagram.
    public mutating func end() {
        phase = .finished
        pending.removeAll()
        seen.removeAll()
    }

    /// Puts a datagram we could not embed back in front (a message with no room for it).
    public mutating func unembed() {
        guard !pending.isEmpty else { return }
        cursor = (cursor + pending.count - 1) % pending.count
    }

    private mutating func noteReceived(_ datagram: UnsafeRawBufferPointer) -> Bool {
        let checksum = CRC32.checksum(datagram)
        if !acknowledgements.contains(checksum) {
            if acknowledgements.count == maximumDTLSAcknowledgements { acknowledgements.removeFirst() }
            acknowledgements.append(checksum)
        }
        guard !seen.contains(checksum) else { return false }
        if seen.count == Self.rememberedDatagrams { seen.removeFirst() }
        seen.append(checksum)
        return true
    }
}

/// What SPED may send toward addresses that have not answered Parley's check: each address three
/// times the authenticated bytes it sent (QUIC's per-address rule, RFC 9000 §8.1; the relay's per
/// flow), plus one server flight shared by all of them. Only a caller can forge checks from other
/// addresses (they carry the call's ICE password), and it gets one call per offer it POSTs.
public struct AmplificationCredit: Sendable {
    private var flight: Int
    private var earned: [TransportAddress: Int] = [:]
    /// As many addresses as consent checks at once; others earn nothing beyond the shared flight.
    static let maximumAddresses = 8
    static let maximumEarned = 16_384

    public init(flight: Int) { self.flight = max(0, flight) }

    /// An authenticated check of `bytes` from `address`, which has not answered ours.
    public mutating func received(_ bytes: Int, from address: TransportAddress) {
        guard earned[address] != nil || earned.count < Self.maximumAddresses else { return }
        earned[address] = min(earned[address, default: 0] + 3 * max(0, bytes), Self.maximumEarned)
    }

    public func allows(_ bytes: Int, to address: TransportAddress) -> Bool {
        bytes <= flight + earned[address, default: 0]
    }

    /// Spends what `allows` granted: the address's own credit first, then the shared flight.
    public mutating func spend(_ bytes: Int, to address: TransportAddress) {
        let own = min(earned[address, default: 0], max(0, bytes))
        if own > 0 { earned[address, default: 0] -= own }
        flight = max(0, flight - (bytes - own))
    }
}
