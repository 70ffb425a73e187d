import ParleyRouting
import ParleyWire

/// Everything a relay process is told at start.
public struct RelayConfiguration: Sendable {
    /// The public addresses clients send to, at most one per family (IPv4 and IPv6 literals; a
    /// wildcard takes every address of its family), on one fixed port: every worker binds each
    /// with SO_REUSEPORT, and answers a client from the socket of its family.
    public var publicHosts = ["0.0.0.0"]
    public var publicPort = 3478
    /// ICE-TCP (RFC 6544): a public TCP port on the same hosts, for clients whose networks block UDP.
    public enum TCPPort: Sendable, Equatable {
        case none
        /// The number the UDP port got (`parley dev`: one number for both).
        case sameAsUDP
        /// This port (0: any free one).
        case port(Int)
    }
    public var publicTCP = TCPPort.none
    /// A TCP port that cannot be had (the default 443 without the privilege to bind it, or in use)
    /// is logged and left out, the relay serving UDP alone, instead of refusing to start.
    public var tcpOptional = false
    public var tcpPolicy = TCPIngress.Policy()
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

    /// `host:port`, an IPv6 host in brackets.
    public static func hostAndPort(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Why `hosts` cannot be the public hosts, or nil: each must be an IPv4 or IPv6 literal, and
    /// there is one socket per family (two addresses of one family would need the route to say
    /// which one a client used; a wildcard serves them all).
    public static func publicHostsProblem(_ hosts: [String]) -> String? {
        guard !hosts.isEmpty else { return "at least one public host is needed" }
        var families: Set<Bool> = []
        for host in hosts {
            let isIPv6: Bool
            if IPv4Address(host) != nil {
                isIPv6 = false
            } else if IPv6Address(host) != nil {
                isIPv6 = true
            } else {
                return "\(host) is not an IPv4 or IPv6 address"
            }
            guard families.insert(isIPv6).inserted else {
                return "one public host per address family (\(isIPv6 ? "IPv6" : "IPv4") is given twice; 0.0.0.0 or :: takes every address of a family)"
            }
        }
        return nil
    }
}
