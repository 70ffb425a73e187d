import NIOCore
import NIOEmbedded
import NIOPosix
import ParleyWire
import Testing
@testable import ParleyRelay
@testable import ParleyRouting

@Suite struct RouteStoreTests {
    static let client = TransportAddress.v4(IPv4Address(198, 51, 100, 1), port: 5000)
    static let worker = TransportAddress.v4(IPv4Address(10, 0, 0, 1), port: 40000)

    @Test func inMemoryStoreSavesLooksUpAndExpires() throws {
        let store = InMemoryRouteStore()
        let loop = EmbeddedEventLoop()
        #expect(try store.lookup(client: Self.client, on: loop).wait() == nil)
        store.save(client: Self.client, route: StoredRoute(transceiver: Self.worker), lifetime: .seconds(30))
        #expect(try store.lookup(client: Self.client, on: loop).wait() == StoredRoute(transceiver: Self.worker))
        store.save(client: Self.client, route: StoredRoute(transceiver: Self.worker), lifetime: .zero)
        #expect(try store.lookup(client: Self.client, on: loop).wait() == nil, "expired")
        #expect(store.state == .memory)
    }

    @Test func inMemoryStoreIsBounded() throws {
        let store = InMemoryRouteStore(maximumEntries: 10)
        for port in 0..<50 {
            store.save(client: .v4(IPv4Address(1, 2, 3, 4), port: UInt16(port)), route: StoredRoute(transceiver: Self.worker), lifetime: .seconds(30))
        }
        let loop = EmbeddedEventLoop()
        let known = try (0..<50).filter { port in
            try store.lookup(client: .v4(IPv4Address(1, 2, 3, 4), port: UInt16(port)), on: loop).wait() != nil
        }
        #expect(known.count == 10)
    }

    @Test func storeKeysAndValuesRoundTripThroughText() {
        #expect(Self.client.storeKey == "parley:route:198.51.100.1:5000")
        #expect(TransportAddress("\(Self.worker)") == Self.worker)
        let v6 = TransportAddress.v6(IPv6Address("fd00::1")!, port: 3478)
        #expect(TransportAddress("\(v6)") == v6)
        // A forwarded flow's route names the peer relay socket it arrives through.
        let forwarded = StoredRoute(transceiver: Self.worker, via: .v4(IPv4Address(10, 1, 0, 2), port: 3479))
        #expect("\(forwarded)" == "10.0.0.1:40000 via 10.1.0.2:3479")
        #expect(StoredRoute("\(forwarded)") == forwarded)
        #expect(StoredRoute("\(StoredRoute(transceiver: v6, via: v6))") == StoredRoute(transceiver: v6, via: v6))
        #expect(StoredRoute("10.0.0.1:40000") == StoredRoute(transceiver: Self.worker))
        for bad in ["", "10.0.0.1:40000 via", "10.0.0.1:40000 by 10.1.0.2:1", "x via 10.1.0.2:1", "10.0.0.1:40000  via 10.1.0.2:1"] {
            #expect(StoredRoute(bad) == nil, "\(bad)")
        }
    }

    @Test func respRepliesDecodeAndPartialOnesWait() throws {
        func decode(_ text: String) throws -> RESPValue? {
            let read = try Array(text.utf8).withUnsafeBytes { bytes throws(RESPError) in try RESPReader.read(bytes) }
            if let read { #expect(read.length == text.utf8.count, "the whole reply, and no more") }
            return read?.value
        }
        #expect(try decode("+OK\r\n") == .simple("OK"))
        #expect(try decode("-ERR wrong\r\n") == .error("ERR wrong"))
        #expect(try decode(":42\r\n") == .integer(42))
        #expect(try decode("$14\r\n10.0.0.1:40000\r\n") == .bulk("10.0.0.1:40000"))
        #expect(try decode("$-1\r\n") == .bulk(nil))
        #expect(try decode("*2\r\n$1\r\na\r\n:1\r\n") == .array([.bulk("a"), .integer(1)]))
        #expect(try decode("$14\r\n10.0.0.1") == nil, "incomplete: wait for more bytes")
        #expect(try decode("+OK") == nil)
        #expect(throws: RESPError.unknownType(UInt8(ascii: "?"))) { try decode("?what\r\n") }
        #expect(throws: RESPError.tooLarge) { try decode("$99999999\r\n") }
        #expect(throws: RESPError.badLength) { try decode("$-5\r\n") }
        #expect(throws: RESPError.tooLarge) { try decode("$\(Int.max)\r\n") }
        #expect(throws: RESPError.badLength) { try decode("$\(Int.min)\r\n") }
        #expect(throws: RESPError.badInteger) { try decode(":x\r\n") }
        #expect(throws: RESPError.tooDeep) { try decode(String(repeating: "*1\r\n", count: 9) + ":1\r\n") }
        #expect(throws: RESPError.tooLarge) { try decode("+" + String(repeating: "a", count: 5000)) }
        #expect(throws: RESPError.badLength) { try decode("$2\r\nabXY") }
    }

    @Test func commandsEncodeAsArraysOfBulkStrings() {
        let bytes = RESPValue.encode(command: ["SET", "k", "v", "EX", "30"])
        #expect(String(decoding: bytes, as: UTF8.self) == "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n30\r\n")
    }

    /// Against nothing listening: lookups answer nil promptly instead of hanging.
    @Test func unreachableRedisAnswersUnknown() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let store = RedisRouteStore(host: "127.0.0.1", port: 1, eventLoop: group.next(), logger: .init(label: "test"))
        let found = try await store.lookup(client: Self.client, on: group.next()).get()
        #expect(found == nil)
        #expect(!store.isConnected)
        store.shutdown()
        try await group.shutdownGracefully()
    }
}
