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
long parley_dtls_set_link_mtu(SSL *ssl, long mtu);
/// Milliseconds until the DTLS retransmission timer fires, or -1 when no timer runs.
long parley_dtls_timeout_ms(SSL *ssl);
int parley_dtls_handle_timeout(SSL *ssl);
void parley_openssl_free(void *pointer);
/// A fresh ECDSA P-256 key pair, or NULL.
EVP_PKEY *parley_generate_p256_key(void);
const char *parley_openssl_version(void);

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
