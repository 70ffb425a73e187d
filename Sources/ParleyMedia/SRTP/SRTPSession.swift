import CSRTP

public enum SRTPError: Error, Equatable, Sendable {
    case initialization(Int)
    /// libsrtp refused the packet (authentication failure, replay, malformed): its status code.
    case rejected(Int)
    case bufferTooSmall
}

/// libsrtp2's process-wide initialization: `srtp_init` may run only once (a second call fails).
private let srtpLibraryStatus: srtp_err_status_t = srtp_init()

/// One direction's SRTP and SRTCP state, for every SSRC of a session: AEAD_AES_128_GCM on
/// OpenSSL (`AESGCMTransform`; see there why not libsrtp), AES128_CM_HMAC_SHA1_80 on libsrtp2.
/// Confined to one thread.
public final class SRTPContext {
    /// Bytes that protection may add to a packet (auth tag or AEAD tag, plus SRTCP index).
    public static let maximumOverhead = Int(SRTP_MAX_TRAILER_LEN)

    public enum Direction: Sendable { case outbound, inbound }

    /// Exactly one of the two is set. Two stored properties rather than an enum: the per-packet
    /// calls then use the reference in place instead of retaining an extracted payload.
    private let gcm: AESGCMTransform?
    private let libsrtp: srtp_t?

    public convenience init(profile: SRTPProfile, keyAndSalt: [UInt8], direction: Direction) throws(SRTPError) {
        try self.init(profile: profile, keyAndSalt: keyAndSalt, direction: direction, libsrtpOnly: false)
    }

    /// `libsrtpOnly` puts GCM on libsrtp too: the tests hold the OpenSSL transform to it, and the
    /// micro-benchmarks compare the two.
    public init(profile: SRTPProfile, keyAndSalt: [UInt8], direction: Direction, libsrtpOnly: Bool) throws(SRTPError) {
        if profile == .aeadAES128GCM, !libsrtpOnly {
            gcm = try AESGCMTransform(keyAndSalt: keyAndSalt, outbound: direction == .outbound)
            libsrtp = nil
            return
        }
        guard srtpLibraryStatus == srtp_err_status_ok else { throw .initialization(Int(srtpLibraryStatus.rawValue)) }
        var policy = srtp_policy_t()
        switch profile {
        case .aeadAES128GCM:
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp)
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp)
        case .aes128CMHMACSHA1_80:
            srtp_crypto_policy_set_rtp_default(&policy.rtp)
            srtp_crypto_policy_set_rtcp_default(&policy.rtcp)
        }
        policy.ssrc.type = direction == .outbound ? ssrc_any_outbound : ssrc_any_inbound
        policy.window_size = UInt(truncatingIfNeeded: AESGCMTransform.replayWindow)
        policy.allow_repeat_tx = 1
        var key = keyAndSalt
        var created: srtp_t?
        let status = key.withUnsafeMutableBufferPointer { key in
            policy.key = key.baseAddress
            return srtp_create(&created, &policy)
        }
        guard status == srtp_err_status_ok, let created else { throw .initialization(Int(status.rawValue)) }
        gcm = nil
        libsrtp = created
    }

    deinit { if let libsrtp { srtp_dealloc(libsrtp) } }

    /// Protects the RTP packet in `buffer[0..<length]` in place; returns the new length.
    /// `buffer` must have `maximumOverhead` spare bytes after the packet.
    public func protectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        if let gcm {
            return try checked(buffer, length: length, grows: true) { () throws(SRTPError) in try gcm.protectRTP(buffer, length: length) }
        }
        return try run(buffer, length: length, grows: true) { srtp_protect(libsrtp, $0, $1) }
    }

    public func unprotectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        if let gcm {
            return try checked(buffer, length: length, grows: false) { () throws(SRTPError) in try gcm.unprotectRTP(buffer, length: length) }
        }
        return try run(buffer, length: length, grows: false) { srtp_unprotect(libsrtp, $0, $1) }
    }

    public func protectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        if let gcm {
            return try checked(buffer, length: length, grows: true) { () throws(SRTPError) in try gcm.protectRTCP(buffer, length: length) }
        }
        return try run(buffer, length: length, grows: true) { srtp_protect_rtcp(libsrtp, $0, $1) }
    }

    public func unprotectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        if let gcm {
            return try checked(buffer, length: length, grows: false) { () throws(SRTPError) in try gcm.unprotectRTCP(buffer, length: length) }
        }
        return try run(buffer, length: length, grows: false) { srtp_unprotect_rtcp(libsrtp, $0, $1) }
    }

    /// The same buffer rules for both backends.
    private func checked(_ buffer: UnsafeMutableRawBufferPointer, length: Int, grows: Bool,
                         _ call: () throws(SRTPError) -> Int) throws(SRTPError) -> Int {
        guard buffer.baseAddress != nil, length <= buffer.count,
              !grows || length + Self.maximumOverhead <= buffer.count else { throw .bufferTooSmall }
        return try call()
    }

    private func run(
        _ buffer: UnsafeMutableRawBufferPointer, length: Int, grows: Bool,
        _ call: (UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> srtp_err_status_t
    ) throws(SRTPError) -> Int {
        try checked(buffer, length: length, grows: grows) { () throws(SRTPError) in
            guard length <= Int(Int32.max) - Self.maximumOverhead else { throw .bufferTooSmall }
            var newLength = Int32(truncatingIfNeeded: length)
            let status = call(buffer.baseAddress!, &newLength)
            guard status == srtp_err_status_ok else { throw .rejected(Int(status.rawValue)) }
            return Int(newLength)
        }
    }
}
