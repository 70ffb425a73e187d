internal import COpenSSL

/// SRTP and SRTCP with AEAD_AES_128_GCM (RFC 7714) on OpenSSL's EVP, one direction, every SSRC.
///
/// Why not libsrtp for this profile: Debian builds libsrtp2 against NSS, whose one-shot AEAD
/// calls set up a PKCS#11 context and take several locks per packet; in a 300-call profile of the
/// transceiver that was a quarter of its CPU. OpenSSL keeps one keyed context per direction and
/// runs AES-NI GCM in about a tenth of the time. libsrtp still serves AES128_CM_HMAC_SHA1_80, and
/// the tests hold this transform to libsrtp's output byte for byte (ROC rollover, SRTCP, replay).
final class AESGCMTransform {
    static let tagLength = 16
    /// SRTCP's E flag and 31-bit index after the tag (RFC 7714 §9).
    static let srtcpTrailerLength = 4
    /// Indexes behind the highest one that may still arrive (reordering), as libsrtp was set up.
    static let replayWindow = 1024
    /// SSRCs one direction keeps state for; a call has one or two.
    static let maximumStreams = 64

    private let rtpCipher: OpaquePointer
    private let rtcpCipher: OpaquePointer
    private let rtpSalt: [UInt8]
    private let rtcpSalt: [UInt8]
    private let outbound: Bool
    private var streams: [Stream] = []
    private var iv = [UInt8](repeating: 0, count: 12)
    private var aad = [UInt8](repeating: 0, count: 12)

    private struct Stream {
        let ssrc: UInt32
        var rtp = ReplayWindow()
        var rtcp = ReplayWindow()
        var nextRTCPIndex: UInt32 = 0
    }

    /// `keyAndSalt` is the 16-byte master key then the 12-byte master salt, as DTLS-SRTP exports them.
    init(keyAndSalt: [UInt8], outbound: Bool) throws(SRTPError) {
        guard keyAndSalt.count == 28 else { throw .initialization(2) }
        let masterKey = Array(keyAndSalt[0..<16]), masterSalt = Array(keyAndSalt[16..<28])
        // RFC 3711 §4.3.3 labels: 0 / 3 are the SRTP / SRTCP encryption keys, 2 / 5 their salts.
        guard let rtpKey = Self.derive(label: 0, length: 16, masterKey: masterKey, masterSalt: masterSalt),
              let rtpSalt = Self.derive(label: 2, length: 12, masterKey: masterKey, masterSalt: masterSalt),
              let rtcpKey = Self.derive(label: 3, length: 16, masterKey: masterKey, masterSalt: masterSalt),
              let rtcpSalt = Self.derive(label: 5, length: 12, masterKey: masterKey, masterSalt: masterSalt),
              let rtpCipher = Self.keyedContext(rtpKey, encrypt: outbound) else { throw .initialization(1) }
        guard let rtcpCipher = Self.keyedContext(rtcpKey, encrypt: outbound) else {
            EVP_CIPHER_CTX_free(rtpCipher)
            throw .initialization(1)
        }
        self.rtpCipher = rtpCipher
        self.rtcpCipher = rtcpCipher
        self.rtpSalt = rtpSalt
        self.rtcpSalt = rtcpSalt
        self.outbound = outbound
    }

    deinit {
        EVP_CIPHER_CTX_free(rtpCipher)
        EVP_CIPHER_CTX_free(rtcpCipher)
    }

    // MARK: SRTP (RFC 7714 §8)

    func protectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        guard let headerLength = Self.rtpHeaderLength(buffer, length: length) else { throw .rejected(2) }
        guard length + Self.tagLength <= buffer.count else { throw .bufferTooSmall }
        let ssrc = buffer.loadUInt32(at: 8), sequence = buffer.loadUInt16(at: 2)
        guard let slot = stream(for: ssrc, create: true) else { throw .rejected(2) }
        let index = streams[slot].rtp.estimate(sequence)
        // A (SSRC, ROC, SEQ) used twice with GCM would leak the authentication key: the sender's
        // indexes only go up (Parley never retransmits RTP).
        guard index > streams[slot].rtp.highest else { throw .rejected(9) }
        streams[slot].rtp.advance(to: index)
        writeRTPNonce(ssrc: ssrc, index: index)
        guard seal(rtpCipher, buffer, aadRange: 0..<headerLength, textRange: headerLength..<length, extraAAD: nil) else {
            throw .rejected(1)
        }
        return length + Self.tagLength
    }

    func unprotectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        guard let headerLength = Self.rtpHeaderLength(buffer, length: length),
              length >= headerLength + Self.tagLength else { throw .rejected(2) }
        let ssrc = buffer.loadUInt32(at: 8), sequence = buffer.loadUInt16(at: 2)
        let known = stream(for: ssrc, create: false)
        let window = known.map { streams[$0].rtp } ?? ReplayWindow()
        let index = window.estimate(sequence)
        try window.check(index)
        writeRTPNonce(ssrc: ssrc, index: index)
        guard open(rtpCipher, buffer, aadRange: 0..<headerLength, textRange: headerLength..<(length - Self.tagLength),
                   extraAAD: nil) else { throw .rejected(7) }
        // State changes only for packets that authenticated: forgeries cannot move the window.
        guard let slot = known ?? stream(for: ssrc, create: true) else { throw .rejected(2) }
        streams[slot].rtp.accept(index)
        return length - Self.tagLength
    }

    // MARK: SRTCP (RFC 7714 §9)

    func protectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        guard length >= 8 else { throw .rejected(2) }
        guard length + Self.tagLength + Self.srtcpTrailerLength <= buffer.count else { throw .bufferTooSmall }
        let ssrc = buffer.loadUInt32(at: 4)
        guard let slot = stream(for: ssrc, create: true) else { throw .rejected(2) }
        let index = streams[slot].nextRTCPIndex
        // 2^31 SRTCP packets under one key: it is spent (RFC 3711 §9.2), never wrap onto used nonces.
        guard index < 0x7FFF_FFFF else { throw .rejected(15) }
        streams[slot].nextRTCPIndex = index + 1
        let trailer = 0x8000_0000 | index
        writeRTCPNonce(ssrc: ssrc, index: index)
        guard seal(rtcpCipher, buffer, aadRange: 0..<8, textRange: 8..<length, extraAAD: trailer) else { throw .rejected(1) }
        buffer.storeUInt32(trailer, at: length + Self.tagLength)
        return length + Self.tagLength + Self.srtcpTrailerLength
    }

    func unprotectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        guard length >= 8 + Self.tagLength + Self.srtcpTrailerLength else { throw .rejected(2) }
        let ssrc = buffer.loadUInt32(at: 4)
        let trailer = buffer.loadUInt32(at: length - Self.srtcpTrailerLength)
        // Unencrypted SRTCP (E flag clear) is only for sessions that negotiate it; WebRTC never does.
        guard trailer & 0x8000_0000 != 0 else { throw .rejected(2) }
        let index = trailer & 0x7FFF_FFFF
        let known = stream(for: ssrc, create: false)
        let window = known.map { streams[$0].rtcp } ?? ReplayWindow()
        try window.check(Int64(index))
        writeRTCPNonce(ssrc: ssrc, index: index)
        let end = length - Self.srtcpTrailerLength - Self.tagLength
        guard open(rtcpCipher, buffer, aadRange: 0..<8, textRange: 8..<end, extraAAD: trailer) else { throw .rejected(7) }
        guard let slot = known ?? stream(for: ssrc, create: true) else { throw .rejected(2) }
        streams[slot].rtcp.accept(Int64(index))
        return end
    }

    // MARK: Pieces

    private func stream(for ssrc: UInt32, create: Bool) -> Int? {
        if let slot = streams.firstIndex(where: { $0.ssrc == ssrc }) { return slot }
        guard create, streams.count < Self.maximumStreams else { return nil }
        streams.append(Stream(ssrc: ssrc))
        return streams.count - 1
    }

    /// IV = salt XOR (0x0000 ‖ SSRC ‖ ROC ‖ SEQ) for SRTP.
    private func writeRTPNonce(ssrc: UInt32, index: Int64) {
        let roc = UInt32(truncatingIfNeeded: index >> 16), sequence = UInt16(truncatingIfNeeded: index)
        writeNonce(salt: rtpSalt, ssrc: ssrc, high: roc, low: UInt32(sequence))
    }

    /// IV = salt XOR (0x0000 ‖ SSRC ‖ 0x0000 ‖ 0 ‖ SRTCP index) for SRTCP.
    private func writeRTCPNonce(ssrc: UInt32, index: UInt32) {
        for position in 0..<12 { iv[position] = 0 }
        iv[2] = UInt8(truncatingIfNeeded: ssrc >> 24); iv[3] = UInt8(truncatingIfNeeded: ssrc >> 16)
        iv[4] = UInt8(truncatingIfNeeded: ssrc >> 8); iv[5] = UInt8(truncatingIfNeeded: ssrc)
        iv[8] = UInt8(truncatingIfNeeded: index >> 24); iv[9] = UInt8(truncatingIfNeeded: index >> 16)
        iv[10] = UInt8(truncatingIfNeeded: index >> 8); iv[11] = UInt8(truncatingIfNeeded: index)
        for position in 0..<12 { iv[position] ^= rtcpSalt[position] }
    }

    private func writeNonce(salt: [UInt8], ssrc: UInt32, high: UInt32, low: UInt32) {
        iv[0] = 0; iv[1] = 0
        iv[2] = UInt8(truncatingIfNeeded: ssrc >> 24); iv[3] = UInt8(truncatingIfNeeded: ssrc >> 16)
        iv[4] = UInt8(truncatingIfNeeded: ssrc >> 8); iv[5] = UInt8(truncatingIfNeeded: ssrc)
        iv[6] = UInt8(truncatingIfNeeded: high >> 24); iv[7] = UInt8(truncatingIfNeeded: high >> 16)
        iv[8] = UInt8(truncatingIfNeeded: high >> 8); iv[9] = UInt8(truncatingIfNeeded: high)
        iv[10] = UInt8(truncatingIfNeeded: low >> 8); iv[11] = UInt8(truncatingIfNeeded: low)
        for position in 0..<12 { iv[position] ^= salt[position] }
    }

    /// Encrypts `textRange` in place and writes the tag right after it.
    private func seal(_ context: OpaquePointer, _ buffer: UnsafeMutableRawBufferPointer, aadRange: Range<Int>,
                      textRange: Range<Int>, extraAAD: UInt32?) -> Bool {
        let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var written: Int32 = 0
        guard iv.withUnsafeBufferPointer({ EVP_EncryptInit_ex(context, nil, nil, nil, $0.baseAddress) }) == 1,
              addAAD(context, base + aadRange.lowerBound, aadRange.count, extraAAD, encrypt: true),
              textRange.isEmpty || EVP_EncryptUpdate(context, base + textRange.lowerBound, &written,
                                                     base + textRange.lowerBound, Int32(clamping: textRange.count)) == 1,
              EVP_EncryptFinal_ex(context, base + textRange.upperBound, &written) == 1 else { return false }
        return EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_GET_TAG, Int32(truncatingIfNeeded: Self.tagLength), base + textRange.upperBound) == 1
    }

    /// Checks the tag after `textRange` and decrypts in place; false when it does not authenticate.
    private func open(_ context: OpaquePointer, _ buffer: UnsafeMutableRawBufferPointer, aadRange: Range<Int>,
                      textRange: Range<Int>, extraAAD: UInt32?) -> Bool {
        let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var written: Int32 = 0
        guard iv.withUnsafeBufferPointer({ EVP_DecryptInit_ex(context, nil, nil, nil, $0.baseAddress) }) == 1,
              addAAD(context, base + aadRange.lowerBound, aadRange.count, extraAAD, encrypt: false),
              textRange.isEmpty || EVP_DecryptUpdate(context, base + textRange.lowerBound, &written,
                                                     base + textRange.lowerBound, Int32(clamping: textRange.count)) == 1,
              EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_TAG, Int32(truncatingIfNeeded: Self.tagLength), base + textRange.upperBound) == 1
        else { return false }
        return EVP_DecryptFinal_ex(context, base + textRange.upperBound, &written) == 1
    }

    private func addAAD(_ context: OpaquePointer, _ bytes: UnsafeMutablePointer<UInt8>, _ count: Int, _ extra: UInt32?,
                        encrypt: Bool) -> Bool {
        var written: Int32 = 0
        let update = encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate
        guard count == 0 || update(context, nil, &written, bytes, Int32(clamping: count)) == 1 else { return false }
        guard let extra else { return true }
        aad[0] = UInt8(truncatingIfNeeded: extra >> 24); aad[1] = UInt8(truncatingIfNeeded: extra >> 16)
        aad[2] = UInt8(truncatingIfNeeded: extra >> 8); aad[3] = UInt8(truncatingIfNeeded: extra)
        return aad.withUnsafeBufferPointer { update(context, nil, &written, $0.baseAddress, 4) } == 1
    }

    /// Fixed header, CSRCs and the header extension: what RFC 7714 authenticates but does not encrypt.
    static func rtpHeaderLength(_ buffer: UnsafeMutableRawBufferPointer, length: Int) -> Int? {
        guard length >= 12, length <= buffer.count, buffer[0] >> 6 == 2 else { return nil }
        var header = 12 + 4 * Int(buffer[0] & 0x0F)
        if buffer[0] & 0x10 != 0 {
            guard length >= header + 4 else { return nil }
            header += 4 + 4 * Int(buffer.loadUInt16(at: header + 2))
        }
        return header <= length ? header : nil
    }

    private static func keyedContext(_ key: [UInt8], encrypt: Bool) -> OpaquePointer? {
        guard let context = EVP_CIPHER_CTX_new() else { return nil }
        let status = key.withUnsafeBufferPointer { key in
            encrypt ? EVP_EncryptInit_ex(context, EVP_aes_128_gcm(), nil, key.baseAddress, nil)
                : EVP_DecryptInit_ex(context, EVP_aes_128_gcm(), nil, key.baseAddress, nil)
        }
        guard status == 1 else {
            EVP_CIPHER_CTX_free(context)
            return nil
        }
        return context
    }

    /// RFC 3711 §4.3's AES-CM key derivation (key derivation rate 0): the keystream of AES-CTR under
    /// the master key, with IV = (label at byte 7 ‖ 0…) XOR master salt (12 bytes, zero-padded to 14), ‖ 0x0000.
    static func derive(label: UInt8, length: Int, masterKey: [UInt8], masterSalt: [UInt8]) -> [UInt8]? {
        var counter = [UInt8](repeating: 0, count: 16)
        for (position, byte) in masterSalt.prefix(14).enumerated() { counter[position] = byte }
        counter[7] ^= label
        guard let context = EVP_CIPHER_CTX_new() else { return nil }
        defer { EVP_CIPHER_CTX_free(context) }
        var output = [UInt8](repeating: 0, count: length)
        let zeros = [UInt8](repeating: 0, count: length)
        var written: Int32 = 0
        let status = masterKey.withUnsafeBufferPointer { key in
            counter.withUnsafeBufferPointer { counter in
                EVP_EncryptInit_ex(context, EVP_aes_128_ctr(), nil, key.baseAddress, counter.baseAddress)
            }
        }
        guard status == 1, EVP_EncryptUpdate(context, &output, &written, zeros, Int32(clamping: length)) == 1 else { return nil }
        return output
    }
}

/// SRTP's packet index bookkeeping for one stream: the highest index so far, and which of the
/// `AESGCMTransform.replayWindow` indexes behind it arrived (a ring of bits, so advancing costs no shift).
struct ReplayWindow {
    private(set) var highest: Int64 = -1
    private var bits = [UInt64](repeating: 0, count: AESGCMTransform.replayWindow / 64)

    /// RFC 3711 §3.3.1: the index whose rollover counter puts `sequence` closest to the highest so far.
    /// Decided exactly as libsrtp does (a jump of exactly 2^15 keeps the rollover counter).
    func estimate(_ sequence: UInt16) -> Int64 {
        guard highest >= 0 else { return Int64(sequence) }
        let highestSequence = Int64(highest & 0xFFFF), rollover = highest >> 16, sequence = Int64(sequence)
        var guess = rollover
        if highestSequence < 0x8000 {
            if sequence - highestSequence > 0x8000 { guess = rollover - 1 }
        } else if highestSequence - 0x8000 > sequence {
            guess = rollover + 1
        }
        // Before the first rollover a packet from "ROC -1" can only be a very late one: keep ROC 0.
        return guess < 0 ? sequence : guess << 16 | sequence
    }

    /// libsrtp's codes: 9 replayed, 10 too old.
    func check(_ index: Int64) throws(SRTPError) {
        guard highest >= 0, index <= highest else { return }
        guard highest - index < Int64(AESGCMTransform.replayWindow) else { throw .rejected(10) }
        if isSet(index) { throw .rejected(9) }
    }

    mutating func accept(_ index: Int64) {
        if index > highest {
            let first = max(highest + 1, index - Int64(AESGCMTransform.replayWindow) + 1)
            if first <= index { for cleared in first...index { clear(cleared) } }
            highest = index
        }
        set(index)
    }

    /// The sender's side: only the highest index matters (it picks the rollover counter).
    mutating func advance(to index: Int64) { highest = max(highest, index) }

    private func isSet(_ index: Int64) -> Bool {
        let slot = Int(index & Int64(AESGCMTransform.replayWindow - 1))
        return bits[slot >> 6] & ((1 as UInt64) << (slot & 63)) != 0
    }

    private mutating func set(_ index: Int64) {
        let slot = Int(index & Int64(AESGCMTransform.replayWindow - 1))
        bits[slot >> 6] |= (1 as UInt64) << (slot & 63)
    }

    private mutating func clear(_ index: Int64) {
        let slot = Int(index & Int64(AESGCMTransform.replayWindow - 1))
        bits[slot >> 6] &= ~((1 as UInt64) << (slot & 63))
    }
}

extension UnsafeMutableRawBufferPointer {
    fileprivate func loadUInt16(at offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }
    fileprivate func loadUInt32(at offset: Int) -> UInt32 {
        UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16 | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
    }
    fileprivate func storeUInt32(_ value: UInt32, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 24); self[offset + 1] = UInt8(truncatingIfNeeded: value >> 16)
        self[offset + 2] = UInt8(truncatingIfNeeded: value >> 8); self[offset + 3] = UInt8(truncatingIfNeeded: value)
    }
}
