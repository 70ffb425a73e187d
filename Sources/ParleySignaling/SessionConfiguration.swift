/// A call's session configuration, as the Realtime API's `session` object: a JSON object passed to
/// the agent whole (`session.started`). Parley itself reads one field, `agent`: which of the
/// transceiver's agents the call talks to (absent: the configured default).
public struct SessionConfiguration: Sendable, Equatable {
    public private(set) var fields: [String: JSONValue]

    /// The most JSON a `session` part or a client-secret request's session may be.
    public static let maximumBytes = 16 * 1024

    public init(fields: [String: JSONValue] = [:]) { self.fields = fields }

    /// A `session` as sent: a JSON object whose `agent`, if there, is a string, and whose `type`,
    /// if there, is `realtime` (as OpenAI's sessions say).
    public init(parsing bytes: some Collection<UInt8>, limit: Int = SessionConfiguration.maximumBytes) throws(SignalingError) {
        guard bytes.count <= limit else {
            throw .badRequest("the session is \(bytes.count) bytes; at most \(limit) are taken", code: "session_too_large")
        }
        guard let value = JSONValue(parsing: bytes), case .object(let fields) = value else {
            throw .badRequest("the session must be a JSON object", code: "invalid_session")
        }
        try self.init(validating: fields)
    }

    public init(validating fields: [String: JSONValue]) throws(SignalingError) {
        if let agent = fields["agent"], agent.stringValue == nil {
            throw .badRequest("session.agent must be a string (an agent's name)", code: "invalid_session")
        }
        if let type = fields["type"], type != .string("realtime") {
            throw .badRequest("session.type must be \"realtime\"", code: "invalid_session")
        }
        self.fields = fields
    }

    public var agent: String? { fields["agent"]?.stringValue }

    public var json: JSONValue { .object(fields) }

    /// The session a call gets. An API key's request takes its own session as sent. A client
    /// secret's session is fixed when it was minted: the offer may repeat fields of it, but any
    /// field it sets differently, or adds, is refused (403), so a browser gets only what the app's
    /// server allowed. The agent named must be one of `agents`.
    public static func resolve(
        requested: SessionConfiguration?, credential: Credential, agents: Set<String>
    ) throws(SignalingError) -> SessionConfiguration {
        var session = requested ?? SessionConfiguration()
        if case .clientSecret(let claims) = credential {
            let fixed = claims.session.objectValue ?? [:]
            for (key, value) in requested?.fields ?? [:] where fixed[key] != value {
                // Which field, never its sealed value: the browser must not learn what the app's
                // server put in the secret (instructions, credentials for the agent).
                if fixed[key] != nil {
                    throw .forbidden("the client secret fixes session.\(key); the offer may not change it", code: "session_not_allowed")
                }
                throw .forbidden("the client secret does not let the offer set session.\(key); mint a secret with it",
                                 code: "session_not_allowed")
            }
            session = try SessionConfiguration(validating: fixed)
        }
        if let agent = session.agent, !agents.contains(agent) {
            throw .badRequest("unknown agent \(agent): this server has \(agents.sorted().joined(separator: ", "))",
                              code: "unknown_agent")
        }
        return session
    }
}
