import Foundation
import Testing
@testable import ParleyWire
import ParleyTestSupport

@Suite struct SDPOfferTests {
    @Test func chromeOfferParsesIntoTheTypedModel() throws {
        let offer = try SessionDescription(parsing: Fixtures.offer("chrome"))
        #expect(offer.origin.sessionID == "1170911920343960295")
        #expect(offer.bundleMids == ["0", "1"])
        #expect(offer.extmapAllowMixed)
        #expect(offer.media.count == 2)

        let audio = offer.media[0]
        #expect(audio.kind == "audio")
        #expect(audio.port == 45109)
        #expect(audio.proto == "UDP/TLS/RTP/SAVPF")
        #expect(audio.formats == ["111", "63", "9", "0", "8", "13", "110", "126"])
        #expect(audio.mid == "0")
        #expect(audio.iceUfrag == "xOn5")
        #expect(audio.icePassword == "JGBgdgCEZMQGSGHMcyOifezC")
        #expect(audio.iceOptions == ["trickle"])
        #expect(audio.setup == .actpass)
        #expect(audio.direction == .sendrecv)
        #expect(audio.rtcpMux && audio.rtcpReducedSize)
        #expect(audio.fingerprints.first?.algorithm == "sha-256")
        #expect(audio.fingerprints.first?.digest.count == 32)
        #expect(audio.fingerprints.first?.description.hasPrefix("sha-256 EB:7F:7C:9F") == true)
        let opus = try #require(audio.codecs.first)
        #expect(opus.payloadType == 111 && opus.isOpus && opus.channels == 2)
        #expect(opus.parameters == "minptime=10;useinbandfec=1")
        #expect(opus.parameterMap["useinbandfec"] == "1")
        #expect(opus.feedback == ["transport-cc"])
        #expect(audio.codecs.map(\.name) == ["opus", "red", "G722", "PCMU", "PCMA", "CN", "telephone-event", "telephone-event"])
        #expect(audio.headerExtensions.count == 4)
        #expect(audio.headerExtensions[2] == RTPHeaderExtension(
            id: 3, uri: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"))
        #expect(audio.ssrcs.count == 2)
        #expect(audio.primarySSRC == 2_591_106_659)
        #expect(audio.ssrcs[0] == SSRCAttribute(ssrc: 2_591_106_659, name: "cname", value: "j7jTPfb/AmeOJpyQ"))
        #expect(audio.msid == "9d798b74-fdb5-48d4-82aa-c84405c41b8e 6bfb6ac3-27d1-4113-a8ca-7a404bb9cfbd")
        #expect(audio.candidates.count == 2)
        #expect(audio.candidates[0].address == "127.0.0.1" && audio.candidates[0].port == 45109)
        #expect(audio.candidates[0].priority == 2_122_260_223 && audio.candidates[0].kind == .host)
        #expect(audio.candidates[1].transport == "tcp")
        #expect(audio.candidates[1].extensions.first! == ("tcptype", "active"))
        #expect(audio.otherAttributes.contains(SDPAttribute("rtcp-xr", "rcvr-rtt=all")))

        let data = offer.media[1]
        #expect(data.isDataChannel)
        #expect(data.mid == "1")
        #expect(data.sctpPort == 5000)
        #expect(data.maxMessageSize == 262_144)
    }

    @Test func firefoxOfferUsesSessionLevelFingerprintAndRTCPComponents() throws {
        let offer = try SessionDescription(parsing: Fixtures.offer("firefox"))
        #expect(offer.fingerprints.count == 1)
        #expect(offer.direction == .sendrecv)
        let audio = offer.media[0]
        #expect(audio.fingerprints.isEmpty)
        #expect(offer.fingerprints(for: audio).first?.digest.count == 32)
        #expect(audio.codecs.first?.payloadType == 109)
        #expect(audio.codecs.first?.parameters == "maxplaybackrate=48000;stereo=1;useinbandfec=1")
        #expect(audio.candidates.filter { $0.component == 2 }.count == 4)
        #expect(audio.candidates.contains { $0.address == "::1" })
        #expect(audio.endOfCandidates)
        #expect(audio.headerExtensions.contains { $0.id == 2 && $0.direction == .recvonly })
        #expect(offer.media[1].maxMessageSize == 1_073_741_823)
    }

    @Test func aiortcOfferCarriesSeveralFingerprints() throws {
        let offer = try SessionDescription(parsing: Fixtures.offer("aiortc"))
        let audio = offer.media[0]
        #expect(audio.fingerprints.map(\.algorithm) == ["sha-256", "sha-384", "sha-512"])
        #expect(audio.fingerprints.map(\.digest.count) == [32, 48, 64])
        #expect(audio.codecs.first?.payloadType == 96)
        #expect(offer.iceCredentials(for: audio)?.ufrag == "WW4F")
    }

    @Test func chromeWarpOfferKeepsItsExtensions() throws {
        let offer = try SessionDescription(parsing: Fixtures.offer("chrome-warp"))
        #expect(offer.media[0].iceOptions == ["trickle", "sped", "googspedv1"])
        #expect(offer.media[1].sctpInit == "AQAAHu7QVMUAUAAA/////4YO4QzAAAAEgAgABoLA")
        #expect(!offer.media[1].otherAttributes.contains { $0.name == "sctp-init" })
    }

    @Test func aMalformedSctpInitIsRefused() throws {
        let good = try Fixtures.offer("chrome-warp")
        for bad in ["a=sctp-init:***", "a=sctp-init:", "a=sctp-init:" + String(repeating: "A", count: 2733), "a=sctp-init:AQ AA"] {
            let text = good.replacingOccurrences(of: "a=sctp-init:AQAAHu7QVMUAUAAA/////4YO4QzAAAAEgAgABoLA", with: bad)
            #expect(throws: SDPParseError.self, "\(bad.prefix(30))") { try SessionDescription(parsing: text) }
        }
    }

    @Test(arguments: Fixtures.offerNames)
    func offersRoundTripThroughTextAndParser(name: String) throws {
        let offer = try SessionDescription(parsing: Fixtures.offer(name))
        let again = try SessionDescription(parsing: offer.text)
        #expect(again == offer)
        #expect(offer.text.hasSuffix("\r\n"))
        #expect(!offer.text.contains("\n\n"))
    }

    @Test func lineFeedOnlyTextParsesTheSame() throws {
        let crlf = try Fixtures.offer("chrome")
        let lf = crlf.replacingOccurrences(of: "\r\n", with: "\n")
        #expect(try SessionDescription(parsing: lf) == SessionDescription(parsing: crlf))
    }

    @Test(arguments: [
        ("", SDPParseError.Reason.empty),
        ("hello world", .missingVersion),
        ("v=1\r\no=- 1 1 IN IP4 0.0.0.0\r\n", .unsupportedVersion),
        ("v=0\r\ns=-\r\n", .missingOrigin),
        ("v=0\r\no=- 1\r\n", .malformedOrigin),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nthis is not sdp\r\n", .malformedLine),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio\r\n", .malformedMediaLine),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 99999 UDP/TLS/RTP/SAVPF 111\r\n", .malformedMediaLine),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:300 opus/48000/2\r\n", .malformedAttribute("rtpmap")),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 ZZ:00\r\n", .malformedAttribute("fingerprint")),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:bad ufrag\r\n", .malformedAttribute("ice-ufrag")),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:sideways\r\n", .malformedAttribute("setup")),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp x 1.2.3.4 5 typ host\r\n", .malformedAttribute("candidate")),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:70000\r\n", .malformedAttribute("sctp-port")),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=a\u{01}b\r\n", .invalidText),
    ] as [(String, SDPParseError.Reason)])
    func malformedDescriptionsAreRejectedWithAReason(text: String, reason: SDPParseError.Reason) {
        #expect {
            try SessionDescription(parsing: text)
        } throws: { error in
            (error as? SDPParseError)?.reason == reason
        }
    }

    @Test func oversizedInputIsRefusedBeforeParsing() {
        let huge = "v=0\r\n" + String(repeating: "a=x\r\n", count: 20_000)
        #expect(throws: SDPParseError(line: 0, reason: .tooLarge)) { try SessionDescription(parsing: huge) }
        let manySections = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n" + String(repeating: "m=audio 9 RTP/AVP 0\r\n", count: 100)
        #expect(throws: SDPParseError(line: 67, reason: .tooLarge)) { try SessionDescription(parsing: manySections) }
        let manyLines = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n" + String(repeating: "a=x\r\n", count: 5000)
        #expect(manyLines.utf8.count < SDPLimits.maximumBytes)
        #expect(throws: SDPParseError(line: 0, reason: .tooLarge)) { try SessionDescription(parsing: manyLines) }
        #expect(throws: SDPParseError(line: 0, reason: .invalidText)) { try SessionDescription(parsing: [0xff, 0xfe, 0x00]) }
    }

    /// Random edits of a real offer: the parser returns or throws, never traps.
    @Test func mutatedOffersNeverTrap() throws {
        let original = Array(try Fixtures.offer("chrome").utf8)
        var generator = SplitMix64(seed: 11)
        let interesting = Array("=: /\r\n0123456789abcxyzAm".utf8)
        var parsedCount = 0
        for _ in 0..<3_000 {
            var bytes = original
            for _ in 0...(Int(generator.next() % 8)) {
                let index = Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 3 {
                case 0: bytes[index] = interesting[Int(generator.next() % UInt64(interesting.count))]
                case 1: bytes.remove(at: index)
                default: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: index)
                }
            }
            if let parsed = try? SessionDescription(parsing: bytes) {
                parsedCount += 1
                _ = try SessionDescription(parsing: parsed.text)
            }
        }
        #expect(parsedCount > 100, "mutations that keep the offer valid are exercised too")
    }
}

@Suite struct SDPAnswerTests {
    static let fingerprint = CertificateFingerprint(algorithm: "sha-256", digest: (0..<32).map { UInt8($0) })
    static let parameters = AnswerParameters(
        iceUfrag: "EQECIZJQfwHzZcdue7vKl5TlEROPVXbv", icePassword: "abcdefghijklmnopqrstuvwx",
        fingerprint: fingerprint,
        candidates: [ICECandidate(foundation: "1", priority: 2_130_706_431, address: "127.0.0.1", port: 3478)],
        sessionID: 42, audioSSRC: 0x1234_5678, cname: "parley")

    /// SPED is answered with the SPED tokens the offer carried (Chromium's `sped googspedv1`, not
    /// `trickle`), on every answered section; not when unoffered, disabled, or with Parley as the
    /// DTLS client (an ICE-lite server sends no check its ClientHello could ride).
    @Test func spedIsAnsweredWithTheOfferedTokensOnly() throws {
        let warp = try SessionDescription(parsing: Fixtures.offer("chrome-warp"))
        let negotiated = try SessionDescription.iceLiteAnswer(to: warp, parameters: Self.parameters)
        #expect(negotiated.spedOptions == ["sped", "googspedv1"] && negotiated.sped)
        let answer = try SessionDescription(parsing: negotiated.answer.text)
        #expect(answer.media.filter { !$0.isRejected }.allSatisfy { $0.iceOptions == ["sped", "googspedv1"] })
        #expect(negotiated.answer.text.contains("a=ice-options:sped googspedv1\r\n"))

        var disabled = Self.parameters
        disabled.sped = false
        #expect(try SessionDescription.iceLiteAnswer(to: warp, parameters: disabled).spedOptions.isEmpty)
        let plain = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: Fixtures.offer("chrome")), parameters: Self.parameters)
        #expect(!plain.sped && !plain.answer.text.contains("ice-options"))

        // Session-level options count too; an offer insisting on being DTLS server gets no SPED.
        let sessionLevel = try Fixtures.offer("chrome").replacingOccurrences(of: "t=0 0\r\n", with: "t=0 0\r\na=ice-options:goog-sped-v1\r\n")
        #expect(try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: sessionLevel), parameters: Self.parameters).spedOptions == ["goog-sped-v1"])
        let passive = try Fixtures.offer("chrome-warp").replacingOccurrences(of: "a=setup:actpass", with: "a=setup:passive")
        let active = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: passive), parameters: Self.parameters)
        #expect(active.localSetup == .active && active.spedOptions.isEmpty)
    }

    @Test(arguments: Fixtures.offerNames)
    func everyCapturedOfferGetsAnICELiteAnswer(name: String) throws {
        let offer = try SessionDescription(parsing: Fixtures.offer(name))
        let negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: Self.parameters)
        let answer = try SessionDescription(parsing: negotiated.answer.text)
        #expect(answer.iceLite)
        #expect(answer.bundleMids == ["0", "1"])
        #expect(answer.media.count == offer.media.count)
        let audio = answer.media[0]
        #expect(audio.mid == "0")
        #expect(audio.port == 3478)
        #expect(audio.connection == "IN IP4 127.0.0.1")
        #expect(audio.iceUfrag == Self.parameters.iceUfrag)
        #expect(audio.icePassword == Self.parameters.icePassword)
        #expect(audio.fingerprints == [Self.fingerprint])
        #expect(audio.setup == .passive)
        #expect(audio.rtcpMux)
        #expect(audio.direction == .sendrecv)
        #expect(audio.formats == [String(offer.media[0].codecs.first(where: \.isOpus)!.payloadType)])
        #expect(audio.codecs.count == 1 && audio.codecs[0].isOpus)
        #expect(audio.ssrcs == [SSRCAttribute(ssrc: 0x1234_5678, name: "cname", value: "parley")])
        #expect(audio.candidates == Self.parameters.candidates)
        #expect(audio.endOfCandidates)
        let data = answer.media[1]
        #expect(data.isDataChannel && data.mid == "1")
        #expect(data.sctpPort == 5000 && data.maxMessageSize == 262_144)
        #expect(negotiated.remoteUfrag == offer.iceCredentials(for: offer.media[0])?.ufrag)
        #expect(negotiated.dataChannelMid == "1")
        #expect(negotiated.localSetup == .passive)
        #expect(data.sctpInit == nil && negotiated.localSCTPInit == nil && negotiated.remoteSCTPInit == nil, "no SNAP unless offered and ours given")
    }

    /// SNAP: Parley's own INIT in the answer when the offer carried one (never the client's), both
    /// remembered; no INIT when the offer had none.
    @Test func snapIsAnsweredWithParleysOwnInitOnlyWhenOffered() throws {
        var parameters = Self.parameters
        parameters.sctpInit = "AQAAHgECAwQAEAAABAAEAKCwwNDAAAAEgAgABoLA"
        let warp = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: Fixtures.offer("chrome-warp")), parameters: parameters)
        #expect(warp.answer.text.contains("a=sctp-init:AQAAHgECAwQAEAAABAAEAKCwwNDAAAAEgAgABoLA\r\n"))
        #expect(!warp.answer.text.contains("AQAAHu7Q"), "the client's INIT is never echoed")
        #expect(warp.localSCTPInit == parameters.sctpInit && warp.remoteSCTPInit == "AQAAHu7QVMUAUAAA/////4YO4QzAAAAEgAgABoLA")
        #expect(try SessionDescription(parsing: warp.answer.text).media[1].sctpInit == parameters.sctpInit)
        let plain = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: Fixtures.offer("chrome")), parameters: parameters)
        #expect(!plain.answer.text.contains("sctp-init") && plain.localSCTPInit == nil && plain.remoteSCTPInit == nil)
    }

    @Test func chromeNegotiationReportsWhatWasAgreed() throws {
        let offer = try SessionDescription(parsing: Fixtures.offer("chrome"))
        let negotiated = try SessionDescription.iceLiteAnswer(to: offer, parameters: Self.parameters)
        #expect(negotiated.opus.payloadType == 111)
        #expect(negotiated.remoteAudioSSRC == 2_591_106_659)
        #expect(negotiated.remotePassword == "JGBgdgCEZMQGSGHMcyOifezC")
        #expect(negotiated.remoteFingerprints.count == 1)
        #expect(negotiated.remoteMaxMessageSize == 262_144)
        #expect(negotiated.remoteSCTPPort == 5000)
    }

    @Test func unsupportedSectionsAreRejectedWithPortZero() throws {
        var text = try Fixtures.offer("chrome")
        text += "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=rtpmap:96 VP8/90000\r\na=rtcp-mux\r\n"
        text = text.replacingOccurrences(of: "a=group:BUNDLE 0 1", with: "a=group:BUNDLE 0 1 2")
        let negotiated = try SessionDescription.iceLiteAnswer(
            to: SessionDescription(parsing: text), parameters: Self.parameters)
        let answer = negotiated.answer
        #expect(answer.media.count == 3)
        #expect(answer.media[2].isRejected && answer.media[2].kind == "video" && answer.media[2].mid == "2")
        #expect(answer.bundleMids == ["0", "1"])
    }

    @Test func offerWithoutBundleGetsAudioOnly() throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: "a=group:BUNDLE 0 1\r\n", with: "")
        let answer = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters).answer
        #expect(answer.groups.isEmpty)
        #expect(!answer.media[0].isRejected)
        #expect(answer.media[1].isRejected, "data channels share the audio transport, so only when bundled")
    }

    @Test func dataOutsideTheAudioBundleIsRejected() throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: "a=group:BUNDLE 0 1", with: "a=group:BUNDLE 0")
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters)
        #expect(negotiated.answer.bundleMids == ["0"])
        #expect(negotiated.answer.media[1].isRejected)
        #expect(negotiated.dataChannelMid == nil)
    }

    @Test func bundleOnlySectionsAreLive() throws {
        var text = try Fixtures.offer("chrome")
        text = text.replacingOccurrences(of: "m=application 33669", with: "m=application 0")
        text = text.replacingOccurrences(of: "a=mid:1\r\n", with: "a=mid:1\r\na=bundle-only\r\n")
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters)
        #expect(negotiated.dataChannelMid == "1")
        #expect(negotiated.answer.bundleMids == ["0", "1"])
    }

    @Test func rejectedSectionsCarryAConnectionLine() throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: "a=group:BUNDLE 0 1", with: "a=group:BUNDLE 0")
        let answer = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters).answer
        #expect(answer.media[1].connection == "IN IP4 0.0.0.0")
    }

    @Test func recvonlyOfferGetsSendonlyAnswer() throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: "a=sendrecv", with: "a=recvonly")
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters)
        #expect(negotiated.answer.media[0].direction == .sendonly)
    }

    @Test func fmtpWithEmptyItemsDoesNotTrap() {
        let codec = RTPCodec(payloadType: 111, name: "opus", clockRate: 48000, parameters: "=;;useinbandfec=1;=x; stereo")
        #expect(codec.parameterMap == ["useinbandfec": "1", "stereo": ""])
    }

    @Test func clientThatInsistsOnPassiveMakesUsActive() throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: "a=setup:actpass", with: "a=setup:passive")
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters)
        #expect(negotiated.localSetup == .active)
        #expect(negotiated.answer.media[0].setup == .active)
    }

    @Test func sendonlyOfferGetsRecvonlyAnswer() throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: "a=sendrecv", with: "a=sendonly")
        let negotiated = try SessionDescription.iceLiteAnswer(to: SessionDescription(parsing: text), parameters: Self.parameters)
        #expect(negotiated.answer.media[0].direction == .recvonly)
    }

    @Test(arguments: [
        ("m=audio 45109 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "m=video 45109 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", OfferRejection.noAudio),
        ("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 speex/48000/2", .noOpus),
        ("a=fingerprint:sha-256", "a=x-fingerprint:sha-256", .noFingerprint),
        ("a=ice-pwd:", "a=x-ice-pwd:", .noICECredentials),
        ("a=rtcp-mux\r\n", "", .rtcpMuxRequired),
        ("UDP/TLS/RTP/SAVPF", "RTP/AVP", .unsupportedTransport("RTP/AVP")),
        ("a=mid:0\r\n", "", .missingMid),
    ] as [(String, String, OfferRejection)])
    func unusableOffersAreRefusedWithAReason(find: String, replace: String, rejection: OfferRejection) throws {
        let text = try Fixtures.offer("chrome").replacingOccurrences(of: find, with: replace)
        let offer = try SessionDescription(parsing: text)
        #expect(throws: rejection) { try SessionDescription.iceLiteAnswer(to: offer, parameters: Self.parameters) }
    }
}

/// Inputs the fuzzers found (scripts/fuzz.sh), kept so they stay fixed.
@Suite struct FuzzRegressionTests {
    static let directory = Fixtures.directory.appendingPathComponent("fuzz-regressions")
    static let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()) ?? []

    @Test func regressionsArePresent() { #expect(!Self.names.isEmpty) }

    @Test(arguments: names.filter { $0.hasPrefix("sdp-") })
    func sdpSerializesToTextThatParsesBack(name: String) throws {
        let bytes = Array(try Data(contentsOf: Self.directory.appendingPathComponent(name)))
        let description = try SessionDescription(parsing: bytes)
        let again = try SessionDescription(parsing: description.text)
        #expect(again == description)
    }
}

/// The candidates an answer advertises (relay addresses, UDP and ICE-TCP).
@Suite struct AdvertisedCandidateTests {
    let relayA = TransportAddress.v4(IPv4Address(203, 0, 113, 5), port: 3478)
    let relayB = TransportAddress.v6(IPv6Address("2001:db8::5")!, port: 3478)

    @Test func udpFirstInOrderThenPassiveTCPBelowEveryUDPCandidate() {
        let lines = ICECandidate.advertised([relayA, relayB], tcpPort: 443).map(\.description)
        #expect(lines == [
            "1 1 udp 2130706431 203.0.113.5 3478 typ host",
            "2 1 udp 2130706175 2001:db8::5 3478 typ host",
            "3 1 tcp 1520435199 203.0.113.5 443 typ host tcptype passive",
            "4 1 tcp 1520434943 2001:db8::5 443 typ host tcptype passive",
        ])
        // Each line parses back as a candidate (RFC 8839 grammar), the TCP ones with their tcptype.
        for line in lines {
            let parsed = ICECandidate(attributeValue: Substring(line))
            #expect(parsed?.description == line)
        }
        // The lowest UDP priority (the last of 256 addresses) is still above the highest TCP one.
        let many = (0..<256).map { TransportAddress.v4(IPv4Address(10, 0, 0, UInt8($0)), port: 3478) }
        let candidates = ICECandidate.advertised(many, tcpPort: 443)
        let udp = candidates.filter { $0.transport == "udp" }.map(\.priority)
        let tcp = candidates.filter { $0.transport == "tcp" }.map(\.priority)
        #expect(udp.min()! > tcp.max()! && udp == udp.sorted(by: >) && tcp == tcp.sorted(by: >))
        #expect(Set(candidates.map(\.foundation)).count == candidates.count)
    }

    @Test func noTCPPortNoTCPCandidates() {
        #expect(ICECandidate.advertised([relayA], tcpPort: nil).map(\.transport) == ["udp"])
    }
}
