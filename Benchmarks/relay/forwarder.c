// The reference point for the relay benchmark: a minimal C UDP forwarder with recvmmsg/sendmmsg,
// doing the same job as the relay's packet path and nothing else. Client datagrams arriving on the
// public port go to one backend with an 8-byte prefix (client IPv4 address and port); datagrams from
// the backend carry that prefix back and go to that client. No tokens, no route table, no checks:
// the practical ceiling of this machine for moving datagrams through one core.
//
// Usage: forwarder PUBLIC_PORT BACKEND_IP BACKEND_PORT
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define SIZE 2048

static int bound_socket(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror("bind"); exit(1); }
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: forwarder PUBLIC_PORT BACKEND_IP BACKEND_PORT\n"); return 2; }
    int public_fd = bound_socket(atoi(argv[1])), internal_fd = bound_socket(0);
    struct sockaddr_in backend = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &backend.sin_addr);

    static unsigned char in[BATCH][SIZE], out[BATCH][SIZE + 8];
    static struct sockaddr_in from[BATCH], to[BATCH];
    struct mmsghdr rx[BATCH], tx[BATCH];
    struct iovec rx_iov[BATCH], tx_iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        rx_iov[i] = (struct iovec){in[i], SIZE};
        rx[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &rx_iov[i], .msg_iovlen = 1};
        tx[i].msg_hdr = (struct msghdr){.msg_name = &to[i], .msg_namelen = sizeof to[i], .msg_iov = &tx_iov[i], .msg_iovlen = 1};
    }
    struct pollfd fds[2] = {{public_fd, POLLIN, 0}, {internal_fd, POLLIN, 0}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) continue;
        for (int side = 0; side < 2; side++) {
            if (!(fds[side].revents & POLLIN)) continue;
            for (int i = 0; i < BATCH; i++) rx[i].msg_hdr.msg_namelen = sizeof from[i];
            int count = recvmmsg(fds[side].fd, rx, BATCH, MSG_DONTWAIT, NULL);
            if (count <= 0) continue;
            int sending = 0;
            for (int i = 0; i < count; i++) {
                unsigned length = rx[i].msg_len;
                if (side == 0) {  // client → backend: prefix the client's address
                    memcpy(out[i], &from[i].sin_addr.s_addr, 4);
                    memcpy(out[i] + 4, &from[i].sin_port, 2);
                    memset(out[i] + 6, 0, 2);
                    memcpy(out[i] + 8, in[i], length);
                    tx_iov[sending] = (struct iovec){out[i], length + 8};
                    to[sending] = backend;
                } else {  // backend → client: the prefix names the client
                    if (length < 8) continue;
                    to[sending] = (struct sockaddr_in){.sin_family = AF_INET};
                    memcpy(&to[sending].sin_addr.s_addr, in[i], 4);
                    memcpy(&to[sending].sin_port, in[i] + 4, 2);
                    tx_iov[sending] = (struct iovec){in[i] + 8, length - 8};
                }
                tx[sending].msg_hdr.msg_namelen = sizeof to[sending];
                sending++;
            }
            int sent = 0;
            while (sent < sending) {
                int result = sendmmsg(side == 0 ? internal_fd : public_fd, tx + sent, sending - sent, 0);
                if (result <= 0) break;
                sent += result;
            }
        }
    }
}
