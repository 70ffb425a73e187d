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
