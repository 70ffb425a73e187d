import Foundation
import Testing
@testable import ParleyMedia

@Suite struct OpusTests {
    /// 20 ms frames of a 440 Hz tone at the given rate.
    static func tone(rate: OpusSampleRate, frames: Int) -> [[Int16]] {
        let perFrame = rate.samplesPer20Milliseconds
        return (0..<frames).map { frame in
            (0..<perFrame).map { index in
                let t = Double(frame * perFrame + index) / Double(rate.rawValue)
                return Int16(sin(2 * .pi * 440 * t) * 8000)
            }
        }
    }

    static func energy(_ samples: [Int16]) -> Double {
        samples.reduce(0) { $0 + Double($1) * Double($1) } / Double(max(1, samples.count))
    }

    @Test(arguments: OpusSampleRate.allCases)
    func toneSurvivesEncodeAndDecode(rate: OpusSampleRate) throws {
        let encoder = try OpusEncoder(sampleRate: rate)
        let decoder = try OpusDecoder(sampleRate: rate)
        let input = Self.tone(rate: rate, frames: 50)
        var output: [Int16] = []
        for frame in input {
            let packet = try encoder.encode(frame)
            #expect(packet.count > 0 && packet.count < 200)
            let decoded = try decoder.decode(packet)
            #expect(decoded.count == rate.samplesPer20Milliseconds)
            output += decoded
        }
        // After the codec's start-up, the tone's energy comes back within a few dB.
        let tail = Array(output.suffix(rate.samplesPer20Milliseconds * 25))
        let ratio = Self.energy(tail) / Self.energy(input.suffix(25).flatMap { $0 })
        #expect(ratio > 0.5 && ratio < 2.0, "energy ratio \(ratio)")
    }

    @Test func lostPacketsAreConcealedAndRepairedFromTheNext() throws {
        let rate = OpusSampleRate.hz48000
        let encoder = try OpusEncoder(sampleRate: rate, expectedLossPercent: 20)
        let decoder = try OpusDecoder(sampleRate: rate)
        let packets = try Self.tone(rate: rate, frames: 30).map { try encoder.encode($0) }
        for packet in packets.prefix(20) { _ = try decoder.decode(packet) }
        // Packet 20 is lost: the FEC in packet 21 repairs it, at full length and with the tone's energy.
        let repaired = try decoder.conceal(next: packets[21])
        #expect(repaired.count == rate.samplesPer20Milliseconds)
        #expect(Self.energy(repaired) > 1_000_000, "FEC carries the tone")
        _ = try decoder.decode(packets[21])
        // Two in a row lost with nothing after: concealment still delivers a full frame.
        let concealed = try decoder.conceal()
        #expect(concealed.count == rate.samplesPer20Milliseconds)
    }

    @Test func garbageIsRefusedWithOpusReason() throws {
        let decoder = try OpusDecoder(sampleRate: .hz16000)
        #expect(throws: OpusError.self) { try decoder.decode([0xFF, 0xFF, 0xFF]) }
        #expect(try decoder.decode(try OpusEncoder(sampleRate: .hz16000).encode(Self.tone(rate: .hz16000, frames: 1)[0])).count == 320)
    }
}
