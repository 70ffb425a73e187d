import NIOCore
import ParleyWire
import Synchronization

/// Where committed routes are kept beyond one relay process, so a restarted relay, or a replica
/// that never saw a flow, can route it at once. Writes are fire-and-forget (never on the packet
/// path's critical section); lookups complete on the caller's event loop.
public protocol RouteStore: Sendable {
    /// Records (or refreshes) `client → route` for `lifetime`.
    func save(client: TransportAddress, route: StoredRoute, lifetime: Duration)
    /// The route of `client`, if the store knows one; nil also when the store is unavailable.
    func lookup(client: TransportAddress, on eventLoop: EventLoop) -> EventLoopFuture<StoredRoute?>
    /// Where the store stands, for metrics and logs.
    var state: RouteStoreState { get }
}

/// A route as the store keeps it: where a client's datagrams go (a transceiver worker, or on a
/// cluster's edge the relay of the cluster that owns the call), and, for a flow another cluster's
/// relay forwards here (two-stage routing), that relay's socket, through which answers go back.
/// Text: `10.0.0.5:40000`, or `10.0.0.5:40000 via 10.1.0.2:3479`.
public struct StoredRoute: Hashable, Sendable, CustomStringConvertible {
    public var transceiver: TransportAddress
    public var via: TransportAddress?

    public init(transceiver: TransportAddress, via: TransportAddress? = nil) {
        self.transceiver = transceiver
        self.via = via
    }

    public init?(_ text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            guard let transceiver = TransportAddress(String(parts[0])) else { return nil }
            self.init(transceiver: transceiver)
        case 3 where parts[1] == "via":
            guard let transceiver = TransportAddress(String(parts[0])), let via = TransportAddress(String(parts[2])) else { return nil }
            self.init(transceiver: transceiver, via: via)
        default:
            return nil
        }
    }

    public var description: String { via.map { "\(transceiver) via \($0)" } ?? "\(transceiver)" }
}

/// A route store's condition, as `parley_relay_store_state{state}` reports it.
public enum RouteStoreState: String, CaseIterable, Sendable {
    /// In this process: always there.
    case memory
    /// Redis: the first connection is being made.
    case connecting
    case connected
    /// A connection that was up went away (or stopped answering); reconnecting.
    case disconnected
    /// No TCP connection, or no answer within the time allowed.
    case unreachable
    /// The TLS handshake failed: the certificate is not trusted or names another host, or the
    /// server does not speak TLS.
    case tlsFailed = "tls_failed"
    /// AUTH refused (WRONGPASS), or the server wants a password it was not given (NOAUTH).
    case authFailed = "auth_failed"
    /// The server refused the rest of the setup (SELECT of a database it does not have).
    case refused

    /// Whether saves and lookups can be served.
    public var isAvailable: Bool { self == .memory || self == .connected }
}

/// The default store: a map in this process, shared by its relay workers. Entries expire like
/// Redis keys do.
public final class InMemoryRouteStore: RouteStore {
    private let routes = Mutex<[TransportAddress: (route: StoredRoute, expires: ContinuousClock.Instant)]>([:])
    private let maximumEntries: Int

    public init(maximumEntries: Int = 1_000_000) { self.maximumEntries = maximumEntries }

    public func save(client: TransportAddress, route: StoredRoute, lifetime: Duration) {
        let now = ContinuousClock.now
        routes.withLock { routes in
            if routes.count >= maximumEntries { routes = routes.filter { $0.value.expires > now } }
            guard routes.count < maximumEntries || routes[client] != nil else { return }
            routes[client] = (route, now + lifetime)
        }
    }

    public func lookup(client: TransportAddress, on eventLoop: EventLoop) -> EventLoopFuture<StoredRoute?> {
        let now = ContinuousClock.now
        let found = routes.withLock { routes -> StoredRoute? in
            guard let entry = routes[client] else { return nil }
            guard entry.expires > now else {
                routes[client] = nil
                return nil
            }
            return entry.route
        }
        return eventLoop.makeSucceededFuture(found)
    }

    public var state: RouteStoreState { .memory }
}

/// The text form of a route in the store: `ip:port` / `[ip]:port`.
extension TransportAddress {
    var storeKey: String { "parley:route:\(self)" }
}
