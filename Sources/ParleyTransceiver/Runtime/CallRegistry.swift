import Synchronization

/// Which worker owns each call, for signaling requests that arrive on any thread.
final class CallRegistry: Sendable {
    struct Entry: Sendable {
        var worker: Int
        var sessionKey: UInt32
    }

    private let calls = Mutex<[String: Entry]>([:])

    func insert(_ id: String, _ entry: Entry) { calls.withLock { $0[id] = entry } }

    func remove(_ id: String) { _ = calls.withLock { $0.removeValue(forKey: id) } }

    func lookup(_ id: String) -> Entry? { calls.withLock { $0[id] } }

    var count: Int { calls.withLock { $0.count } }
}
