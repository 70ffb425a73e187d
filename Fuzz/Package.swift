// swift-tools-version: 6.1
// Parley's libFuzzer harnesses, one executable each, built by scripts/fuzz.sh with
// `swift build --sanitize=fuzzer --sanitize=address` (docs/testing.md). A package of its own, so the
// sanitizers apply to the code under test and the main build never sees these targets.

import PackageDescription

func harness(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: dependencies)
}

let wire: Target.Dependency = .product(name: "ParleyWire", package: "Parley")
let sctp: Target.Dependency = .product(name: "ParleySCTP", package: "Parley")
let media: Target.Dependency = .product(name: "ParleyMedia", package: "Parley")
let boringDTLS: Target.Dependency = .product(name: "ParleyBoringDTLS", package: "Parley")
let session: Target.Dependency = .product(name: "ParleySession", package: "Parley")
let signaling: Target.Dependency = .product(name: "ParleySignaling", package: "Parley")
let routing: Target.Dependency = .product(name: "ParleyRouting", package: "Parley")

let package = Package(
    name: "ParleyFuzz",
    dependencies: [.package(name: "Parley", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [wire, sctp, media, boringDTLS, session]),
        harness("FuzzSTUN", [wire]),
        harness("FuzzSDP", [wire]),
        harness("FuzzToken", [wire]),
        harness("FuzzTunnel", [wire]),
        harness("FuzzSCTP", [wire, sctp]),
        harness("FuzzRTP", [wire, "FuzzSupport"]),
        harness("FuzzRESP", [wire]),
        harness("FuzzAssociation", [wire, sctp, "FuzzSupport"]),
        harness("FuzzAgentMessages", [media, session]),
        harness("FuzzJitterBuffer", [wire, media, session, "FuzzSupport"]),
        harness("FuzzSession", [wire, media, session, "FuzzSupport"]),
        harness("FuzzClientSession", [wire, media, session, "FuzzSupport"]),
        harness("FuzzSignaling", [wire, signaling]),
        harness("FuzzRouting", [wire, routing, "FuzzSupport"]),
        harness("FuzzTCP", [wire, routing, "FuzzSupport"]),
    ]
)
