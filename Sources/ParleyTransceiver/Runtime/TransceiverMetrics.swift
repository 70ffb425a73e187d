import Metrics
import ParleySession

/// The transceiver's metrics (swift-metrics; exported in Prometheus format at /metrics).
/// Workers count locally per packet and add to these once per tick, so the packet path touches
/// no shared atomics.
struct TransceiverMetrics: Sendable {
    let sessionsCreated = Counter(label: "parley_sessions_created_total")
    let sessionsActive = Meter(label: "parley_sessions_active")
    let dtlsHandshakes = Counter(label: "parley_dtls_handshakes_total")
    let setupSeconds = Timer(label: "parley_setup_seconds", preferredDisplayUnit: .seconds)
    let datagramsReceived = Counter(label: "parley_datagrams_received_total")
    let datagramsSent = Counter(label: "parley_datagrams_sent_total")
    let rtpReceived = Counter(label: "parley_rtp_received_total")
    let rtpSent = Counter(label: "parley_rtp_sent_total")
    /// Caller audio frames not sent to an external agent because it was not reading fast enough.
    let agentAudioDropped = Counter(label: "parley_agent_audio_dropped_total")
    /// Sidebands closed because their server read more than `MediaWorker.sidebandBacklog` events behind.
    let sidebandsCutOff = Counter(label: "parley_sidebands_cut_off_total")
    let sidebandsOpened = Counter(label: "parley_sidebands_opened_total")
    /// Requests about calls another transceiver owns, forwarded to it (`answered`: it answered,
    /// whatever the status; `unreachable`: it did not, and the client got a 502).
    let forwardedAnswered = Counter(label: "parley_signaling_forwarded_total", dimensions: [("outcome", "answered")])
    let forwardedUnreachable = Counter(label: "parley_signaling_forwarded_total", dimensions: [("outcome", "unreachable")])
    /// Connections opened to external agents (one per call whose client's first check authenticated).
    let agentConnections = Counter(label: "parley_agent_connections_total")
    let drops: [DropReason: Counter]
    let workerDrops: [WorkerDropReason: Counter]

    init() {
        var drops: [DropReason: Counter] = [:]
        for reason in DropReason.allCases {
            drops[reason] = Counter(label: "parley_drops_total", dimensions: [("reason", reason.rawValue)])
        }
        self.drops = drops
        var workerDrops: [WorkerDropReason: Counter] = [:]
        for reason in WorkerDropReason.allCases {
            workerDrops[reason] = Counter(label: "parley_drops_total", dimensions: [("reason", reason.rawValue)])
        }
        self.workerDrops = workerDrops
    }

    func sessionClosed(_ reason: CloseReason) {
        Counter(label: "parley_sessions_closed_total", dimensions: [("reason", reason.label)]).increment()
    }

    func agentFailure(_ reason: String) {
        Counter(label: "parley_agent_failures_total", dimensions: [("reason", reason)]).increment()
    }

    func signalingRequest(status: Int) {
        Counter(label: "parley_signaling_requests_total", dimensions: [("status", String(status))]).increment()
    }

    /// A request the signaling API refused, by the error's code (`invalid_api_key`, `rate_limit_exceeded`, …).
    func signalingRefused(code: String) {
        Counter(label: "parley_signaling_refusals_total", dimensions: [("code", code)]).increment()
    }
}

/// Drops decided by a worker before any session sees the datagram.
enum WorkerDropReason: String, CaseIterable, Sendable {
    case unknownSession = "unknown_session"
    case badToken = "bad_token"
    case malformedTunnel = "malformed_tunnel"
    case untrustedTunnel = "untrusted_tunnel"
    case noRoute = "no_route"
}
