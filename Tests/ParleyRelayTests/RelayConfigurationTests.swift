import ParleyRelay
import Testing

@Suite struct RelayConfigurationTests {
    @Test func oneAddressPerFamilyIPv4AndIPv6Literals() {
        #expect(RelayConfiguration.publicHostsProblem(["0.0.0.0"]) == nil)
        #expect(RelayConfiguration.publicHostsProblem(["0.0.0.0", "::"]) == nil)
        #expect(RelayConfiguration.publicHostsProblem(["fd00:6::1", "203.0.113.5"]) == nil)
        #expect(RelayConfiguration.publicHostsProblem([])?.contains("at least one") == true)
        #expect(RelayConfiguration.publicHostsProblem(["0.0.0.0", "127.0.0.1"])?.contains("IPv4 is given twice") == true)
        #expect(RelayConfiguration.publicHostsProblem(["::", "::1"])?.contains("IPv6 is given twice") == true)
        #expect(RelayConfiguration.publicHostsProblem(["relay.example.com"])?.contains("not an IPv4 or IPv6 address") == true)
        #expect(RelayConfiguration.publicHostsProblem(["[::1]"]) != nil, "a literal, not a bracketed host")
    }

    @Test func hostAndPortBracketsIPv6() {
        #expect(RelayConfiguration.hostAndPort("0.0.0.0", 3478) == "0.0.0.0:3478")
        #expect(RelayConfiguration.hostAndPort("fd00:6::1", 3478) == "[fd00:6::1]:3478")
    }
}

import Foundation
import ParleyIO

/// Worker pinning follows the process's CPU set (a container's, a pod's), not the machine's numbering.
@Suite struct CPUPinningTests {
    /// Cpus_allowed_list from /proc/self/status: "0-1", "2,5-7".
    static func procAllowed() -> [Int] {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return [] }
        return line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces).split(separator: ",").flatMap { range -> [Int] in
            let ends = range.split(separator: "-").compactMap { Int($0) }
            return ends.count == 2 ? Array(ends[0]...ends[1]) : ends
        }
    }

    @Test func allowedCPUsAreTheProcessesOwn() {
        #expect(allowedCPUs() == Self.procAllowed())
    }

    @Test func aPinnedThreadRunsOnTheIndexthAllowedCPU() {
        let allowed = allowedCPUs() ?? []
        #expect(!allowed.isEmpty)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var seen: [Int]?
        let thread = Thread {
            // One past the count wraps around to the first allowed CPU.
            _ = pinCurrentThread(toAllowedCPU: allowed.count)
            seen = allowedCPUs()  // the calling thread's mask
            done.signal()
        }
        thread.start()
        done.wait()
        #expect(seen == [allowed[0]])
    }
}
