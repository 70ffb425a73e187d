// Load for the relay benchmark. Two roles:
//
//   udpbench backend PORT tunnel|prefix
//       Echo server behind the relay. `tunnel`: Parley's tunnel header (answers a client's STUN Binding
//       request with a Binding request of its own, as a transceiver validates a path; echoes anything
//       else, marked "to client"). `prefix`: the C forwarder's 8-byte prefix, echoed unchanged.
//   udpbench client RELAY_PORT FLOWS RATE SECONDS [UFRAG]
//       FLOWS client sockets. With UFRAG, each flow first sends an ICE check with that token as
//       its USERNAME and waits for the answer (the relay commits the route). Then it sends
//       160-byte datagrams: RATE packets/s in total, or with RATE 0 as fast as a window of
//       outstanding packets allows. Prints one JSON line: sent, received, packets/s, RTT p50/p99.
//   udpbench tcpclient RELAY_TCP_PORT FLOWS RATE SECONDS UFRAG
//       The same over ICE-TCP: FLOWS TCP connections (16 per source address, the relay's limit:
//       flow f binds 127.0.x.y for f / 16), each datagram an RFC 4571 frame.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define SIZE 2048
#define PAYLOAD 160

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static int udp_socket(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror("bind"); exit(1); }
    return fd;
}

static int backend(int port, int tunnel) {
    int fd = udp_socket(port);
    static unsigned char buffers[BATCH][SIZE];
    static struct sockaddr_in from[BATCH];
    struct mmsghdr messages[BATCH];
    struct iovec iov[BATCH];
    struct pollfd pfd = {fd, POLLIN, 0};
    for (;;) {
        poll(&pfd, 1, -1);
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){buffers[i], SIZE};
            messages[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int count = recvmmsg(fd, messages, BATCH, MSG_DONTWAIT, NULL);
        if (count <= 0) continue;
        for (int i = 0; i < count; i++) {
            unsigned char *d = buffers[i];
            unsigned length = messages[i].msg_len;
            if (tunnel && length >= 10 && d[0] == 0xD1) {
                unsigned header = (d[1] & 2) ? 22 : 10;
                d[1] |= 4;  // toward the client
                unsigned char *p = d + header;
                if (length >= header + 20 && p[0] == 0x00 && p[1] == 0x01) {
                    // A client's check: answered with a check of the backend's own, as a transceiver
                    // validates a path before anything else (the relay commits the route when the
                    // client answers it: docs/relay.md). No attributes; the transaction id is the
                    // client's with its last byte flipped.
                    p[2] = 0; p[3] = 0;
                    p[19] ^= 0xFF;
                    length = header + 20;
                }
            }
            iov[i].iov_len = length;
        }
        int sent = 0;
        while (sent < count) {
            int result = sendmmsg(fd, messages + sent, count - sent, 0);
            if (result <= 0) break;
            sent += result;
        }
    }
    return 0;
}

static int compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int client(int relay_port, int flows, long rate, double seconds, const char *ufrag) {
    struct sockaddr_in relay = {.sin_family = AF_INET, .sin_port = htons(relay_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int *fds = calloc(flows, sizeof(int));
    int epoll = epoll_create1(0);
    for (int f = 0; f < flows; f++) {
        fds[f] = udp_socket(0);
        connect(fds[f], (struct sockaddr *)&relay, sizeof relay);
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = f};
        epoll_ctl(epoll, EPOLL_CTL_ADD, fds[f], &event);
    }
    unsigned char buffer[SIZE];
    if (ufrag) {  // one ICE check per flow; the relay commits the route on the backend's answer
        for (int f = 0; f < flows; f++) {
            char username[300];
            // UFRAG may be a comma-separated list: flow f uses token f mod their number (a session
            // commits at most 8 routes at the relay, so many flows need many sessions' tokens).
            const char *token = ufrag;
            int count = 1;
            for (const char *c = ufrag; *c; c++) count += *c == ',';
            for (int skip = f % count; skip > 0; skip--) token = strchr(token, ',') + 1;
            int tlen = (int)(strchr(token, ',') ? (size_t)(strchr(token, ',') - token) : strlen(token));
            int ulen = snprintf(username, sizeof username, "%.*s:bench", tlen, token);
            int padded = (ulen + 3) & ~3;
            unsigned char check[400] = {0x00, 0x01, 0, (unsigned char)(4 + padded), 0x21, 0x12, 0xa4, 0x42};
            for (int i = 8; i < 20; i++) check[i] = (unsigned char)rand();
            check[20] = 0x00; check[21] = 0x06; check[22] = 0; check[23] = (unsigned char)ulen;
            memcpy(check + 24, username, ulen);
            int answered = 0;
            for (int attempt = 0; attempt < 50 && !answered; attempt++) {
                send(fds[f], check, 24 + padded, 0);
                struct pollfd pfd = {fds[f], POLLIN, 0};
                if (poll(&pfd, 1, 100) > 0 && recv(fds[f], buffer, sizeof buffer, 0) >= 20 && buffer[0] == 0x00 && buffer[1] == 0x01) {
                    // The backend's check: the client's success answer commits the route at the relay.
                    unsigned char success[20] = {0x01, 0x01, 0, 0};
                    memcpy(success + 4, buffer + 4, 16);
                    send(fds[f], success, sizeof success, 0);
                    answered = 1;
                }
            }
            if (!answered) { fprintf(stderr, "flow %d: no answer to its check\n", f); return 1; }
        }
    }
    size_t capacity = (size_t)((rate ? rate : 2000000) * seconds) + 1024;
    uint32_t *rtts = malloc(capacity * sizeof(uint32_t));
    size_t samples = 0;
    uint64_t sent = 0, received = 0;
    unsigned char payload[PAYLOAD];
    memset(payload, 0x5A, sizeof payload);
    payload[0] = 0x80;  // looks like RTP: forwarded by lookup
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), next_send = start;
    const uint64_t window = 64 * (uint64_t)flows < 4096 ? 64 * (uint64_t)flows : 4096;
    int flow = 0;
    struct epoll_event events[64];
    static struct mmsghdr messages[BATCH];
    static struct iovec iov[BATCH];
    static unsigned char rx[BATCH][SIZE];
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){rx[i], SIZE};
        messages[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
    }
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end) break;
        // Send what is due (fixed rate) or what the window allows (maximum rate), round-robin over flows.
        int budget = 0;
        if (rate) {
            while (next_send <= now && budget < 256) { budget++; next_send += 1000000000ull / rate; }
        } else if (sent - received < window) {
            budget = (int)(window - (sent - received));
            if (budget > 256) budget = 256;
        }
        for (int i = 0; i < budget; i++) {
            memcpy(payload + 8, &now, 8);
            if (send(fds[flow], payload, sizeof payload, 0) > 0) sent++;
            flow = (flow + 1) % flows;
        }
        int ready = epoll_wait(epoll, events, 64, rate ? 0 : 1);
        for (int e = 0; e < ready; e++) {
            int count = recvmmsg(fds[events[e].data.u32], messages, BATCH, MSG_DONTWAIT, NULL);
            uint64_t at = now_ns();
            for (int i = 0; i < count; i++) {
                if (messages[i].msg_len != PAYLOAD) continue;
                uint64_t stamp;
                memcpy(&stamp, rx[i] + 8, 8);
                received++;
                if (samples < capacity) rtts[samples++] = (uint32_t)((at - stamp) / 1000);
            }
        }
    }
    // Late answers within 200 ms still count.
    uint64_t drain_end = now_ns() + 200000000ull;
    while (now_ns() < drain_end) {
        int ready = epoll_wait(epoll, events, 64, 10);
        for (int e = 0; e < ready; e++) {
            int count = recvmmsg(fds[events[e].data.u32], messages, BATCH, MSG_DONTWAIT, NULL);
            for (int i = 0; i < count; i++) if (messages[i].msg_len == PAYLOAD) received++;
        }
    }
    qsort(rtts, samples, sizeof(uint32_t), compare);
    double elapsed = seconds;
    printf("{\"sent\": %llu, \"received\": %llu, \"received_per_second\": %.0f, \"rtt_us_p50\": %u, \"rtt_us_p99\": %u}\n",
           (unsigned long long)sent, (unsigned long long)received, received / elapsed,
           samples ? rtts[samples / 2] : 0, samples ? rtts[(size_t)(samples * 0.99)] : 0);
    return 0;
}

static void build_check(const char *ufrag, int f, unsigned char *check, int *length) {
    const char *token = ufrag;
    int count = 1;
    for (const char *c = ufrag; *c; c++) count += *c == ',';
    for (int skip = f % count; skip > 0; skip--) token = strchr(token, ',') + 1;
    int tlen = (int)(strchr(token, ',') ? (size_t)(strchr(token, ',') - token) : strlen(token));
    char username[300];
    int ulen = snprintf(username, sizeof username, "%.*s:bench", tlen, token);
    int padded = (ulen + 3) & ~3;
    memset(check, 0, 24 + padded);
    unsigned char head[8] = {0x00, 0x01, 0, (unsigned char)(4 + padded), 0x21, 0x12, 0xa4, 0x42};
    memcpy(check, head, 8);
    for (int i = 8; i < 20; i++) check[i] = (unsigned char)rand();
    check[20] = 0x00; check[21] = 0x06; check[22] = 0; check[23] = (unsigned char)ulen;
    memcpy(check + 24, username, ulen);
    *length = 24 + padded;
}

static int send_frame(int fd, const unsigned char *bytes, int length) {
    unsigned char frame[SIZE + 2];
    frame[0] = (unsigned char)(length >> 8);
    frame[1] = (unsigned char)length;
    memcpy(frame + 2, bytes, length);
    return send(fd, frame, length + 2, MSG_NOSIGNAL) == length + 2;
}

struct stream { unsigned char buffer[4 * SIZE]; int used; };

static int tcp_client(int relay_port, int flows, long rate, double seconds, const char *ufrag) {
    int *fds = calloc(flows, sizeof(int));
    struct stream *streams = calloc(flows, sizeof(struct stream));
    int epoll = epoll_create1(0);
    unsigned char buffer[SIZE];
    for (int f = 0; f < flows; f++) {
        fds[f] = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fds[f], IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
        int source = 2 + f / 16;
        struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7F000000u | (unsigned)(source >> 8 & 0xFF) << 8 | (unsigned)(source & 0xFF))};
        if (bind(fds[f], (struct sockaddr *)&local, sizeof local) != 0) { perror("bind"); return 1; }
        struct sockaddr_in relay = {.sin_family = AF_INET, .sin_port = htons(relay_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(fds[f], (struct sockaddr *)&relay, sizeof relay) != 0) { perror("connect"); return 1; }
        unsigned char check[400];
        int length;
        build_check(ufrag, f, check, &length);
        send_frame(fds[f], check, length);
        // The backend's check comes back as a frame: answer it, which commits the route.
        unsigned char head[2];
        if (recv(fds[f], head, 2, MSG_WAITALL) != 2) { fprintf(stderr, "flow %d: closed\n", f); return 1; }
        int frame = head[0] << 8 | head[1];
        if (frame > SIZE || recv(fds[f], buffer, frame, MSG_WAITALL) != frame || frame < 20) { fprintf(stderr, "flow %d: bad answer\n", f); return 1; }
        unsigned char success[20] = {0x01, 0x01, 0, 0};
        memcpy(success + 4, buffer + 4, 16);
        send_frame(fds[f], success, sizeof success);
        fcntl(fds[f], F_SETFL, fcntl(fds[f], F_GETFL) | O_NONBLOCK);
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = f};
        epoll_ctl(epoll, EPOLL_CTL_ADD, fds[f], &event);
    }
    size_t capacity = (size_t)((rate ? rate : 2000000) * seconds) + 1024;
    uint32_t *rtts = malloc(capacity * sizeof(uint32_t));
    size_t samples = 0;
    uint64_t sent = 0, received = 0;
    unsigned char payload[PAYLOAD];
    memset(payload, 0x5A, sizeof payload);
    payload[0] = 0x80;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), next_send = start;
    const uint64_t window = 64 * (uint64_t)flows < 4096 ? 64 * (uint64_t)flows : 4096;
    int flow = 0;
    struct epoll_event events[64];
    uint64_t drain_end = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end) {
            if (!drain_end) drain_end = now + 200000000ull;
            if (now >= drain_end) break;
        } else {
            int budget = 0;
            if (rate) {
                while (next_send <= now && budget < 256) { budget++; next_send += 1000000000ull / rate; }
            } else if (sent - received < window) {
                budget = (int)(window - (sent - received));
                if (budget > 256) budget = 256;
            }
            for (int i = 0; i < budget; i++) {
                memcpy(payload + 8, &now, 8);
                if (send_frame(fds[flow], payload, sizeof payload)) sent++;
                flow = (flow + 1) % flows;
            }
        }
        int ready = epoll_wait(epoll, events, 64, rate ? 0 : 1);
        uint64_t at = now_ns();
        for (int e = 0; e < ready; e++) {
            int f = (int)events[e].data.u32;
            struct stream *stream = &streams[f];
            ssize_t count = recv(fds[f], stream->buffer + stream->used, sizeof stream->buffer - stream->used, 0);
            if (count <= 0) continue;
            stream->used += (int)count;
            int offset = 0;
            while (stream->used - offset >= 2) {
                int frame = stream->buffer[offset] << 8 | stream->buffer[offset + 1];
                if (stream->used - offset < 2 + frame) break;
                if (frame == PAYLOAD) {
                    uint64_t stamp;
                    memcpy(&stamp, stream->buffer + offset + 2 + 8, 8);
                    received++;
                    if (samples < capacity && at < end) rtts[samples++] = (uint32_t)((at - stamp) / 1000);
                }
                offset += 2 + frame;
            }
            memmove(stream->buffer, stream->buffer + offset, stream->used - offset);
            stream->used -= offset;
        }
    }
    qsort(rtts, samples, sizeof(uint32_t), compare);
    printf("{\"sent\": %llu, \"received\": %llu, \"received_per_second\": %.0f, \"rtt_us_p50\": %u, \"rtt_us_p99\": %u}\n",
           (unsigned long long)sent, (unsigned long long)received, received / seconds,
           samples ? rtts[samples / 2] : 0, samples ? rtts[(size_t)(samples * 0.99)] : 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "backend") == 0) return backend(atoi(argv[2]), strcmp(argv[3], "tunnel") == 0);
    if (argc >= 6 && strcmp(argv[1], "client") == 0)
        return client(atoi(argv[2]), atoi(argv[3]), atol(argv[4]), atof(argv[5]), argc > 6 ? argv[6] : NULL);
    if (argc >= 7 && strcmp(argv[1], "tcpclient") == 0)
        return tcp_client(atoi(argv[2]), atoi(argv[3]), atol(argv[4]), atof(argv[5]), argv[6]);
    fprintf(stderr, "usage: udpbench backend PORT tunnel|prefix | client RELAY_PORT FLOWS RATE SECONDS [UFRAG] | tcpclient RELAY_TCP_PORT FLOWS RATE SECONDS UFRAG\n");
    return 2;
}
