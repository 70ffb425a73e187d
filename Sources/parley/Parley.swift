import ArgumentParser
import Foundation
import ParleyMedia
import ParleyWire

@main
struct Parley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "A WebRTC edge for voice AI: a relay on one public port, transceivers that own the sessions.",
        subcommands: [Dev.self, Relay.self, Transceiver.self, Version.self]
    )
}

/// Exit code for a subcommand whose implementation has not landed yet (EX_UNAVAILABLE).
let notImplementedExitCode: Int32 = 69

struct Dev: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Relay, transceiver, built-in agent and demo page in one process, with in-memory defaults."
    )

    func run() throws {
        printNotImplemented("dev", issue: "the transceiver and relay issues")
        throw ExitCode(notImplementedExitCode)
    }
}

struct Relay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The public UDP/TCP forwarder: routes each flow by the token in its first STUN check."
    )

    func run() throws {
        printNotImplemented("relay", issue: "the relay issue")
        throw ExitCode(notImplementedExitCode)
    }
}

struct Transceiver: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Signaling API and WebRTC sessions (ICE lite, DTLS-SRTP, data channels) bridged to the agent."
    )

    func run() throws {
        printNotImplemented("transceiver", issue: "the transceiver issue")
        throw ExitCode(notImplementedExitCode)
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Parley's version and the C libraries it runs on.")

    func run() {
        print("parley \(parleyVersion)")
        for (name, version) in NativeLibraries.summary { print("  \(name): \(version)") }
    }
}

let parleyVersion = "0.1.0-dev"

func printNotImplemented(_ command: String, issue: String) {
    FileHandle.standardError.write(Data("parley \(command): not yet implemented (lands with \(issue)).\n".utf8))
}
