/// A call's id as the API hands it out: `rtc_` and a routing token sealed for the `.signaling`
/// purpose, naming the signaling (HTTP) endpoint of the transceiver that owns the call. Any
/// transceiver of the cluster that receives a request about a call it does not own (the Service
/// in front of them spreads requests over every pod) opens the id and forwards the request to the
/// owner, without shared state (docs/kubernetes.md). Opaque to clients like a ufrag: the endpoint is
/// encrypted, the id unforgeable, and it never opens as an ICE ufrag (nor a ufrag as a call id).
///
/// The token's base64 text is made URL-safe (`-` for `+`, `_` for `/`, RFC 4648 §5) since the id
/// sits in paths and query strings: `rtc_` + 32 characters (IPv4 owner) or 48 (IPv6).
public enum CallID {
    public static let prefix = "rtc_"

    /// A fresh call id owned by `owner` (its nonce random).
    public static func make<G: RandomNumberGenerator>(keyring: RoutingKeyring, clusterID: UInt16, owner: TransportAddress,
                                                      issuedHour: UInt16, using generator: inout G) -> String {
        let token = RoutingToken.random(keyID: keyring.currentKeyID, clusterID: clusterID, worker: owner,
                                        issuedHour: issuedHour, purpose: .signaling, using: &generator)
        return prefix + String(decoding: keyring.seal(token).utf8.map(urlSafe), as: UTF8.self)
    }

    /// The sealed token of a call id this keyring made, or nil: not a call id, another cluster's
    /// keys, forged, or an ICE ufrag dressed as one. Bounded work on any input (the length is
    /// checked before anything is decoded).
    public static func token(of id: String, keyring: RoutingKeyring) -> RoutingToken? {
        let utf8 = id.utf8
        let tokenLength = utf8.count - prefix.utf8.count
        guard tokenLength == RoutingToken.ipv4Length || tokenLength == RoutingToken.ipv6Length,
              utf8.starts(with: prefix.utf8) else { return nil }
        var text = [UInt8](repeating: 0, count: tokenLength)
        for (index, byte) in utf8.dropFirst(prefix.utf8.count).enumerated() {
            // The standard alphabet's own '+' and '/' are not call-id characters.
            guard byte != UInt8(ascii: "+"), byte != UInt8(ascii: "/") else { return nil }
            text[index] = standard(byte)
        }
        return try? keyring.open(text, purpose: .signaling)
    }

    private static func urlSafe(_ byte: UInt8) -> UInt8 {
        switch byte {
        case UInt8(ascii: "+"): UInt8(ascii: "-")
        case UInt8(ascii: "/"): UInt8(ascii: "_")
        default: byte
        }
    }

    private static func standard(_ byte: UInt8) -> UInt8 {
        switch byte {
        case UInt8(ascii: "-"): UInt8(ascii: "+")
        case UInt8(ascii: "_"): UInt8(ascii: "/")
        default: byte
        }
    }
}
