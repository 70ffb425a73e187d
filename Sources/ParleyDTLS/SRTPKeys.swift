// What a DTLS-SRTP handshake agrees: the protection profile and the keys (RFC 5764).

/// An SRTP protection profile negotiated by DTLS-SRTP (RFC 5764, RFC 7714).
public enum SRTPProfile: Sendable, Equatable {
    case aeadAES128GCM
    case aes128CMHMACSHA1_80

    /// The profile's name in RFC 5764's registry, as OpenSSL and BoringSSL spell it.
    public var dtlsSRTPName: String {
        switch self {
        case .aeadAES128GCM: "SRTP_AEAD_AES_128_GCM"
        case .aes128CMHMACSHA1_80: "SRTP_AES128_CM_SHA1_80"
        }
    }

    /// The profile for its RFC 5764 protection profile number.
    public init?(dtlsSRTPID: UInt) {
        switch dtlsSRTPID {
        case 0x0007: self = .aeadAES128GCM
        case 0x0001: self = .aes128CMHMACSHA1_80
        default: return nil
        }
    }

    public var keyLength: Int { 16 }
    public var saltLength: Int { self == .aeadAES128GCM ? 12 : 14 }
}

/// Keys from the DTLS handshake: ours protect what we send, the peer's unprotect what we receive.
public struct SRTPKeyMaterial: Sendable, Equatable {
    public var profile: SRTPProfile
    public var localKeyAndSalt: [UInt8]
    public var remoteKeyAndSalt: [UInt8]

    public init(profile: SRTPProfile, localKeyAndSalt: [UInt8], remoteKeyAndSalt: [UInt8]) {
        self.profile = profile
        self.localKeyAndSalt = localKeyAndSalt
        self.remoteKeyAndSalt = remoteKeyAndSalt
    }

    /// Splits the keying material a DTLS handshake exported (label `EXTRACTOR-dtls_srtp`,
    /// 2 × (key + salt) bytes) as RFC 5764 §4.2 lays it out: client key ‖ server key ‖ client salt ‖
    /// server salt. Nil when `exported` is not that long.
    public init?(profile: SRTPProfile, exported material: [UInt8], isClient: Bool) {
        let keyLength = profile.keyLength, saltLength = profile.saltLength
        guard material.count == 2 * (keyLength + saltLength) else { return nil }
        let clientKey = material[0..<keyLength] + material[(2 * keyLength)..<(2 * keyLength + saltLength)]
        let serverKey = material[keyLength..<(2 * keyLength)] + material[(2 * keyLength + saltLength)...]
        self.init(profile: profile, localKeyAndSalt: Array(isClient ? clientKey : serverKey),
                  remoteKeyAndSalt: Array(isClient ? serverKey : clientKey))
    }

    /// The exporter label RFC 5764 §4.2 gives DTLS-SRTP.
    public static let exporterLabel = "EXTRACTOR-dtls_srtp"
}
