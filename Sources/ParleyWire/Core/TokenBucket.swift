/// A token bucket on the caller's clock (sans-IO): up to `capacity` actions at once, then one per
/// `refillInterval`. What Parley puts in front of work a flood could otherwise multiply: route-store
/// lookups, checks toward addresses not yet validated.
public struct TokenBucket: Sendable {
    public let capacity: Int
    public let refillInterval: Duration
    public private(set) var tokens: Int
    private var refilledAt: Instant

    public init(capacity: Int, refillInterval: Duration, now: Instant) {
        precondition(capacity > 0 && refillInterval > .zero, "a token bucket needs room and a refill rate")
        self.capacity = capacity
        self.refillInterval = refillInterval
        tokens = capacity
        refilledAt = now
    }

    /// Takes a token if one is left; false when the bucket is empty.
    public mutating func take(now: Instant) -> Bool {
        refill(now: now)
        guard tokens > 0 else { return false }
        tokens -= 1
        return true
    }

    /// When the next token arrives (now, if one is left).
    public func nextToken(now: Instant) -> Instant {
        tokens > 0 ? now : refilledAt + refillInterval
    }

    /// Whether the bucket would be full at `now`: it then behaves exactly as a new one, so a table
    /// of buckets may forget it.
    public func isFull(now: Instant) -> Bool {
        let missing = Int64(capacity - tokens)
        return missing <= 0 || (now - refilledAt).nanoseconds / refillInterval.nanoseconds >= missing
    }

    private mutating func refill(now: Instant) {
        guard tokens < capacity else {
            refilledAt = now
            return
        }
        let elapsed = (now - refilledAt).nanoseconds, interval = refillInterval.nanoseconds
        guard elapsed >= interval else { return }
        let earned = elapsed / interval
        if earned >= Int64(capacity - tokens) {
            tokens = capacity
            refilledAt = now
        } else {
            tokens += Int(earned)
            refilledAt = refilledAt + .nanoseconds(earned * interval)
        }
    }
}
