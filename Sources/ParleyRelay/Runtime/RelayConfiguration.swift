import ParleyRouting
import ParleyWire

/// Everything a relay process is told at start.
public struct RelayConfiguration: Sendable {
    /// The public address clients send to (one fixed port; every worker binds it with SO_REUSEPORT).
    public var publicHost = "0.0.0.0"
    public var publicPort = 3478
    /// The internal address workers talk to transceivers from (worker i binds port + i; 0: any port).
    public var internalHost = "127.0.0.1"
    public var internalPort = 0
    public var workers = 1
    public var keyring: RoutingKeyring
    public var policy = RouteTable.Policy()
    /// Packets from one unknown client held while the route store is asked.
    public var lookupQueueDepth = 8
    /// Route-store lookups in flight per worker.
    public var maximumLookups = 1024
    /// Route-store lookups a worker starts per second at most (a burst of as many, then steady):
    /// a flood of unknown sources costs the store this much and no more. Recovering calls after a
    /// restart retry with every packet, so they get through at this rate.
    public var storeLookupsPerSecond = 1000
    public var socketBufferBytes = 4 * 1024 * 1024
    /// Share the public port with a process that already holds it (SO_REUSEPORT), as a relay that
    /// replaces another does. Without it a port in use is refused: two unrelated processes on one
    /// port would each get a random share of every call's packets.
    public var takeOverPort = false

    public init(keyring: RoutingKeyring) {
        self.keyring = keyring
    }
}
