import NIOCore
import NIOPosix

/// Just enough HTTP/1.1 to POST an SDP offer and read the answer: one request per connection,
/// `Connection: close`, the response read to the end. Keeps the load generator free of an HTTP
/// client library; it is not a general HTTP client.
public enum SignalingClient {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: String

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        case badURL(String)
        case badResponse

        public var description: String {
            switch self {
            case .badURL(let url): "not an http://host:port/path URL: \(url)"
            case .badResponse: "the server's response is not HTTP/1.1"
            }
        }
    }

    /// Splits `http://host:port/path`.
    public static func parse(url: String) throws -> (host: String, port: Int, path: String) {
        guard url.hasPrefix("http://") else { throw Failure.badURL(url) }
        let rest = url.dropFirst(7)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let path = slash == rest.endIndex ? "/" : String(rest[slash...])
        let parts = authority.split(separator: ":")
        guard let host = parts.first, parts.count <= 2 else { throw Failure.badURL(url) }
        let port = parts.count == 2 ? Int(parts[1]) : 80
        guard let port else { throw Failure.badURL(url) }
        return (String(host), port, path)
    }

    public static func send(method: String, url: String, contentType: String? = nil, body: String = "",
                            bearer: String? = nil, on eventLoop: EventLoop) async throws -> Response {
        let (host, port, path) = try parse(url: url)
        let collector = ResponseCollector(promise: eventLoop.makePromise())
        let channel = try await ClientBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: host, port: port).get()
        var request = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n"
        if let contentType { request += "Content-Type: \(contentType)\r\n" }
        if let bearer { request += "Authorization: Bearer \(bearer)\r\n" }
        request += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        try await channel.writeAndFlush(ByteBuffer(string: request)).get()
        let raw = try await collector.promise.futureResult.get()
        guard let headerEnd = raw.firstRange(of: "\r\n\r\n") else { throw Failure.badResponse }
        let lines = raw[..<headerEnd.lowerBound].split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw Failure.badResponse
        }
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...].drop { $0 == " " }))
        }
        return Response(status: status, headers: headers, body: String(raw[headerEnd.upperBound...]))
    }

    private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<String>
        private var received = ""

        init(promise: EventLoopPromise<String>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            received += buffer.readString(length: buffer.readableBytes) ?? ""
        }

        func channelInactive(context: ChannelHandlerContext) { promise.succeed(received) }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
