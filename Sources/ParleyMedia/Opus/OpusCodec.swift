import COpus
internal import CParleyShims

/// Why libopus refused something: its error code and message.
public struct OpusError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: Int32
    public var description: String { "opus: " + String(cString: opus_strerror(code)) }
}

/// Sample rates libopus encodes and decodes natively, and what agents may choose.
public enum OpusSampleRate: Int32, Sendable, CaseIterable {
    case hz16000 = 16000
    case hz24000 = 24000
    case hz48000 = 48000

    /// Samples in one 20 ms frame (mono).
    public var samplesPer20Milliseconds: Int { Int(rawValue) / 50 }
}

/// An Opus encoder for one call's outgoing audio: mono, 20 ms frames, voice-tuned, with in-band FEC
/// so the client can repair a lost packet from the next one. Confined to one thread.
public final class OpusEncoder {
    private let encoder: OpaquePointer
    public let sampleRate: OpusSampleRate
    private var packet = [UInt8](repeating: 0, count: 1275)

    public init(sampleRate: OpusSampleRate, bitrate: Int32 = 32000, expectedLossPercent: Int32 = 5) throws(OpusError) {
        var error: Int32 = 0
        guard let encoder = opus_encoder_create(sampleRate.rawValue, 1, OPUS_APPLICATION_VOIP, &error), error == OPUS_OK else {
            throw OpusError(code: error)
        }
        self.encoder = encoder
        self.sampleRate = sampleRate
        for status in [parley_opus_encoder_set_bitrate(encoder, bitrate), parley_opus_encoder_set_signal_voice(encoder),
                       parley_opus_encoder_set_inband_fec(encoder, 1),
                       parley_opus_encoder_set_packet_loss_percent(encoder, expectedLossPercent)] where status != OPUS_OK {
            throw OpusError(code: status)
        }
    }

    deinit { opus_encoder_destroy(encoder) }

    /// Encodes one 20 ms frame of PCM16 mono samples into an Opus packet.
    public func encode(_ pcm: [Int16]) throws(OpusError) -> [UInt8] {
        precondition(pcm.count == sampleRate.samplesPer20Milliseconds, "one 20 ms frame")
        let length = pcm.withUnsafeBufferPointer { samples in
            packet.withUnsafeMutableBufferPointer { output in
                opus_encode(encoder, samples.baseAddress!, Int32(clamping: samples.count), output.baseAddress!, Int32(clamping: output.count))
            }
        }
        guard length > 0 else { throw OpusError(code: length) }
        return Array(packet[0..<Int(length)])
    }
}

/// An Opus decoder for one call's incoming audio: packets at any Opus rate in, PCM16 mono at the
/// agent's rate out, with loss concealment for a missing packet and FEC recovery from the next.
public final class OpusDecoder {
    private let decoder: OpaquePointer
    public let sampleRate: OpusSampleRate
    private var frame: [Int16]

    public init(sampleRate: OpusSampleRate) throws(OpusError) {
        var error: Int32 = 0
        guard let decoder = opus_decoder_create(sampleRate.rawValue, 1, &error), error == OPUS_OK else {
            throw OpusError(code: error)
        }
        self.decoder = decoder
        self.sampleRate = sampleRate
        // Room for the longest Opus packet (120 ms).
        frame = [Int16](repeating: 0, count: Int(sampleRate.rawValue) * 120 / 1000)
    }

    deinit { opus_decoder_destroy(decoder) }

    /// Decodes a packet (all its samples; 20 ms for WebRTC's usual framing).
    public func decode(_ packet: [UInt8]) throws(OpusError) -> [Int16] {
        try run(packet, fec: false, samples: frame.count)
    }

    /// A 20 ms frame to stand in for a lost packet: FEC data from `next` when it carries some,
    /// otherwise libopus's concealment.
    public func conceal(next: [UInt8]? = nil) throws(OpusError) -> [Int16] {
        try run(next, fec: next != nil, samples: sampleRate.samplesPer20Milliseconds)
    }

    private func run(_ packet: [UInt8]?, fec: Bool, samples: Int) throws(OpusError) -> [Int16] {
        let decoded: Int32 = frame.withUnsafeMutableBufferPointer { output in
            if let packet {
                return packet.withUnsafeBufferPointer { input in
                    opus_decode(decoder, input.baseAddress, Int32(clamping: input.count), output.baseAddress!, Int32(clamping: samples), fec ? 1 : 0)
                }
            }
            return opus_decode(decoder, nil, 0, output.baseAddress!, Int32(clamping: samples), 0)
        }
        guard decoded >= 0 else { throw OpusError(code: decoded) }
        return Array(frame[0..<Int(decoded)])
    }
}
