// Plain-C wrappers for the parts of OpenSSL and libopus that Swift cannot import:
// function-like macros (SSL_CTX_set_min_proto_version, DTLSv1_get_timeout, …) and
// variadic calls (opus_encoder_ctl). Each wrapper is one call; no logic lives here.
#ifndef PARLEY_SHIMS_H
#define PARLEY_SHIMS_H

#include <stdint.h>
#include <openssl/ssl.h>
#include <openssl/evp.h>
#include <opus/opus.h>

// OpenSSL
int parley_ssl_ctx_set_min_proto_dtls12(SSL_CTX *ctx);
int parley_ssl_ctx_set_max_proto_dtls12(SSL_CTX *ctx);
uint64_t parley_ssl_op_no_query_mtu(void);
uint64_t parley_ssl_op_no_renegotiation(void);
long parley_dtls_set_link_mtu(SSL *ssl, long mtu);
/// Milliseconds until the DTLS retransmission timer fires, or -1 when no timer runs.
long parley_dtls_timeout_ms(SSL *ssl);
int parley_dtls_handle_timeout(SSL *ssl);
void parley_openssl_free(void *pointer);
/// A fresh ECDSA P-256 key pair, or NULL.
EVP_PKEY *parley_generate_p256_key(void);
const char *parley_openssl_version(void);

/// Receives each datagram a DTLS connection writes, one call per datagram, so record boundaries
/// survive (a BIO_s_mem would glue a whole flight into one blob).
typedef void (*parley_datagram_sink)(void *context, const uint8_t *bytes, size_t length);
/// A write-only BIO that hands every write to `sink`; the BIO owns nothing of `context`.
BIO *parley_bio_datagram_writer_new(parley_datagram_sink sink, void *context);
/// Sets the DTLS retransmission schedule of one connection: `initial_us`, doubling up to `max_us`.
int parley_dtls_set_retransmit_schedule(SSL *ssl, unsigned int initial_us, unsigned int max_us);
/// BIO_set_mem_eof_return: what reading an empty memory BIO returns (-1 = "retry later").
long parley_bio_set_mem_eof_return(BIO *bio, int value);

// libopus
int parley_opus_encoder_set_bitrate(OpusEncoder *encoder, int32_t bitsPerSecond);
int parley_opus_encoder_set_inband_fec(OpusEncoder *encoder, int enabled);
int parley_opus_encoder_set_packet_loss_percent(OpusEncoder *encoder, int percent);
int parley_opus_encoder_set_complexity(OpusEncoder *encoder, int complexity);
int parley_opus_encoder_set_signal_voice(OpusEncoder *encoder);
int parley_opus_encoder_set_dtx(OpusEncoder *encoder, int enabled);
int parley_opus_encoder_get_bitrate(OpusEncoder *encoder, int32_t *bitsPerSecond);
int parley_opus_decoder_get_last_packet_duration(OpusDecoder *decoder, int32_t *samples);

#endif
