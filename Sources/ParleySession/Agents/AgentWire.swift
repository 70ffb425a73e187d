import Foundation
import ParleyMedia
import ParleyWire

/// What an external agent sent, decoded.
public enum AgentMessage: Equatable, Sendable {
    case accept(OpusSampleRate)
    case audio([Int16])
    case dataChannelSend(label: String, binary: Bool, payload: [UInt8])
    case clearAudio
    case hangUp(String)
    /// The link is gone or the agent broke the protocol: the call ends with this reason.
    case failed(String)
}

/// The agent protocol's JSON and PCM framing, both ways (no I/O).
public enum AgentWire {
    public static let protocolVersion = 1

    public static func sessionStarted(callID: String, offer: AgentSessionStart.Offer, session: String = "{}") -> String {
        json(["type": "session.started", "protocol": protocolVersion, "call_id": callID,
              "sample_rates": OpusSampleRate.allCases.map { Int($0.rawValue) },
              "offer": ["opus_parameters": offer.opusParameters, "data_channel": offer.dataChannel],
              "session": object(session)])
    }

    /// The app's server changed the session (its sideband's `session.update`): the whole new one.
    public static func sessionUpdated(session: String) -> String {
        json(["type": "session.updated", "session": object(session)])
    }

    /// A session's JSON text as an object to embed (it was validated as one when the call was made).
    private static func object(_ text: String) -> Any {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [String: Any]()
    }

    public static func dataChannelMessage(label: String, binary: Bool, payload: [UInt8]) -> String {
        json(["type": "data_channel.message", "label": label, "binary": binary,
              "data": binary ? Data(payload).base64EncodedString() : String(decoding: payload, as: UTF8.self)])
    }

    public static func sessionEnded(reason: String) -> String { json(["type": "session.ended", "reason": reason]) }

    /// What the client reads on `oai-events` when its agent failed, shaped as the Realtime API's errors.
    public static func errorEvent(type: String, message: String) -> String {
        json(["type": "error", "event_id": "event_parley_agent", "error": ["type": type, "message": message]])
    }

    /// One text message from the agent; `.failed` for anything the protocol does not allow.
    public static func decode(text: String) -> AgentMessage {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let type = object["type"] as? String else { return .failed("agent sent a message that is not a JSON object with a type") }
        switch type {
        case "session.accept":
            guard let rate = object["sample_rate"] as? Int, let rawRate = Int32(exactly: rate),
                  let sampleRate = OpusSampleRate(rawValue: rawRate) else {
                return .failed("agent asked for an unsupported sample rate (16000, 24000 or 48000)")
            }
            return .accept(sampleRate)
        case "data_channel.send":
            guard let label = object["label"] as? String, let data = object["data"] as? String else {
                return .failed("data_channel.send needs a label and data")
            }
            let binary = object["binary"] as? Bool ?? false
            guard let payload = binary ? Data(base64Encoded: data).map(Array.init) : Array(data.utf8) else {
                return .failed("data_channel.send: binary data is not base64")
            }
            return .dataChannelSend(label: label, binary: binary, payload: payload)
        case "audio.clear":
            return .clearAudio
        case "session.hangup":
            return .hangUp(object["reason"] as? String ?? "agent hung up")
        default:
            return .failed("agent sent an unknown message type \(type)")
        }
    }

    /// PCM16 little-endian, one 20 ms frame per binary message.
    public static func decode(audio raw: UnsafeRawBufferPointer, sampleRate: OpusSampleRate) -> AgentMessage {
        let samples = sampleRate.samplesPer20Milliseconds
        guard raw.count == samples * 2 else {
            return .failed("agent sent \(raw.count) bytes of audio; a 20 ms frame at \(sampleRate.rawValue) Hz is \(samples * 2)")
        }
        return .audio((0..<samples).map { Int16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self)) })
    }

    private static func json(_ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

