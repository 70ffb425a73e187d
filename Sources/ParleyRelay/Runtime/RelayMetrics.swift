import Metrics
import ParleyRouting

/// The relay's metrics (swift-metrics → Prometheus). Workers count per packet locally and report
/// once a second, so the packet path touches no shared atomics.
final class RelayMetrics: Sendable {
    let toTransceiver = Counter(label: "parley_relay_packets_total", dimensions: [("direction", "to_transceiver")])
    let toClient = Counter(label: "parley_relay_packets_total", dimensions: [("direction", "to_client")])
    let storeLookups = Counter(label: "parley_relay_store_lookups_total")
    let storeHits = Counter(label: "parley_relay_store_lookups_found_total")
    let storeMisses = Counter(label: "parley_relay_store_lookups_missed_total")
    let drops: [RelayDropReason: Counter]

    init() {
        var drops: [RelayDropReason: Counter] = [:]
        for reason in RelayDropReason.allCases {
            drops[reason] = Counter(label: "parley_relay_drops_total", dimensions: [("reason", reason.rawValue)])
        }
        self.drops = drops
    }

    func report(drops counts: [RelayDropReason: Int], toTransceiver: Int, toClient: Int, worker: String, routes: Int, pending: Int) {
        for (reason, count) in counts where count > 0 { drops[reason]?.increment(by: count) }
        if toTransceiver > 0 { self.toTransceiver.increment(by: toTransceiver) }
        if toClient > 0 { self.toClient.increment(by: toClient) }
        Gauge(label: "parley_relay_routes", dimensions: [("worker", worker), ("state", "committed")]).record(routes)
        Gauge(label: "parley_relay_routes", dimensions: [("worker", worker), ("state", "pending")]).record(pending)
    }
}
