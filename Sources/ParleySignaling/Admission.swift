import ParleyWire

/// The limits on making calls (docs/operations.md, "Limits"). Rates are per second.
public struct AdmissionLimits: Sendable, Equatable {
    /// Calls (and failed authentications) one client address may start: a burst, then a rate. IPv6
    /// clients count per /64, since one host commonly holds a whole /64.
    public var callsPerSecondPerAddress = 5.0
    public var callBurstPerAddress = 20
    /// Calls one API key may start (its client secrets' calls count against it). Calls made with
    /// the API key itself (an app's server) are limited only by these, not per address.
    public var callsPerSecondPerKey = 50.0
    public var callBurstPerKey = 200
    /// Live calls one API key may have at once.
    public var maximumCallsPerKey = 1_000
    /// Live calls this transceiver takes at once.
    public var maximumSessions = 10_000
    /// Client addresses tracked at once. Buckets that refilled are forgotten (they are as a new
    /// address's), so only this many addresses *each busy right now* fill it; past that, new
    /// addresses are refused until some settle.
    public var maximumTrackedAddresses = 65_536

    public init() {}
}

/// Decides whether a call may start (sans-IO; the shell holds it behind a lock and passes the
/// monotonic clock). Rate limits are token buckets; live calls are counted per key and in all, and
/// a call's place is reserved before any work so the session cap holds however many offers race.
public struct Admission: Sendable {
    public let limits: AdmissionLimits
    public private(set) var draining = false
    private var addressBuckets: [ClientAddressKey: TokenBucket] = [:]
    private var keyBuckets: [String: TokenBucket] = [:]
    private var liveCallsByKey: [String: Int] = [:]
    public private(set) var liveCalls = 0

    public init(limits: AdmissionLimits) { self.limits = limits }

    /// Counts one attempt from `address` (a call, or a request whose credential failed).
    public mutating func admit(address: TransportAddress, now: Instant) throws(SignalingError) {
        let key = ClientAddressKey(address)
        if addressBuckets[key] == nil, addressBuckets.count >= limits.maximumTrackedAddresses {
            addressBuckets = addressBuckets.filter { !$0.value.isFull(now: now) }
            guard addressBuckets.count < limits.maximumTrackedAddresses else {
                throw .rateLimited("too many clients are starting calls at once; try again shortly", retryAfterSeconds: 1)
            }
        }
        var bucket = addressBuckets[key] ?? Self.bucket(limits.callBurstPerAddress, limits.callsPerSecondPerAddress, now)
        defer { addressBuckets[key] = bucket }
        guard bucket.take(now: now) else {
            throw .rateLimited("too many requests from \(key): at most \(limits.callBurstPerAddress) at once, then "
                               + "\(Self.rate(limits.callsPerSecondPerAddress)) a second",
                               retryAfterSeconds: Self.seconds(until: bucket.nextToken(now: now), now: now))
        }
    }

    /// Reserves a live call for `keyID`: refused while draining, at the session cap, past the key's
    /// live calls or its rate. Each reservation is given back by `release` (the call ended, or its
    /// setup failed).
    public mutating func reserveCall(keyID: String, now: Instant) throws(SignalingError) {
        guard !draining else { throw .draining }
        guard liveCalls < limits.maximumSessions else { throw .atCapacity }
        let live = liveCallsByKey[keyID] ?? 0
        // Without authentication (--insecure-no-auth) every call is the anonymous key's: limits
        // per key would be a second, lower session cap. The per-address limits still hold.
        guard keyID != CallOwner.anonymousKeyID else {
            liveCallsByKey[keyID] = live + 1
            liveCalls += 1
            return
        }
        guard live < limits.maximumCallsPerKey else {
            throw .rateLimited("\(keyID) has \(live) live calls, its limit: end one first", retryAfterSeconds: 1)
        }
        var bucket = keyBuckets[keyID] ?? Self.bucket(limits.callBurstPerKey, limits.callsPerSecondPerKey, now)
        defer { keyBuckets[keyID] = bucket }
        guard bucket.take(now: now) else {
            throw .rateLimited("too many calls for \(keyID): at most \(limits.callBurstPerKey) at once, then "
                               + "\(Self.rate(limits.callsPerSecondPerKey)) a second",
                               retryAfterSeconds: Self.seconds(until: bucket.nextToken(now: now), now: now))
        }
        liveCallsByKey[keyID] = live + 1
        liveCalls += 1
    }

    public mutating func release(keyID: String) {
        guard let live = liveCallsByKey[keyID], live > 0 else { return }
        liveCallsByKey[keyID] = live == 1 ? nil : live - 1
        liveCalls -= 1
    }

    public func liveCalls(keyID: String) -> Int { liveCallsByKey[keyID] ?? 0 }

    /// From now on no new call is admitted; live ones go on.
    public mutating func startDraining() { draining = true }

    private static func bucket(_ burst: Int, _ rate: Double, _ now: Instant) -> TokenBucket {
        let interval = Duration.nanoseconds(Int64(saturating: 1e9 / max(rate, 1e-6)))
        return TokenBucket(capacity: max(1, burst), refillInterval: max(interval, .nanoseconds(1)), now: now)
    }

    private static func seconds(until instant: Instant, now: Instant) -> Int {
        let nanoseconds = (instant - now).nanoseconds
        return max(1, Int(clamping: (nanoseconds &+ 999_999_999) / 1_000_000_000))
    }

    private static func rate(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(saturating: value))" : "\(value)"
    }
}

/// The part of a client's address its limits are kept by: the whole IPv4 address, the /64 of an
/// IPv6 one. Ports never count.
struct ClientAddressKey: Hashable, CustomStringConvertible {
    let high: UInt64
    let low: UInt64
    let isV4: Bool

    init(_ address: TransportAddress) {
        switch address {
        case .v4(let ip, _):
            high = 0
            low = UInt64(ip.bits)
            isV4 = true
        case .v6(let ip, _):
            high = ip.high
            low = 0
            isV4 = false
        }
    }

    var description: String {
        isV4 ? IPv4Address(bits: UInt32(truncatingIfNeeded: low)).description : "\(IPv6Address(high: high, low: 0))/64"
    }
}
