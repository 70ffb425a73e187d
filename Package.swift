// swift-tools-version: 6.1
// Parley: a WebRTC edge for voice AI (relay + transceiver). See README.md and docs/architecture.md.

import PackageDescription

/// Debian's C libraries, found through pkg-config. Only `ParleyMedia` (and test-only peers) import them.
func systemLibrary(_ name: String, pkgConfig: String, apt: String) -> Target {
    .systemLibrary(name: name, pkgConfig: pkgConfig, providers: [.apt([apt])])
}

let package = Package(
    name: "Parley",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "parley", targets: ["parley"]),
        .library(name: "ParleyWire", targets: ["ParleyWire"]),
        .library(name: "ParleyMedia", targets: ["ParleyMedia"]),
        .library(name: "ParleyDTLS", targets: ["ParleyDTLS"]),
        .library(name: "ParleyBoringDTLS", targets: ["ParleyBoringDTLS"]),
        .library(name: "ParleySCTP", targets: ["ParleySCTP"]),
        .library(name: "ParleySession", targets: ["ParleySession"]),
        .library(name: "ParleyRelay", targets: ["ParleyRelay"]),
        .library(name: "ParleyRouting", targets: ["ParleyRouting"]),
        .library(name: "ParleySignaling", targets: ["ParleySignaling"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // C libraries from Debian (see docs/architecture.md for the apt packages).
        systemLibrary("COpenSSL", pkgConfig: "openssl", apt: "libssl-dev"),
        systemLibrary("CSRTP", pkgConfig: "libsrtp2", apt: "libsrtp2-dev"),
        systemLibrary("COpus", pkgConfig: "opus", apt: "libopus-dev"),
        systemLibrary("CUsrSCTP", pkgConfig: "usrsctp", apt: "libusrsctp-dev"),
        // Plain-C wrappers for the macros and variadic calls Swift cannot import.
        .target(name: "CParleyShims", dependencies: ["COpenSSL", "COpus"]),

        // Wire formats: STUN, SDP, demultiplexing, routing token, tunnel header. Pure Swift, no I/O.
        .target(
            name: "ParleyWire",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        // The DTLS interface (`DTLSContext`, `DTLSConnection`), its value types and the process's
        // certificate (swift-certificates): no C library, so both DTLS libraries' modules build on it.
        .target(
            name: "ParleyDTLS",
            dependencies: [
                "ParleyWire",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // DTLS 1.2 on OpenSSL, SRTP, Opus: the one Swift module that imports Debian's C libraries.
        .target(
            name: "ParleyMedia",
            dependencies: ["ParleyWire", "ParleyDTLS", "COpenSSL", "CSRTP", "COpus", "CParleyShims"]
        ),
        // DTLS 1.3 (and 1.2) on the BoringSSL swift-nio-ssl vendors: the one Swift module that
        // imports BoringSSL. It must never see OpenSSL (so it cannot depend on ParleyMedia): the two
        // share their C names. It reaches the internal `CNIOBoringSSL` target through the NIOSSL
        // product; see docs/dtls.md.
        .target(
            name: "ParleyBoringDTLS",
            dependencies: ["ParleyWire", "ParleyDTLS", .product(name: "NIOSSL", package: "swift-nio-ssl")]
        ),
        // Picks a process's DTLS library (`DTLSLibrary`): sees both, calls neither.
        .target(name: "ParleyDTLSLibrary", dependencies: ["ParleyDTLS", "ParleyMedia", "ParleyBoringDTLS"]),
        // The sans-IO core of a call: the WebRTC session (ICE lite, consent, DTLS-SRTP, RTP/RTCP,
        // data channels), the audio both ways, the agent bridge and the built-in agents, the agent
        // protocol's messages, and the client side of a call (`ClientSession`: what `parley load`
        // and the tests call with). It cannot import NIO: the compiler holds the line.
        .target(name: "ParleySession", dependencies: ["ParleyWire", "ParleyMedia", "ParleySCTP"]),
        // The signaling API's decisions, sans-IO: API keys, client secrets, who may touch which
        // call, session configurations, rate limits and admission, the sideband's messages.
        .target(
            name: "ParleySignaling",
            dependencies: ["ParleyWire", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // The transceiver's I/O shell: media workers, signaling, the WebSocket agent link.
        .target(
            name: "ParleyTransceiver",
            dependencies: [
                "ParleyWire", "ParleyMedia", "ParleyDTLSLibrary", "ParleyIO", "ParleySCTP", "ParleySession", "ParleySignaling",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                // wss:// agents. BoringSSL stays inside NIOSSL; this module never imports OpenSSL.
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                // The sideband (`GET /v1/realtime?call_id=`), a WebSocket on the signaling port.
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                // Requests about a call another transceiver of the cluster owns are forwarded to it
                // (CallForwarder; its sidebands over WebSocketClientUpgradeHandler).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // SCTP for data channels (RFC 9260 subset, RFC 8831/8832), pure Swift, sans-IO.
        .target(
            name: "ParleySCTP",
            dependencies: [
                "ParleyWire",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        // SwiftNIO glue shared by the I/O edges: address conversion, clocks, thread pinning.
        .target(
            name: "ParleyIO",
            dependencies: ["ParleyWire", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // recvmmsg/sendmmsg for the relay's packet loop (system calls, no library).
        .target(name: "CParleySockets"),
        // The relay's decisions, sans-IO and NIO-free: route tables (its own flows and those other
        // clusters' relays forward), when a draining relay stops.
        .target(name: "ParleyRouting", dependencies: ["ParleyWire"]),
        // The public UDP forwarder: workers that execute ParleyRouting's decisions, the route store.
        .target(
            name: "ParleyRelay",
            dependencies: [
                "ParleyWire", "ParleyRouting", "ParleyIO", "CParleySockets",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // rediss:// route stores. BoringSSL stays inside NIOSSL; this module never imports a C TLS library.
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The load generator (`parley load`): many ParleySession clients on SwiftNIO sockets.
        .target(
            name: "ParleyClient",
            dependencies: [
                "ParleyWire", "ParleyMedia", "ParleyDTLSLibrary", "ParleySCTP", "ParleySession", "ParleyIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "parley",
            dependencies: [
                "ParleyWire", "ParleyMedia", "ParleyDTLSLibrary", "ParleyTransceiver", "ParleyClient", "ParleyRelay", "ParleySignaling", "ParleyIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                // The relay runs its metrics listener in a ServiceGroup it stops itself (after a drain).
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // Helpers shared by the test targets (a seeded generator).
        .target(name: "ParleyTestSupport", path: "Tests/ParleyTestSupport"),
        .testTarget(
            name: "ParleyWireTests",
            dependencies: ["ParleyWire", "ParleyTestSupport"],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "ParleyMediaTests",
            dependencies: ["ParleyMedia", "CParleyShims", "ParleyTestSupport"]
        ),
        .testTarget(
            name: "ParleyBoringDTLSTests",
            dependencies: ["ParleyBoringDTLS", "ParleyDTLSLibrary", "ParleyMedia", "ParleyTestSupport"]
        ),
        .testTarget(
            name: "ParleySCTPTests",
            // usrsctp is linked only here, as an independent SCTP peer.
            dependencies: ["ParleySCTP", "CUsrSCTP", "ParleyTestSupport"]
        ),
        .testTarget(
            name: "ParleyRelayTests",
            dependencies: [
                "ParleyRelay", "ParleyRouting", "ParleyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ParleySignalingTests",
            dependencies: ["ParleySignaling", "ParleyTestSupport"]
        ),
        .testTarget(
            name: "ParleyTransceiverTests",
            dependencies: [
                "ParleyTransceiver", "ParleySession", "ParleyClient", "ParleySignaling", "ParleyDTLSLibrary", "ParleyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
    ]
)
