import ParleyWire

/// A data channel as DCEP (RFC 8832) describes it.
public struct DataChannel: Equatable, Sendable {
    public enum Reliability: Equatable, Sendable {
        case reliable
        /// Partial reliability by retransmissions (RFC 8832 channel types 0x01/0x81).
        case maximumRetransmits(UInt32)
        /// Partial reliability by lifetime in milliseconds (0x02/0x82).
        case lifetime(UInt32)
    }

    public var id: UInt16
    public var label: String
    public var `protocol`: String
    public var ordered: Bool
    public var reliability: Reliability
    public var priority: UInt16
}

/// What the data-channel layer reports.
public enum DataChannelEvent: Equatable, Sendable {
    case opened(DataChannel)
    case message(channel: UInt16, label: String, binary: Bool, payload: [UInt8])
    case closed(channel: UInt16, label: String)
    /// The SCTP association ended.
    case transportClosed(String)
}

/// Why a data-channel message was refused; counted.
public enum DataChannelDropReason: String, CaseIterable, Sendable {
    case malformedDCEP = "malformed_dcep"
    case unknownChannel = "unknown_channel"
    case tooLarge = "too_large"
    case unknownProtocolIdentifier = "unknown_ppid"
    /// An OPEN past the channel or label limits (`DataChannels.maximumChannels`, `maximumLabelLength`).
    case tooManyChannels = "channel_limit"
}

public enum DataChannelError: Error, Equatable, Sendable {
    case notOpen
    case tooLarge(Int)
    /// More than `DataChannels.maximumBufferedAmount` waits to be sent: the sender must slow down.
    case bufferFull
}

/// DCEP over an SCTP association: channels opened by the peer (DATA_CHANNEL_OPEN → ACK) or by us,
/// negotiated channels, text/binary/empty messages, close by stream reset. Sans-IO, one thread.
public final class DataChannels {
    /// Payload protocol identifiers (RFC 8831 §8).
    enum PPID {
        static let control: UInt32 = 50
        static let string: UInt32 = 51
        static let binary: UInt32 = 53
        static let emptyString: UInt32 = 56
        static let emptyBinary: UInt32 = 57
    }

    public let association: SCTPAssociation
    /// Unsent and unacknowledged bytes an association may hold for its channels (memory per call
    /// stays bounded whatever an agent sends).
    public static let maximumBufferedAmount = 4 << 20
    /// …and chunks (a queued chunk costs ~150 bytes besides its payload: 1-byte messages must not
    /// make 4 MiB into half a gigabyte).
    public static let maximumBufferedChunks = 16_384
    /// Channels the peer may have open at once, and the longest label and protocol it may give them:
    /// what an association holds for its channels stays small whatever the peer opens.
    public static let maximumChannels = 256
    public static let maximumLabelLength = 1024
    /// The largest message we accept (what our SDP advertises).
    public let localMaximumMessageSize: Int
    /// The largest message the peer accepts (its SDP; 0 means no limit, RFC 8841 §6.1).
    public var remoteMaximumMessageSize: Int
    /// We are the DTLS server, so channels we open use odd stream ids (RFC 8832 §6).
    private let usesOddIDs: Bool
    public private(set) var channels: [UInt16: DataChannel] = [:]
    /// Channels that can carry messages now (a negotiated one added before the association is up is not yet).
    public var openChannels: [UInt16: DataChannel] { channels.filter { !negotiatedUnopened.contains($0.key) } }
    private var opening: Set<UInt16> = []
    /// Negotiated channels added before the association was established: `opened` once it is.
    private var negotiatedUnopened: [UInt16] = []
    /// Channels we started closing: the peer's answering reset ends them without another of ours.
    private var closing: Set<UInt16> = []
    public private(set) var drops: [DataChannelDropReason: Int] = [:]
    private var events: [DataChannelEvent] = []

    public init(association: SCTPAssociation, dtlsServer: Bool, localMaximumMessageSize: Int = 262_144,
                remoteMaximumMessageSize: Int = 65536) {
        self.association = association
        usesOddIDs = dtlsServer
        self.localMaximumMessageSize = localMaximumMessageSize
        self.remoteMaximumMessageSize = remoteMaximumMessageSize
    }

    /// Feeds one SCTP packet (from DTLS).
    public func handle(_ packet: UnsafeRawBufferPointer, now: Instant) {
        association.handle(packet, now: now)
        process(now: now)
    }

    public func handleTimeout(now: Instant) {
        association.handleTimeout(now: now)
        process(now: now)
    }

    public func takeEvents() -> [DataChannelEvent] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    /// Opens a channel from our side (DATA_CHANNEL_OPEN); it is usable at once (RFC 8832 §5).
    @discardableResult
    public func open(label: String, protocol: String = "", ordered: Bool = true, now: Instant) -> UInt16? {
        guard association.state == .established else { return nil }
        var id: UInt16 = usesOddIDs ? 1 : 0
        let streams = association.outboundStreams
        while channels[id] != nil {
            guard id < streams &- 2 else { return nil }
            id += 2
        }
        guard id < streams else { return nil }
        let channel = DataChannel(id: id, label: label, protocol: `protocol`, ordered: ordered, reliability: .reliable, priority: 256)
        channels[id] = channel
        opening.insert(id)
        var message: [UInt8] = [0x03, ordered ? 0x00 : 0x80, 0x01, 0x00, 0, 0, 0, 0]
        // DCEP lengths are 16 bits; labels that long would not fit a packet anyway.
        let labelBytes = Array(label.utf8.prefix(1024)), protocolBytes = Array(`protocol`.utf8.prefix(1024))
        message += [UInt8(truncatingIfNeeded: labelBytes.count >> 8), UInt8(truncatingIfNeeded: labelBytes.count),
                    UInt8(truncatingIfNeeded: protocolBytes.count >> 8), UInt8(truncatingIfNeeded: protocolBytes.count)]
        message += labelBytes + protocolBytes
        association.send(stream: id, protocolIdentifier: PPID.control, payload: message, unordered: false, now: now)
        return id
    }

    /// A channel both sides agreed on out of band (`negotiated: true`, RFC 8832 §6): no DCEP. It is
    /// reported `opened` once the association is established (at once if it already is). False
    /// when `id` is beyond the association's streams or already taken.
    @discardableResult
    public func addNegotiated(id: UInt16, label: String, ordered: Bool = true) -> Bool {
        guard id < association.configuration.streams, id < association.outboundStreams, channels[id] == nil else { return false }
        let channel = DataChannel(id: id, label: label, protocol: "", ordered: ordered, reliability: .reliable, priority: 256)
        channels[id] = channel
        if association.state == .established { events.append(.opened(channel)) } else { negotiatedUnopened.append(id) }
        return true
    }

    /// Sends a message on an open channel: text (PPID 51) or binary (53); empty ones as RFC 8831 §6.6 says.
    public func send(_ payload: [UInt8], binary: Bool, channel id: UInt16, now: Instant) throws(DataChannelError) {
        guard let channel = channels[id], association.state == .established else { throw .notOpen }
        let limit = remoteMaximumMessageSize == 0 ? Int.max : remoteMaximumMessageSize
        guard payload.count <= limit else { throw .tooLarge(limit) }
        guard association.bufferedAmount + payload.count <= Self.maximumBufferedAmount,
              association.bufferedChunks < Self.maximumBufferedChunks else { throw .bufferFull }
        var retransmissions: Int?
        var lifetime: Duration?
        switch channel.reliability {
        case .reliable: break
        case .maximumRetransmits(let count): retransmissions = Int(count)
        case .lifetime(let milliseconds): lifetime = .milliseconds(Int64(milliseconds))
        }
        let identifier = payload.isEmpty ? (binary ? PPID.emptyBinary : PPID.emptyString) : (binary ? PPID.binary : PPID.string)
        // Until the peer acknowledges the OPEN, messages go ordered so none overtakes it (RFC 8832 §6).
        association.send(stream: id, protocolIdentifier: identifier, payload: payload.isEmpty ? [0] : payload,
                         unordered: !channel.ordered && !opening.contains(id), now: now, maximumRetransmissions: retransmissions, lifetime: lifetime)
    }

    /// Closes a channel: reset our outgoing stream; the peer resets its own in turn (RFC 8831 §6.7).
    public func close(channel id: UInt16, now: Instant) {
        guard channels[id] != nil, !closing.contains(id) else { return }
        closing.insert(id)
        association.resetStreams([id], now: now)
    }

    public func takeOutgoing() -> [[UInt8]] { association.takeOutgoing() }

    private func process(now: Instant) {
        for event in association.takeEvents() {
            switch event {
            case .established:
                // Only now are the peer's streams known: a negotiated channel beyond them cannot carry messages.
                for id in negotiatedUnopened {
                    guard let channel = channels[id] else { continue }
                    if id < association.outboundStreams { events.append(.opened(channel)) } else {
                        channels[id] = nil
                        drop(.unknownChannel)
                    }
                }
                negotiatedUnopened.removeAll()
            case .message(let stream, let identifier, let payload, _):
                receive(stream: stream, identifier: identifier, payload: payload, now: now)
            case .streamsReset(let streams):
                for stream in streams {
                    guard let channel = channels.removeValue(forKey: stream) else { continue }
                    opening.remove(stream)
                    // Answer with our own reset unless we started the close.
                    if closing.remove(stream) == nil { association.resetStreams([stream], now: now) }
                    events.append(.closed(channel: stream, label: channel.label))
                }
            case .closed(let reason):
                for (id, channel) in channels { events.append(.closed(channel: id, label: channel.label)) }
                channels.removeAll()
                events.append(.transportClosed(reason))
            }
        }
    }

    private func receive(stream: UInt16, identifier: UInt32, payload: [UInt8], now: Instant) {
        switch identifier {
        case PPID.control:
            receiveControl(stream: stream, payload, now: now)
        case PPID.string, PPID.binary, PPID.emptyString, PPID.emptyBinary:
            guard let channel = channels[stream] else { return drop(.unknownChannel) }
            guard payload.count <= localMaximumMessageSize else { return drop(.tooLarge) }
            let empty = identifier == PPID.emptyString || identifier == PPID.emptyBinary
            events.append(.message(channel: stream, label: channel.label,
                                   binary: identifier == PPID.binary || identifier == PPID.emptyBinary,
                                   payload: empty ? [] : payload))
        default:
            drop(.unknownProtocolIdentifier)
        }
    }

    private func receiveControl(stream: UInt16, _ message: [UInt8], now: Instant) {
        guard let type = message.first else { return drop(.malformedDCEP) }
        switch type {
        case 0x03:
            guard message.count >= 12 else { return drop(.malformedDCEP) }
            let channelType = message[1]
            let priority = UInt16(message[2]) << 8 | UInt16(message[3])
            let parameter = UInt32(message[4]) << 24 | UInt32(message[5]) << 16 | UInt32(message[6]) << 8 | UInt32(message[7])
            let labelLength = Int(message[8]) << 8 | Int(message[9])
            let protocolLength = Int(message[10]) << 8 | Int(message[11])
            // The peer opens only streams of its own parity (RFC 8832 §6), within the streams we offered.
            let peerParity = (stream & 1 == 1) != usesOddIDs
            guard message.count >= 12 + labelLength + protocolLength, channels[stream] == nil, peerParity,
                  stream < association.outboundStreams else {
                return drop(.malformedDCEP)
            }
            guard labelLength <= Self.maximumLabelLength, protocolLength <= Self.maximumLabelLength,
                  channels.count < Self.maximumChannels else { return drop(.tooManyChannels) }
            let reliability: DataChannel.Reliability
            switch channelType & 0x7F {
            case 0x00: reliability = .reliable
            case 0x01: reliability = .maximumRetransmits(parameter)
            case 0x02: reliability = .lifetime(parameter)
            default: return drop(.malformedDCEP)
            }
            let channel = DataChannel(
                id: stream, label: String(decoding: message[12..<(12 + labelLength)], as: UTF8.self),
                protocol: String(decoding: message[(12 + labelLength)..<(12 + labelLength + protocolLength)], as: UTF8.self),
                ordered: channelType & 0x80 == 0, reliability: reliability, priority: priority)
            channels[stream] = channel
            association.send(stream: stream, protocolIdentifier: PPID.control, payload: [0x02], unordered: false, now: now)
            events.append(.opened(channel))
        case 0x02:
            guard opening.remove(stream) != nil, let channel = channels[stream] else { return drop(.malformedDCEP) }
            events.append(.opened(channel))
        default:
            drop(.malformedDCEP)
        }
    }

    private func drop(_ reason: DataChannelDropReason) { drops[reason, default: 0] += 1 }
}
