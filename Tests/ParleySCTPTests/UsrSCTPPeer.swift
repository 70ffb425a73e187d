import CUsrSCTP
import ParleyWire
@testable import ParleySCTP

#if canImport(Glibc)
import Glibc
#endif

/// usrsctp (the SCTP stack Chromium used for years) as an independent peer, in this process over
/// AF_CONN: its packets come out of a callback, ours go in with `usrsctp_conninput`, its timers
/// run when told. usrsctp is process-wide, so every test using it holds `UsrSCTP.lock`.
enum UsrSCTP {
    nonisolated(unsafe) static var outputs: [UnsafeMutableRawPointer: [[UInt8]]] = [:]
    static let lock = PThreadLock()
    static let initialized: Bool = {
        usrsctp_init_nothreads(0, { address, buffer, length, _, _ in
            guard let address, let buffer else { return 0 }
            UsrSCTP.outputs[address, default: []].append(Array(UnsafeRawBufferPointer(start: buffer, count: length)))
            return 0
        }, nil)
        // As browsers configure it: no ECN, no ASCONF, no AUTH.
        usrsctp_sysctl_set_sctp_ecn_enable(0)
        usrsctp_sysctl_set_sctp_asconf_enable(0)
        usrsctp_sysctl_set_sctp_auth_enable(0)
        // Short retransmission timers, as WebRTC stacks use, so lossy tests converge quickly.
        usrsctp_sysctl_set_sctp_rto_min_default(100)
        usrsctp_sysctl_set_sctp_rto_initial_default(300)
        usrsctp_sysctl_set_sctp_rto_max_default(1000)
        usrsctp_sysctl_set_sctp_init_rto_max_default(1000)
        // Diagnostic text in ABORTs (off by default, which leaves them without a cause).
        usrsctp_sysctl_set_sctp_diag_info_code(13)
        return true
    }()
}

final class PThreadLock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

/// One usrsctp endpoint (one-to-one socket) wired to one ParleySCTP association.
final class UsrSCTPPeer {
    let address: UnsafeMutableRawPointer
    let socket: OpaquePointer
    private var partial: [UInt8] = []
    private(set) var received: [(stream: UInt16, ppid: UInt32, payload: [UInt8], unordered: Bool)] = []

    /// A usrsctp socket bound to port 5000 on a fresh AF_CONN address.
    init() throws {
        _ = UsrSCTP.initialized
        address = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        usrsctp_register_address(address)
        guard let socket = usrsctp_socket(AF_CONN, Int32(SOCK_STREAM.rawValue), Int32(IPPROTO_SCTP), nil, nil, 0, nil) else {
            throw PeerError.socket
        }
        self.socket = socket
        _ = usrsctp_set_non_blocking(socket, 1)
        var on: Int32 = 1
        _ = usrsctp_setsockopt(socket, Int32(IPPROTO_SCTP), SCTP_RECVRCVINFO, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = usrsctp_setsockopt(socket, Int32(IPPROTO_SCTP), SCTP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        var buffer: Int32 = 4 << 20
        _ = usrsctp_setsockopt(socket, SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
        _ = usrsctp_setsockopt(socket, SOL_SOCKET, SO_RCVBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
        // As many streams as browsers offer (usrsctp's default is 10).
        var streams = sctp_initmsg()
        streams.sinit_num_ostreams = 1024
        streams.sinit_max_instreams = 1024
        _ = usrsctp_setsockopt(socket, Int32(IPPROTO_SCTP), SCTP_INITMSG, &streams, socklen_t(MemoryLayout<sctp_initmsg>.size))
        var reset = sctp_assoc_value(assoc_id: 0, assoc_value: UInt32(SCTP_ENABLE_RESET_STREAM_REQ))
        _ = usrsctp_setsockopt(socket, Int32(IPPROTO_SCTP), SCTP_ENABLE_STREAM_RESET, &reset,
                               socklen_t(MemoryLayout<sctp_assoc_value>.size))
        var local = connAddress()
        _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            usrsctp_bind(socket, UnsafeMutablePointer(mutating: $0), socklen_t(MemoryLayout<sockaddr_conn>.size)) } }
    }

    deinit {
        usrsctp_close(socket)
        usrsctp_deregister_address(address)
        UsrSCTP.outputs[address] = nil
        // The address is never freed: usrsctp may keep state for it a while, and a reused pointer
        // would meet that state in the next test.
    }

    private func connAddress() -> sockaddr_conn {
        var value = sockaddr_conn()
        value.sconn_family = UInt16(AF_CONN)
        value.sconn_port = UInt16(5000).bigEndian
        value.sconn_addr = address
        return value
    }

    func connect() {
        var remote = connAddress()
        _ = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            usrsctp_connect(socket, UnsafeMutablePointer(mutating: $0), socklen_t(MemoryLayout<sockaddr_conn>.size)) } }
    }

    /// Packets usrsctp sent since the last call.
    func takeOutput() -> [[UInt8]] {
        defer { UsrSCTP.outputs[address] = [] }
        return UsrSCTP.outputs[address] ?? []
    }

    func input(_ packet: [UInt8]) {
        packet.withUnsafeBytes { usrsctp_conninput(address, $0.baseAddress, $0.count, 0) }
    }

    @discardableResult
    func send(_ payload: [UInt8], stream: UInt16, ppid: UInt32, unordered: Bool = false) -> Int {
        var info = sctp_sndinfo(snd_sid: stream, snd_flags: unordered ? UInt16(SCTP_UNORDERED) : 0, snd_ppid: ppid.bigEndian,
                                snd_context: 0, snd_assoc_id: 0)
        return payload.withUnsafeBytes { bytes in
            usrsctp_sendv(socket, bytes.baseAddress, bytes.count, nil, 0, &info, socklen_t(MemoryLayout<sctp_sndinfo>.size),
                          UInt32(SCTP_SENDV_SNDINFO), 0)
        }
    }

    /// Reads every complete message waiting.
    func receiveAll() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var info = sctp_rcvinfo()
            var infoLength = socklen_t(MemoryLayout<sctp_rcvinfo>.size)
            var infoType: UInt32 = 0
            var flags: Int32 = 0
            var from = sockaddr_conn()
            var fromLength = socklen_t(MemoryLayout<sockaddr_conn>.size)
            let count = withUnsafeMutablePointer(to: &from) { fromPointer in
                fromPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                    usrsctp_recvv(socket, &buffer, buffer.count, address, &fromLength, &info, &infoLength, &infoType, &flags)
                }
            }
            guard count > 0 else { return }
            if flags & Int32(MSG_NOTIFICATION) != 0 { continue }
            partial += buffer[0..<count]
            if flags & Int32(MSG_EOR) != 0 {
                received.append((info.rcv_sid, UInt32(bigEndian: info.rcv_ppid), partial, info.rcv_flags & UInt16(SCTP_UNORDERED) != 0))
                partial = []
            }
        }
    }

    func resetOutgoing(streams: [UInt16]) {
        let size = MemoryLayout<sctp_reset_streams>.size + streams.count * 2
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { raw.deallocate() }
        let request = raw.bindMemory(to: sctp_reset_streams.self, capacity: 1)
        request.pointee.srs_assoc_id = 0
        request.pointee.srs_flags = UInt16(SCTP_STREAM_RESET_OUTGOING)
        request.pointee.srs_number_streams = UInt16(streams.count)
        let list = (raw + MemoryLayout<sctp_reset_streams>.size).bindMemory(to: UInt16.self, capacity: streams.count)
        for (index, stream) in streams.enumerated() { list[index] = stream }
        _ = usrsctp_setsockopt(socket, Int32(IPPROTO_SCTP), SCTP_RESET_STREAMS, raw, socklen_t(size))
    }

    enum PeerError: Error { case socket }
}
