#include "CParleyShims.h"

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

int parley_ssl_ctx_set_min_proto_dtls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
}

int parley_ssl_ctx_set_max_proto_dtls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
}

uint64_t parley_ssl_op_no_query_mtu(void) { return (uint64_t)SSL_OP_NO_QUERY_MTU; }

long parley_dtls_set_link_mtu(SSL *ssl, long mtu) { return DTLS_set_link_mtu(ssl, mtu); }

long parley_dtls_timeout_ms(SSL *ssl) {
    struct timeval remaining;
    if (DTLSv1_get_timeout(ssl, &remaining) != 1) return -1;
    return (long)remaining.tv_sec * 1000 + (long)(remaining.tv_usec + 999) / 1000;
}

int parley_dtls_handle_timeout(SSL *ssl) { return (int)DTLSv1_handle_timeout(ssl); }

void parley_openssl_free(void *pointer) { OPENSSL_free(pointer); }

EVP_PKEY *parley_generate_p256_key(void) { return EVP_EC_gen("P-256"); }

const char *parley_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

int parley_opus_encoder_set_bitrate(OpusEncoder *encoder, int32_t bitsPerSecond) {
    return opus_encoder_ctl(encoder, OPUS_SET_BITRATE(bitsPerSecond));
}

int parley_opus_encoder_set_inband_fec(OpusEncoder *encoder, int enabled) {
    return opus_encoder_ctl(encoder, OPUS_SET_INBAND_FEC(enabled));
}

int parley_opus_encoder_set_packet_loss_percent(OpusEncoder *encoder, int percent) {
    return opus_encoder_ctl(encoder, OPUS_SET_PACKET_LOSS_PERC(percent));
}

int parley_opus_encoder_set_complexity(OpusEncoder *encoder, int complexity) {
    return opus_encoder_ctl(encoder, OPUS_SET_COMPLEXITY(complexity));
}

int parley_opus_encoder_set_signal_voice(OpusEncoder *encoder) {
    return opus_encoder_ctl(encoder, OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE));
}

int parley_opus_encoder_set_dtx(OpusEncoder *encoder, int enabled) {
    return opus_encoder_ctl(encoder, OPUS_SET_DTX(enabled));
}

int parley_opus_encoder_get_bitrate(OpusEncoder *encoder, int32_t *bitsPerSecond) {
    opus_int32 value = 0;
    int status = opus_encoder_ctl(encoder, OPUS_GET_BITRATE(&value));
    *bitsPerSecond = value;
    return status;
}

int parley_opus_decoder_get_last_packet_duration(OpusDecoder *decoder, int32_t *samples) {
    opus_int32 value = 0;
    int status = opus_decoder_ctl(decoder, OPUS_GET_LAST_PACKET_DURATION(&value));
    *samples = value;
    return status;
}
