import Foundation

/// The sideband's messages (docs/api.md, "The sideband"): what the app's server hears about a call
/// it owns, and what it may tell it. JSON text frames both ways; no I/O here.
public enum SidebandEvent: Sendable, Equatable {
    /// The call's state: `created` (waiting for the client's ICE), `connecting` (ICE up, DTLS under
    /// way), `connected` (media flows), `ended` (with the reason). Sent first on every new sideband.
    case state(callID: String, state: String, reason: String?)
    /// What the client sent on one of its data channels (`oai-events` among them).
    case clientMessage(label: String, binary: Bool, payload: [UInt8])
    /// What the agent (or Parley, for `output_audio_buffer.*`) sent the client.
    case agentMessage(label: String, binary: Bool, payload: [UInt8])
    /// The session configuration changed (after the app's `session.update`): the whole new one.
    case sessionUpdated(session: String)
    /// A message from the app's server was refused.
    case error(code: String, message: String)

    public var text: String {
        switch self {
        case .state(let callID, let state, let reason):
            var fields: [String: JSONValue] = ["type": .string("call.state"), "call_id": .string(callID), "state": .string(state)]
            if let reason { fields["reason"] = .string(reason) }
            return JSONValue.object(fields).text
        case .clientMessage(let label, let binary, let payload):
            return Self.message(type: "call.client_message", label: label, binary: binary, payload: payload)
        case .agentMessage(let label, let binary, let payload):
            return Self.message(type: "call.agent_message", label: label, binary: binary, payload: payload)
        case .sessionUpdated(let session):
            let object = JSONValue(parsing: Array(session.utf8)) ?? .object([:])
            return JSONValue.object(["type": .string("session.updated"), "session": object]).text
        case .error(let code, let message):
            return JSONValue.object([
                "type": .string("error"), "error": .object(["code": .string(code), "message": .string(message)]),
            ]).text
        }
    }

    /// `data` is the message as sent (base64 when binary); `event` the same text parsed, when it is JSON.
    private static func message(type: String, label: String, binary: Bool, payload: [UInt8]) -> String {
        var fields: [String: JSONValue] = ["type": .string(type), "label": .string(label), "binary": .bool(binary)]
        if binary {
            fields["data"] = .string(Data(payload).base64EncodedString())
        } else {
            fields["data"] = .string(String(decoding: payload, as: UTF8.self))
            if let event = JSONValue(parsing: payload) { fields["event"] = event }
        }
        return JSONValue.object(fields).text
    }
}

/// What the app's server asks of its call over the sideband.
public enum SidebandCommand: Sendable, Equatable {
    /// A message for the client's data channel with that label.
    case send(label: String, binary: Bool, payload: [UInt8])
    /// New session fields (merged over the current ones, as the Realtime API's `session.update`).
    case updateSession(SessionConfiguration)
    case hangUp(reason: String)

    /// The longest message the app's server may send (a session update is the largest).
    public static let maximumBytes = 64 * 1024

    /// One text frame from the app's server; `SignalingError` (400) says what is wrong with it.
    public init(decoding text: some Collection<UInt8>) throws(SignalingError) {
        guard text.count <= Self.maximumBytes else {
            throw .badRequest("sideband messages are at most \(Self.maximumBytes) bytes", code: "message_too_large")
        }
        guard let value = JSONValue(parsing: text), let object = value.objectValue, let type = object["type"]?.stringValue else {
            throw .badRequest("a sideband message is a JSON object with a type", code: "invalid_message")
        }
        switch type {
        case "call.send":
            let label = object["label"]?.stringValue ?? "oai-events"
            guard !label.isEmpty, label.utf8.count <= 1024 else { throw .badRequest("call.send: a bad label", code: "invalid_message") }
            if let event = object["event"] {
                self = .send(label: label, binary: false, payload: Array(event.text.utf8))
            } else if let data = object["data"]?.stringValue {
                if object["binary"] == .bool(true) {
                    guard let bytes = Data(base64Encoded: data) else {
                        throw .badRequest("call.send: binary data must be base64", code: "invalid_message")
                    }
                    self = .send(label: label, binary: true, payload: Array(bytes))
                } else {
                    self = .send(label: label, binary: false, payload: Array(data.utf8))
                }
            } else {
                throw .badRequest("call.send needs an event (JSON) or data (text)", code: "invalid_message")
            }
        case "session.update":
            guard let session = object["session"]?.objectValue else {
                throw .badRequest("session.update needs a session object", code: "invalid_message")
            }
            self = .updateSession(try SessionConfiguration(validating: session))
        case "call.hangup":
            self = .hangUp(reason: object["reason"]?.stringValue ?? "hung up by the app's server")
        default:
            throw .badRequest("unknown sideband message type \(type): call.send, session.update or call.hangup",
                              code: "invalid_message")
        }
    }
}

extension SessionConfiguration {
    /// `update`'s fields over these (the agent may not change mid-call: it is not a setting but
    /// another call).
    public func merging(_ update: SessionConfiguration) throws(SignalingError) -> SessionConfiguration {
        if let agent = update.agent, agent != self.agent {
            throw .badRequest("a call's agent cannot change mid-call", code: "invalid_session")
        }
        var fields = self.fields
        for (key, value) in update.fields { fields[key] = value }
        return try SessionConfiguration(validating: fields)
    }
}
