import Foundation
import ParleySCTP

/// SNAP (draft-hancke-tsvwg-snap): the two SCTP INITs an offer and its answer exchanged in
/// `a=sctp-init`, so the association starts ESTABLISHED when DTLS is up — up to two round trips
/// fewer (one where the client bundles DCEP with its COOKIE ECHO, as Chromium's dcSCTP does), and
/// no INIT on the wire. Parley's INIT is its own (an echo of the client's breaks Chromium),
/// drawn per call; a renegotiation repeats it.
public struct SNAPInits: Sendable, Equatable {
    /// Parley's INIT: the association is made with its identity.
    public let local: SCTPOutOfBandInit
    /// The client's INIT: the association adopts its tag, window, streams and first TSN.
    public let remote: SCTPOutOfBandInit

    /// Why the client's `a=sctp-init` cannot start an association.
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Decodes the answer's and the offer's `a=sctp-init` (base64).
    public init(local: String, remote: String, localWhose: String = "Parley's", remoteWhose: String = "the offer's") throws(Invalid) {
        self.local = try Self.decode(local, whose: localWhose)
        self.remote = try Self.decode(remote, whose: remoteWhose)
    }

    /// The SCTP configuration every session's association uses, so the INIT an answer gives out
    /// (`draw`) describes the association the session makes (`WebRTCSession.flushDTLS`).
    public static let configuration = SCTPConfiguration()

    /// A fresh INIT of Parley's, as the answer's `a=sctp-init` value.
    public static func draw<G: RandomNumberGenerator>(configuration: SCTPConfiguration = Self.configuration,
                                                      using generator: inout G) -> String {
        let chunk = SCTPAssociation.initiationChunk(configuration: configuration, identity: SCTPInitiationIdentity(using: &generator))
        return Data(chunk).base64EncodedString()
    }

    /// An `a=sctp-init` value decoded (base64, then the INIT chunk).
    public static func decode(_ text: String, whose: String = "the") throws(Invalid) -> SCTPOutOfBandInit {
        // Base64 with or without its padding (the draft says RFC 4566's base64; Pion and Chromium pad).
        let padded = text + String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
        guard let bytes = Data(base64Encoded: padded) else { throw Invalid(description: "\(whose) a=sctp-init is not base64") }
        do {
            return try SCTPOutOfBandInit(decoding: Array(bytes))
        } catch {
            throw Invalid(description: "\(whose) a=sctp-init is not an SCTP INIT chunk (\(error))")
        }
    }
}
