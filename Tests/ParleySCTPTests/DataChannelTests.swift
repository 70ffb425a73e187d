import CUsrSCTP
import ParleyWire
import Testing
@testable import ParleySCTP

/// DCEP against usrsctp sending raw DCEP messages, including bad ones: refused or dropped with a
/// counted reason, and the association lives on.
@Suite(.serialized) struct DataChannelTests {
    func makeLink(localMaximum: Int = 262_144) throws -> (AssociationTests.Link, DataChannels) {
        let link = try AssociationTests.Link()
        let channels = DataChannels(association: link.association, dtlsServer: true, localMaximumMessageSize: localMaximum,
                                    remoteMaximumMessageSize: 262_144)
        return (link, channels)
    }

    /// DATA_CHANNEL_OPEN: reliable, ordered, priority 256, label, protocol (RFC 8832 §5.1).
    static func openMessage(label: String, protocol: String = "", type: UInt8 = 0x00) -> [UInt8] {
        let labelBytes = Array(label.utf8), protocolBytes = Array(`protocol`.utf8)
        return [0x03, type, 0x01, 0x00, 0, 0, 0, 0, UInt8(labelBytes.count >> 8), UInt8(labelBytes.count & 0xFF),
                UInt8(protocolBytes.count >> 8), UInt8(protocolBytes.count & 0xFF)] + labelBytes + protocolBytes
    }

    /// Pumps the link with the association's events routed through `channels`.
    func pump(_ link: AssociationTests.Link, _ channels: DataChannels, events: inout [DataChannelEvent]) {
        for _ in 0..<200 {
            var moved = false
            for packet in link.peer.takeOutput() {
                packet.withUnsafeBytes { channels.handle($0, now: link.now) }
                moved = true
            }
            for packet in channels.takeOutgoing() {
                link.peer.input(packet)
                moved = true
            }
            events += channels.takeEvents()
            link.peer.receiveAll()
            if !moved {
                link.now = link.now + .milliseconds(10)
                usrsctp_handle_timers(10)
                channels.handleTimeout(now: link.now)
            }
        }
    }

    @Test func openAckMessagesAndCloseWithUsrsctp() throws {
        try UsrSCTP.lock.withLock {
            let (link, channels) = try makeLink()
            var events: [DataChannelEvent] = []
            link.peer.connect()
            pump(link, channels, events: &events)
            link.peer.send(Self.openMessage(label: "oai-events", protocol: "json"), stream: 0, ppid: 50)
            pump(link, channels, events: &events)
            #expect(events.contains(.opened(DataChannel(id: 0, label: "oai-events", protocol: "json", ordered: true,
                                                        reliability: .reliable, priority: 256))))
            #expect(link.peer.received.first.map { ($0.stream, $0.ppid, $0.payload) } ?? (9, 9, []) == (0, 50, [0x02]), "DATA_CHANNEL_ACK")
            link.peer.send(Array("hello".utf8), stream: 0, ppid: 51)
            link.peer.send([1, 2, 3], stream: 0, ppid: 53)
            link.peer.send([0], stream: 0, ppid: 56)
            pump(link, channels, events: &events)
            #expect(events.contains(.message(channel: 0, label: "oai-events", binary: false, payload: Array("hello".utf8))))
            #expect(events.contains(.message(channel: 0, label: "oai-events", binary: true, payload: [1, 2, 3])))
            #expect(events.contains(.message(channel: 0, label: "oai-events", binary: false, payload: [])))
            try channels.send(Array("back".utf8), binary: false, channel: 0, now: link.now)
            try channels.send([], binary: true, channel: 0, now: link.now)
            pump(link, channels, events: &events)
            #expect(link.peer.received.contains { $0.ppid == 51 && $0.payload == Array("back".utf8) })
            #expect(link.peer.received.contains { $0.ppid == 57 && $0.payload == [0] })
            // The client closes: its stream reset closes the channel, and ours answers it.
            link.peer.resetOutgoing(streams: [0])
            pump(link, channels, events: &events)
            #expect(events.contains(.closed(channel: 0, label: "oai-events")))
            #expect(channels.channels.isEmpty)
        }
    }

    @Test func badDCEPUnknownChannelsAndOversizedMessagesAreCountedDrops() throws {
        try UsrSCTP.lock.withLock {
            let (link, channels) = try makeLink(localMaximum: 1000)
            var events: [DataChannelEvent] = []
            link.peer.connect()
            pump(link, channels, events: &events)
            link.peer.send([0x03, 0x00], stream: 0, ppid: 50)                  // truncated OPEN
            link.peer.send([0x7F], stream: 2, ppid: 50)                        // unknown DCEP type
            link.peer.send(Self.openMessage(label: "ours"), stream: 7, ppid: 50)  // odd ids are ours to open
            link.peer.send(Array("lost".utf8), stream: 4, ppid: 51)            // no channel on stream 4
            link.peer.send(Self.openMessage(label: "x"), stream: 6, ppid: 50)
            link.peer.send([UInt8](repeating: 1, count: 2000), stream: 6, ppid: 53)  // over our 1000-byte maximum
            link.peer.send([9], stream: 6, ppid: 99)                           // unknown PPID
            link.peer.send(Array("fine".utf8), stream: 6, ppid: 51)
            pump(link, channels, events: &events)
            #expect(channels.drops[.malformedDCEP] == 3)
            #expect(channels.channels[7] == nil)
            #expect(channels.drops[.unknownChannel] == 1)
            #expect(channels.drops[.tooLarge] == 1)
            #expect(channels.drops[.unknownProtocolIdentifier] == 1)
            #expect(events.contains(.message(channel: 6, label: "x", binary: false, payload: Array("fine".utf8))), "it lives on")
            #expect(throws: DataChannelError.notOpen) { try channels.send([1], binary: true, channel: 40, now: link.now) }
        }
    }

    /// What a peer can make an association hold for its channels is bounded by count, not only by
    /// bytes: channels and label sizes on the way in, queued one-byte messages on the way out (the
    /// echo agent returns whatever arrives).
    @Test func channelCountLabelSizeAndQueuedChunksAreBounded() throws {
        try UsrSCTP.lock.withLock {
            let (link, channels) = try makeLink()
            var events: [DataChannelEvent] = []
            link.peer.connect()
            pump(link, channels, events: &events)
            link.peer.send(Self.openMessage(label: String(repeating: "x", count: 2000)), stream: 0, ppid: 50)
            for stream in stride(from: UInt16(2), through: 600, by: 2) {
                link.peer.send(Self.openMessage(label: "c\(stream)"), stream: stream, ppid: 50)
            }
            pump(link, channels, events: &events)
            #expect(channels.channels[0] == nil, "a 2,000-byte label is refused")
            #expect(channels.channels.count == DataChannels.maximumChannels)
            #expect(channels.drops[.tooManyChannels] == 1 + 300 - DataChannels.maximumChannels)
            // One-byte messages with nothing acknowledged meanwhile: refused past the chunk limit.
            var accepted = 0
            do {
                for _ in 0..<20_000 {
                    try channels.send([1], binary: true, channel: 2, now: link.now)
                    accepted += 1
                }
            } catch {
                #expect(error as? DataChannelError == .bufferFull)
            }
            #expect(accepted == DataChannels.maximumBufferedChunks)
            #expect(link.association.bufferedAmount == DataChannels.maximumBufferedChunks)
        }
    }

    @Test func messagesOverThePeersMaximumAreRefused() throws {
        try UsrSCTP.lock.withLock {
            let (link, channels) = try makeLink()
            channels.remoteMaximumMessageSize = 100
            var events: [DataChannelEvent] = []
            link.peer.connect()
            pump(link, channels, events: &events)
            channels.addNegotiated(id: 3, label: "negotiated")
            #expect(throws: DataChannelError.tooLarge(100)) {
                try channels.send([UInt8](repeating: 0, count: 101), binary: true, channel: 3, now: link.now)
            }
            try channels.send([UInt8](repeating: 7, count: 100), binary: true, channel: 3, now: link.now)
            pump(link, channels, events: &events)
            #expect(link.peer.received.last?.payload.count == 100)
        }
    }
}

extension DataChannelTests {
    /// A channel opened with "max retransmits 0": messages whose only transmission is lost are
    /// abandoned and skipped with FORWARD-TSN; the ones after them arrive; nothing stalls.
    @Test func partialReliabilityDropsWhatItShould() throws {
        try UsrSCTP.lock.withLock {
            let (link, channels) = try makeLink()
            var events: [DataChannelEvent] = []
            link.peer.connect()
            pump(link, channels, events: &events)
            link.peer.send(Self.openMessage(label: "lossy", type: 0x01), stream: 8, ppid: 50)
            pump(link, channels, events: &events)
            #expect(channels.channels[8]?.reliability == .maximumRetransmits(0))
            link.peer.receiveAll()

            var blackout = true
            func run(seconds: Int) {
                for _ in 0..<(seconds * 100) {
                    for packet in link.peer.takeOutput() { packet.withUnsafeBytes { channels.handle($0, now: link.now) } }
                    for packet in channels.takeOutgoing() where !blackout { link.peer.input(packet) }
                    events += channels.takeEvents()
                    link.peer.receiveAll()
                    link.now = link.now + .milliseconds(10)
                    usrsctp_handle_timers(10)
                    channels.handleTimeout(now: link.now)
                }
            }
            for index in 0..<5 { try channels.send(Array("lost-\(index)".utf8), binary: false, channel: 8, now: link.now) }
            run(seconds: 3)  // every first transmission is lost; the retransmission timer abandons them
            blackout = false
            for index in 0..<5 { try channels.send(Array("kept-\(index)".utf8), binary: false, channel: 8, now: link.now) }
            run(seconds: 5)
            let received = link.peer.received.filter { $0.stream == 8 && $0.ppid == 51 }.map { String(decoding: $0.payload, as: UTF8.self) }
            #expect(received == (0..<5).map { "kept-\($0)" })
            #expect(link.association.state == .established)
        }
    }

    @Test func channelsWeOpenReachUsrsctpAsDCEPOpen() throws {
        try UsrSCTP.lock.withLock {
            let (link, channels) = try makeLink()
            var events: [DataChannelEvent] = []
            link.peer.connect()
            pump(link, channels, events: &events)
            let id = try #require(channels.open(label: "server-events", protocol: "json", now: link.now))
            #expect(id % 2 == 1, "the DTLS server opens odd stream ids")
            pump(link, channels, events: &events)
            let open = try #require(link.peer.received.first { $0.ppid == 50 })
            #expect(open.stream == id)
            #expect(open.payload == Self.openMessage(label: "server-events", protocol: "json"))
            // usrsctp's ACK completes it.
            link.peer.send([0x02], stream: id, ppid: 50)
            pump(link, channels, events: &events)
            #expect(events.contains { if case .opened(let channel) = $0 { return channel.id == id } else { return false } })
        }
    }
}
