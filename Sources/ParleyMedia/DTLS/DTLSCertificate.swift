// The DTLS interface, its value types and the certificate are ParleyDTLS's (no C library); this
// module's users get them with ParleyMedia.
@_exported import ParleyDTLS
internal import COpenSSL

/// OpenSSL's queued error, as text, emptying the queue.
func openSSLErrorDescription() -> String {
    var reasons: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return reasons.isEmpty ? "unknown error" : reasons.joined(separator: "; ")
}
