import ParleyWire

/// Where a request about a call must be answered (sans-IO). Transceivers of a cluster sit behind one
/// Service, which spreads requests over every pod, while a call lives in exactly one: a request about
/// a call this process does not hold goes to the owner its id names (`CallID`), once.
public enum CallLocation: Equatable, Sendable {
    /// This process holds the call.
    case here
    /// Another transceiver of the cluster owns it: forward the request to its signaling endpoint.
    case elsewhere(TransportAddress)
    /// No such call anywhere this process can tell: 404.
    case nowhere

    /// The request header a forwarded request carries: its receiver answers from what it holds and
    /// never forwards again (one hop; a stale or forged owner cannot make a loop).
    public static let forwardedHeader = "X-Parley-Forwarded"

    /// `heldHere`: the call is in this process's registry. `forwarded`: the request came from
    /// another transceiver. `keyring`: the transceivers' own (call ids are sealed with it, not with
    /// the routing key relays hold). `peers`: where other transceivers may be (`--trusted-proxy`:
    /// they forward to and believe each other), so even a sealed id sends nothing elsewhere. A call
    /// id these keys did not seal, or one naming this process, an address outside `peers`, an
    /// unspecified address or port 0 (a transceiver that could not name its own endpoint) is nowhere.
    public static func of(callID: String, heldHere: Bool, forwarded: Bool, keyring: RoutingKeyring, clusterID: UInt16,
                          ownEndpoint: TransportAddress, peers: [IPNetwork]) -> CallLocation {
        if heldHere { return .here }
        guard !forwarded, let token = CallID.token(of: callID, keyring: keyring), token.clusterID == clusterID else { return .nowhere }
        let owner = token.worker
        guard owner != ownEndpoint, owner.port != 0, !owner.isUnspecified, peers.contains(where: { $0.contains(owner) }) else {
            return .nowhere
        }
        return .elsewhere(owner)
    }
}
