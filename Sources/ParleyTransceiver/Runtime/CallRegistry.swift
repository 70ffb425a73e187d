import ParleySignaling
import ParleyWire
import Synchronization

/// Which worker owns each call and whom it belongs to, for signaling requests that arrive on any
/// thread; with the admission decisions (rate limits, live calls per key and in all, draining),
/// under the same lock, so a call's place is taken before any work and the caps hold however many
/// offers race.
final class CallRegistry: Sendable {
    struct Entry: Sendable {
        var worker: Int
        var sessionKey: UInt32
        var owner: CallOwner
    }

    private struct State {
        var calls: [String: Entry] = [:]
        var admission: Admission
    }

    private let state: Mutex<State>

    init(limits: AdmissionLimits = AdmissionLimits()) {
        state = Mutex(State(admission: Admission(limits: limits)))
    }

    /// Counts an attempt from a client address against its rate (calls, failed authentications).
    func admit(address: TransportAddress, now: Instant) throws(SignalingError) {
        try state.withLock { (state: inout State) throws(SignalingError) in try state.admission.admit(address: address, now: now) }
    }

    /// Takes a live call's place for `keyID`; `insert` (then `remove`) or `cancel` gives it back.
    func reserve(keyID: String, now: Instant) throws(SignalingError) {
        try state.withLock { (state: inout State) throws(SignalingError) in try state.admission.reserveCall(keyID: keyID, now: now) }
    }

    /// A reserved call that was not made after all.
    func cancel(keyID: String) { state.withLock { $0.admission.release(keyID: keyID) } }

    /// Registers a call; false (and nothing changed) when the id is taken.
    func insert(_ id: String, _ entry: Entry) -> Bool {
        state.withLock { state in
            guard state.calls[id] == nil else { return false }
            state.calls[id] = entry
            return true
        }
    }

    /// Takes back an `insert` whose session was not made (its reservation stays for the caller's
    /// `cancel`, or its next attempt).
    func withdraw(_ id: String) { state.withLock { _ = $0.calls.removeValue(forKey: id) } }

    /// Moves a call to another session key (an ICE restart's new token).
    func rekey(_ id: String, sessionKey: UInt32) { state.withLock { $0.calls[id]?.sessionKey = sessionKey } }

    /// The call ended: its place is given back.
    func remove(_ id: String) {
        state.withLock { state in
            guard let entry = state.calls.removeValue(forKey: id) else { return }
            state.admission.release(keyID: entry.owner.keyID)
        }
    }

    func lookup(_ id: String) -> Entry? { state.withLock { $0.calls[id] } }

    var count: Int { state.withLock { $0.calls.count } }

    /// Calls made and calls whose place is reserved (an offer being answered): what a drain waits for.
    var liveOrReserved: Int { state.withLock { max($0.calls.count, $0.admission.liveCalls) } }

    func liveCalls(keyID: String) -> Int { state.withLock { $0.admission.liveCalls(keyID: keyID) } }

    func startDraining() { state.withLock { $0.admission.startDraining() } }

    var isDraining: Bool { state.withLock { $0.admission.draining } }
}
