// The one file of ParleyWire that needs swift-crypto. The guard lets the fuzz harnesses
// (Fuzz/, built with plain swiftc) compile the parsers without it.
#if canImport(Crypto)
import Crypto
import Foundation  // DataProtocol conformance of UnsafeRawBufferPointer, which swift-crypto's HMAC takes.

/// The key of MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5). For ICE it is the peer's password
/// (short-term credentials); the long-term form is MD5(username:realm:password).
public struct STUNIntegrityKey: Sendable {
    /// HMAC state with the key already absorbed: each message copies it instead of re-deriving
    /// the key pads.
    private let keyed: HMAC<Insecure.SHA1>

    public init(key: SymmetricKey) {
        keyed = HMAC<Insecure.SHA1>(key: key)
    }

    public init(shortTermPassword password: String) {
        self.init(key: SymmetricKey(data: Array(password.utf8)))
    }

    public init(shortTermPassword password: some Collection<UInt8>) {
        self.init(key: SymmetricKey(data: Array(password)))
    }

    /// Long-term credentials. `password` must already be SASLprep-processed (RFC 8489 §9.2.2).
    public init(longTermUsername username: String, realm: String, password: String) {
        self.init(key: SymmetricKey(data: Array(Insecure.MD5.hash(data: Array("\(username):\(realm):\(password)".utf8)))))
    }

    /// HMAC-SHA1 of `prefix` as if its header's length field were `lengthField`, written at `offset`.
    func authenticate(
        _ prefix: UnsafeRawBufferPointer, lengthField: UInt16, into output: UnsafeMutableRawBufferPointer, at offset: Int
    ) {
        let mac = code(prefix, lengthField: lengthField)
        mac.withUnsafeBytes { bytes in
            for index in 0..<20 { output[offset + index] = bytes[index] }
        }
    }

    func code(_ prefix: UnsafeRawBufferPointer, lengthField: UInt16) -> HashedAuthenticationCode<Insecure.SHA1> {
        var hmac = keyed
        hmac.update(data: UnsafeRawBufferPointer(rebasing: prefix[0..<2]))
        withUnsafeBytes(of: lengthField.bigEndian) { hmac.update(data: $0) }
        hmac.update(data: UnsafeRawBufferPointer(rebasing: prefix[4...]))
        return hmac.finalize()
    }
}

extension STUNMessage {
    /// Whether MESSAGE-INTEGRITY is present and matches `key`. The HMAC covers the message up to
    /// the attribute, with the header length counting up to the attribute's end (RFC 8489 §14.5).
    public func hasValidMessageIntegrity(in bytes: UnsafeRawBufferPointer, key: STUNIntegrityKey) -> Bool {
        guard let offset = messageIntegrityOffset, offset + 24 <= bytes.count else { return false }
        let mac = key.code(
            UnsafeRawBufferPointer(rebasing: bytes[0..<offset]), lengthField: UInt16(truncatingIfNeeded: offset + 24 - stunHeaderLength)
        )
        return mac.withUnsafeBytes { computed in
            constantTimeEqual(computed, UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)..<(offset + 24)]))
        }
    }

    public func hasValidMessageIntegrity(in bytes: some ContiguousBytesLike, key: STUNIntegrityKey) -> Bool {
        bytes.withRawBytes { hasValidMessageIntegrity(in: $0, key: key) }
    }
}

extension STUNWriter {
    /// MESSAGE-INTEGRITY over everything written so far. Only FINGERPRINT may follow.
    public mutating func appendMessageIntegrity(key: STUNIntegrityKey) throws(STUNBuildError) {
        let offset = try reserve(.messageIntegrity, length: 20)
        hasIntegrity = true
        let prefix = UnsafeRawBufferPointer(rebasing: buffer[0..<(offset - 4)])
        key.authenticate(prefix, lengthField: UInt16(truncatingIfNeeded: count - stunHeaderLength), into: buffer, at: offset)
    }
}
#endif
