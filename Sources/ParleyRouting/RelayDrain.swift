import ParleyWire

/// When a relay stops, sans-IO: the runtime feeds it termination signals, drain requests and a
/// clock tick with the number of live routes, and does what it says.
///
/// - The first SIGTERM or SIGINT, or `POST /admin/drain`, starts draining: the route tables take no
///   new flow (`RouteTable.draining`) and `/readyz` answers 503, so the load balancer moves new
///   calls elsewhere, while every committed route keeps forwarding.
/// - The relay stops when no committed route is left (each idles out once its call has sent
///   nothing for the idle timeout), or when the drain timeout passes with some still live.
/// - A termination signal once draining has begun by a signal (the second signal) stops at once.
///   A signal after `POST /admin/drain` is the first signal: it changes nothing (an orchestrator
///   that asked for the drain and then sends SIGTERM does not cut it short).
public struct RelayDrain: Sendable {
    public enum Trigger: Equatable, Sendable {
        case signal
        case request
    }

    public enum StopReason: Equatable, Sendable {
        /// No committed route was left.
        case drained
        /// The drain timeout passed; these routes were still live.
        case timedOut(remaining: Int)
        /// A second termination signal.
        case interrupted
    }

    public enum Action: Equatable, Sendable {
        case none
        /// Stop taking new flows and answer /readyz 503.
        case startDraining(Trigger)
        /// Still draining: log how many routes remain.
        case reportProgress(remaining: Int, elapsed: Duration)
        case stop(StopReason)
    }

    public enum Phase: Equatable, Sendable {
        case serving
        case draining(since: Instant)
        case stopped(StopReason)
    }

    public let timeout: Duration
    public let progressInterval: Duration
    public private(set) var phase: Phase = .serving
    private var signals = 0
    private var lastReport: Instant?

    public init(timeout: Duration, progressInterval: Duration = .seconds(10)) {
        self.timeout = timeout
        self.progressInterval = progressInterval
    }

    public var isDraining: Bool {
        if case .draining = phase { return true }
        return false
    }

    /// A SIGTERM or SIGINT arrived.
    public mutating func terminationSignal(now: Instant) -> Action {
        signals += 1
        switch phase {
        case .serving: return start(.signal, now: now)
        case .draining: return signals >= 2 ? stop(.interrupted) : .none
        case .stopped: return .none
        }
    }

    /// `POST /admin/drain`.
    public mutating func drainRequested(now: Instant) -> Action {
        guard case .serving = phase else { return .none }
        return start(.request, now: now)
    }

    /// The clock ticked; `liveRoutes` is the committed routes left in every worker's table, or nil
    /// while some worker has not yet seen the drain (its count could still grow).
    public mutating func tick(now: Instant, liveRoutes: Int?) -> Action {
        guard case .draining(let since) = phase else { return .none }
        if liveRoutes == 0 { return stop(.drained) }
        if now - since >= timeout { return stop(.timedOut(remaining: liveRoutes ?? 0)) }
        guard let liveRoutes, now - (lastReport ?? since) >= progressInterval else { return .none }
        lastReport = now
        return .reportProgress(remaining: liveRoutes, elapsed: now - since)
    }

    private mutating func start(_ trigger: Trigger, now: Instant) -> Action {
        phase = .draining(since: now)
        return .startDraining(trigger)
    }

    private mutating func stop(_ reason: StopReason) -> Action {
        phase = .stopped(reason)
        return .stop(reason)
    }
}
