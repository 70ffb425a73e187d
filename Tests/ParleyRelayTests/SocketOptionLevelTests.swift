import Foundation
import Testing

/// NIO's `.socketOption(name)` sets an option at SOL_SOCKET. A TCP option given that way lands on
/// whatever SOL_SOCKET option shares its number: `.socketOption(.tcp_nodelay)` set SO_DEBUG (1),
/// which root may set and a non-root process may not, so every ICE-TCP connection to a relay
/// running as a non-root user (deploy/'s pods) was closed at accept, as was every WebSocket agent
/// connection. TCP options go through `.tcpOption`.
@Suite struct SocketOptionLevelTests {
    @Test func noTCPOrIPv6OptionIsSetAtTheSocketLevel() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources").standardized
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        #expect(files.count > 50, "found the sources")
        var offenders: [String] = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for pattern in [".socketOption(.tcp_", ".socketOption(.ipv6_", ".socketOption(.ip_"] where text.contains(pattern) {
                offenders.append("\(file.lastPathComponent): \(pattern)")
            }
        }
        #expect(offenders.isEmpty, "use .tcpOption / a SocketOption with its level: \(offenders)")
    }
}
