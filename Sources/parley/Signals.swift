import Dispatch
import Foundation
import Synchronization

/// The signals a serving process acts on, each delivered as it arrives: SIGTERM and SIGINT numbered,
/// so a process can tell the first (stop gracefully: drain) from the second (stop now), and SIGHUP
/// (reload key files). Create it early: from then on these signals no longer kill the process by
/// default, they are only reported here.
///
///     let signals = ProcessSignals()
///     for await arrival in signals.arrivals {
///         if arrival.isReload { reloadKeys(); continue }
///         if arrival.ordinal == 1 { startDraining() } else { break }   // the second: exit at once
///     }
///
/// `arrivals` has one consumer; an iteration ends when its task is cancelled.
final class ProcessSignals: Sendable {
    struct Arrival: Equatable, Sendable {
        var signal: Int32
        /// For SIGTERM and SIGINT: 1 for the first termination signal of the process, 2 for the
        /// second, and so on. 0 for SIGHUP, which does not count toward them.
        var ordinal: Int

        var isReload: Bool { signal == SIGHUP }
        var name: String {
            switch signal {
            case SIGTERM: "SIGTERM"
            case SIGINT: "SIGINT"
            case SIGHUP: "SIGHUP"
            default: "signal \(signal)"
            }
        }
    }

    /// What the signal handlers share (not the object itself, so it can go away).
    private final class Arrivals: Sendable {
        let terminations = Mutex<Int>(0)
        let continuation: AsyncStream<Arrival>.Continuation

        init(_ continuation: AsyncStream<Arrival>.Continuation) { self.continuation = continuation }

        /// `times` signals of one kind arrived (dispatch coalesces signals that come together).
        func record(_ signal: Int32, times: Int) {
            guard signal != SIGHUP else {
                continuation.yield(Arrival(signal: signal, ordinal: 0))  // one reload covers them all
                return
            }
            let first = terminations.withLock { count in
                defer { count += times }
                return count + 1
            }
            for ordinal in first..<(first + times) { continuation.yield(Arrival(signal: signal, ordinal: ordinal)) }
        }
    }

    let arrivals: AsyncStream<Arrival>
    private let shared: Arrivals
    /// Kept for as long as the signals are to be reported.
    private nonisolated(unsafe) let sources: [any DispatchSourceSignal]

    init(_ signals: [Int32] = [SIGTERM, SIGINT, SIGHUP]) {
        let (stream, continuation) = AsyncStream.makeStream(of: Arrival.self, bufferingPolicy: .unbounded)
        arrivals = stream
        let shared = Arrivals(continuation)
        self.shared = shared
        sources = signals.map { signalNumber in
            // Ignored by the process, so only the dispatch source sees it.
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                shared.record(signalNumber, times: max(1, Int(clamping: source.data)))
            }
            source.resume()
            return source
        }
    }

    /// How many termination signals have arrived so far.
    var terminationCount: Int { shared.terminations.withLock { $0 } }

    deinit {
        for source in sources { source.cancel() }
        shared.continuation.finish()
    }
}
