import Dispatch
import Foundation

/// The signals a serving process acts on, as a stream: SIGTERM and SIGINT (the first drains, the
/// second ends at once), SIGHUP (reload keys). Their default actions are turned off while it lives.
/// `@unchecked`: the sources are set once in `init` and only cancelled in `deinit`.
final class ProcessSignals: @unchecked Sendable {
    let stream: AsyncStream<Int32>
    private let sources: [any DispatchSourceSignal]

    init(_ signals: [Int32] = [SIGTERM, SIGINT, SIGHUP]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }

    deinit { for source in sources { source.cancel() } }
}
