#define _GNU_SOURCE
#include "CParleySockets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct parley_batch {
    struct mmsghdr messages[PARLEY_BATCH];
    struct iovec iovecs[PARLEY_BATCH];
    struct sockaddr_in6 addresses[PARLEY_BATCH];
};

parley_batch *parley_batch_create(void) { return calloc(1, sizeof(parley_batch)); }

void parley_batch_destroy(parley_batch *batch) { free(batch); }

int parley_batch_receive(int fd, parley_batch *batch, uint8_t *buffers, unsigned slot) {
    for (unsigned i = 0; i < PARLEY_BATCH; i++) {
        batch->iovecs[i].iov_base = buffers + (size_t)i * slot;
        batch->iovecs[i].iov_len = slot;
        batch->messages[i].msg_hdr = (struct msghdr){
            .msg_name = &batch->addresses[i], .msg_namelen = sizeof batch->addresses[i],
            .msg_iov = &batch->iovecs[i], .msg_iovlen = 1};
    }
    int count = recvmmsg(fd, batch->messages, PARLEY_BATCH, MSG_DONTWAIT, NULL);
    if (count < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    return count;
}

unsigned parley_batch_length(const parley_batch *batch, unsigned index) { return batch->messages[index].msg_len; }

int parley_batch_source(const parley_batch *batch, unsigned index, uint8_t address[16], uint16_t *port) {
    const struct sockaddr_in6 *storage = &batch->addresses[index];
    if (storage->sin6_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)storage;
        memcpy(address, &v4->sin_addr, 4);
        *port = ntohs(v4->sin_port);
        return AF_INET;
    }
    if (storage->sin6_family == AF_INET6) {
        memcpy(address, &storage->sin6_addr, 16);
        *port = ntohs(storage->sin6_port);
        return AF_INET6;
    }
    return -1;
}

void parley_batch_set(parley_batch *batch, unsigned index, const void *bytes, unsigned length,
                      const uint8_t *address, unsigned address_length, uint16_t port) {
    batch->iovecs[index].iov_base = (void *)bytes;
    batch->iovecs[index].iov_len = length;
    socklen_t name_length;
    if (address_length == 4) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&batch->addresses[index];
        memset(v4, 0, sizeof *v4);
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        memcpy(&v4->sin_addr, address, 4);
        name_length = sizeof *v4;
    } else {
        struct sockaddr_in6 *v6 = &batch->addresses[index];
        memset(v6, 0, sizeof *v6);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        memcpy(&v6->sin6_addr, address, 16);
        name_length = sizeof *v6;
    }
    batch->messages[index].msg_hdr = (struct msghdr){
        .msg_name = &batch->addresses[index], .msg_namelen = name_length,
        .msg_iov = &batch->iovecs[index], .msg_iovlen = 1};
}

int parley_batch_send(int fd, parley_batch *batch, unsigned count) {
    unsigned sent = 0;
    while (sent < count) {
        int result = sendmmsg(fd, batch->messages + sent, count - sent, 0);
        if (result < 0) {
            if (errno == EINTR) continue;
            // One refused datagram (an unreachable destination, a full buffer) must not stall the rest.
            sent++;
            continue;
        }
        if (result == 0) break;
        sent += (unsigned)result;
    }
    return (int)sent;
}

/// Parses an IPv4 or IPv6 literal into `address`; its length, or 0 when it is neither.
static socklen_t parse_host(const char *host, int port, struct sockaddr_in6 *address) {
    memset(address, 0, sizeof *address);
    struct sockaddr_in *v4 = (struct sockaddr_in *)address;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return sizeof *v4;
    }
    if (inet_pton(AF_INET6, host, &address->sin6_addr) == 1) {
        address->sin6_family = AF_INET6;
        address->sin6_port = htons((uint16_t)port);
        return sizeof *address;
    }
    return 0;
}

/// A UDP socket of the address's family. An IPv6 one takes IPv6 only: IPv4 has its own socket, so
/// no client arrives as a v4-mapped address and each family's answers leave from its own address.
static int family_socket(const struct sockaddr_in6 *address, int flags) {
    int fd = socket(address->sin6_family, SOCK_DGRAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0) return -1;
    if (address->sin6_family == AF_INET6) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
            // Without it the socket would take IPv4 too, as v4-mapped addresses: refuse instead.
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
    }
    return fd;
}

static int port_in_use(const char *host, int port, int type) {
    // No SO_REUSEPORT: the bind fails if anyone holds the port, however they bound it. (SO_REUSEADDR
    // for TCP only, so a listener's connections lingering in TIME_WAIT do not count as holding it.)
    struct sockaddr_in6 address;
    socklen_t length = parse_host(host, port, &address);
    if (length == 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(address.sin6_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    // IPv6 only, as the sockets the relay then binds: an IPv4 holder of the port is not in the way.
    if (address.sin6_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int result = bind(fd, (struct sockaddr *)&address, length) == 0 ? 0 : (errno == EADDRINUSE ? 1 : -1);
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

int parley_udp_port_in_use(const char *host, int port) { return port_in_use(host, port, SOCK_DGRAM); }

int parley_tcp_port_in_use(const char *host, int port) { return port_in_use(host, port, SOCK_STREAM); }

int parley_udp_socket(const char *host, int port, int reuse_port, int buffer_bytes, int *bound_port) {
    struct sockaddr_in6 address;
    socklen_t length = parse_host(host, port, &address);
    if (length == 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = family_socket(&address, SOCK_NONBLOCK);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
    if (bind(fd, (struct sockaddr *)&address, length) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    socklen_t bound_length = sizeof address;
    if (getsockname(fd, (struct sockaddr *)&address, &bound_length) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    *bound_port = ntohs(address.sin6_port);  // sin_port and sin6_port share their offset
    return fd;
}
