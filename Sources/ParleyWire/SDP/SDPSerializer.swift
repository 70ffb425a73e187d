extension SessionDescription {
    /// The description as SDP text with CRLF line ends, typed fields first in the conventional
    /// order, then the kept attributes.
    public var text: String {
        var out = SDPLineWriter()
        out.line("v=0")
        out.line("o=\(origin.username) \(origin.sessionID) \(origin.sessionVersion) IN \(origin.addressType) \(origin.address)")
        out.line("s=\(sessionName)")
        if let connection { out.line("c=\(connection)") }
        out.line("t=\(timing)")
        if iceLite { out.attribute("ice-lite") }
        out.attribute("ice-ufrag", iceUfrag)
        out.attribute("ice-pwd", icePassword)
        if !iceOptions.isEmpty { out.attribute("ice-options", iceOptions.joined(separator: " ")) }
        for fingerprint in fingerprints { out.attribute("fingerprint", fingerprint.description) }
        out.attribute("setup", setup?.rawValue)
        if let direction { out.attribute(direction.rawValue) }
        for group in groups { out.attribute("group", ([group.semantics] + group.mids).joined(separator: " ")) }
        if extmapAllowMixed { out.attribute("extmap-allow-mixed") }
        for attribute in otherAttributes { out.attribute(attribute) }
        for section in media { section.write(to: &out) }
        return out.text
    }
}

extension MediaDescription {
    fileprivate func write(to out: inout SDPLineWriter) {
        let port = portCount.map { "\(self.port)/\($0)" } ?? "\(self.port)"
        out.line("m=\(kind) \(port) \(proto) \(formats.joined(separator: " "))")
        if let connection { out.line("c=\(connection)") }
        for bandwidth in bandwidths { out.line("b=\(bandwidth)") }
        out.attribute("mid", mid)
        out.attribute("ice-ufrag", iceUfrag)
        out.attribute("ice-pwd", icePassword)
        if !iceOptions.isEmpty { out.attribute("ice-options", iceOptions.joined(separator: " ")) }
        for fingerprint in fingerprints { out.attribute("fingerprint", fingerprint.description) }
        out.attribute("setup", setup?.rawValue)
        if let direction { out.attribute(direction.rawValue) }
        if rtcpMux { out.attribute("rtcp-mux") }
        if rtcpReducedSize { out.attribute("rtcp-rsize") }
        for header in headerExtensions {
            var value = "\(header.id)"
            if let direction = header.direction { value += "/\(direction.rawValue)" }
            value += " \(header.uri)"
            if let attributes = header.attributes { value += " \(attributes)" }
            out.attribute("extmap", value)
        }
        for codec in codecs {
            var encoding = "\(codec.payloadType) \(codec.name)/\(codec.clockRate)"
            if let channels = codec.channels { encoding += "/\(channels)" }
            out.attribute("rtpmap", encoding)
            if let parameters = codec.parameters { out.attribute("fmtp", "\(codec.payloadType) \(parameters)") }
            for feedback in codec.feedback { out.attribute("rtcp-fb", "\(codec.payloadType) \(feedback)") }
        }
        if let sctpPort { out.attribute("sctp-port", "\(sctpPort)") }
        if let maxMessageSize { out.attribute("max-message-size", "\(maxMessageSize)") }
        if let sctpInit { out.attribute("sctp-init", sctpInit) }
        out.attribute("msid", msid)
        for group in ssrcGroups {
            out.attribute("ssrc-group", ([group.semantics] + group.ssrcs.map(String.init)).joined(separator: " "))
        }
        for ssrc in ssrcs {
            out.attribute("ssrc", "\(ssrc.ssrc) \(ssrc.name)" + (ssrc.value.map { ":\($0)" } ?? ""))
        }
        for attribute in otherAttributes { out.attribute(attribute) }
        for candidate in candidates { out.attribute("candidate", candidate.description) }
        if endOfCandidates { out.attribute("end-of-candidates") }
    }
}

private struct SDPLineWriter {
    var text = ""

    mutating func line(_ line: String) {
        text += line
        text += "\r\n"
    }

    mutating func attribute(_ name: String) { line("a=\(name)") }

    mutating func attribute(_ attribute: SDPAttribute) {
        if let value = attribute.value { line("a=\(attribute.name):\(value)") } else { line("a=\(attribute.name)") }
    }

    mutating func attribute(_ name: String, _ value: String?) {
        guard let value else { return }
        line("a=\(name):\(value)")
    }
}
