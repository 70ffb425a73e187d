// Batched UDP syscalls for the relay's packet loop: recvmmsg/sendmmsg are GNU extensions that
// Swift's Glibc module does not export, and the batch structures are easier to lay out in C.
// Plain system calls only; no library behind them.
#ifndef PARLEY_SOCKETS_H
#define PARLEY_SOCKETS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define PARLEY_BATCH 32

typedef struct parley_batch parley_batch;

/// A batch of up to PARLEY_BATCH datagrams with their addresses; allocate once, reuse forever.
parley_batch *parley_batch_create(void);
void parley_batch_destroy(parley_batch *batch);

/// Receives up to PARLEY_BATCH datagrams into `buffers` (PARLEY_BATCH slots of `slot` bytes each).
/// Returns how many, 0 when none is waiting, -1 on error.
int parley_batch_receive(int fd, parley_batch *batch, uint8_t *buffers, unsigned slot);
unsigned parley_batch_length(const parley_batch *batch, unsigned index);
/// The source address of a received datagram: family, IPv4 or IPv6 bytes (network order), port.
int parley_batch_source(const parley_batch *batch, unsigned index, uint8_t address[16], uint16_t *port);

/// Sets outgoing datagram `index`: its bytes (not copied: they must stay until sent) and its
/// destination (`address_length` 4 or 16 bytes, network order; port in host order).
void parley_batch_set(parley_batch *batch, unsigned index, const void *bytes, unsigned length,
                      const uint8_t *address, unsigned address_length, uint16_t port);
/// Sends the first `count` datagrams set; returns how many left (the rest, if any, were refused).
int parley_batch_send(int fd, parley_batch *batch, unsigned count);

/// 1 when someone holds UDP host:port (bound in any way), 0 when it is free, -1 on another error
/// (EINVAL: `host` is not an IPv4 or IPv6 literal).
int parley_udp_port_in_use(const char *host, int port);
/// The same for TCP (a listener: connections in TIME_WAIT do not count).
int parley_tcp_port_in_use(const char *host, int port);

/// A non-blocking UDP socket bound to host:port (an IPv4 or IPv6 literal; an IPv6 socket is
/// IPV6_V6ONLY), with SO_REUSEPORT when asked and socket buffers of `buffer_bytes` (forced where
/// permitted). Returns the fd, or -1 with errno set; `bound_port` gets the port.
int parley_udp_socket(const char *host, int port, int reuse_port, int buffer_bytes, int *bound_port);

#endif
