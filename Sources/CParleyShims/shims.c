#include "CParleyShims.h"

#include <openssl/crypto.h>
#include <openssl/bio.h>
#include <pthread.h>
#include <stdlib.h>
#include <openssl/opensslv.h>

int parley_ssl_ctx_set_min_proto_dtls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
}

int parley_ssl_ctx_set_max_proto_dtls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
}

uint64_t parley_ssl_op_no_query_mtu(void) { return (uint64_t)SSL_OP_NO_QUERY_MTU; }

uint64_t parley_ssl_op_no_renegotiation(void) { return (uint64_t)SSL_OP_NO_RENEGOTIATION; }

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

// MARK: - Datagram writer BIO

struct parley_datagram_writer {
    parley_datagram_sink sink;
    void *context;
};

static BIO_METHOD *datagram_writer_method = NULL;
static pthread_once_t datagram_writer_once = PTHREAD_ONCE_INIT;

static int datagram_writer_write(BIO *bio, const char *data, int length) {
    struct parley_datagram_writer *writer = BIO_get_data(bio);
    if (writer == NULL || length < 0) return -1;
    writer->sink(writer->context, (const uint8_t *)data, (size_t)length);
    return length;
}

static long datagram_writer_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)bio; (void)number; (void)pointer;
    switch (command) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_WPENDING:
    case BIO_CTRL_PENDING: return 0;
    default: return 0;  // no MTU queries (SSL_OP_NO_QUERY_MTU), no peer address, no timeouts.
    }
}

static int datagram_writer_destroy(BIO *bio) {
    free(BIO_get_data(bio));
    BIO_set_data(bio, NULL);
    return 1;
}

static void datagram_writer_method_create(void) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "parley datagram writer");
    if (method == NULL) return;
    BIO_meth_set_write(method, datagram_writer_write);
    BIO_meth_set_ctrl(method, datagram_writer_ctrl);
    BIO_meth_set_destroy(method, datagram_writer_destroy);
    datagram_writer_method = method;
}

BIO *parley_bio_datagram_writer_new(parley_datagram_sink sink, void *context) {
    pthread_once(&datagram_writer_once, datagram_writer_method_create);
    if (datagram_writer_method == NULL) return NULL;
    struct parley_datagram_writer *writer = malloc(sizeof *writer);
    if (writer == NULL) return NULL;
    writer->sink = sink;
    writer->context = context;
    BIO *bio = BIO_new(datagram_writer_method);
    if (bio == NULL) { free(writer); return NULL; }
    BIO_set_data(bio, writer);
    BIO_set_init(bio, 1);
    return bio;
}

long parley_bio_set_mem_eof_return(BIO *bio, int value) { return BIO_set_mem_eof_return(bio, value); }

// MARK: - DTLS retransmission schedule

static int schedule_index = -1;
static pthread_once_t schedule_once = PTHREAD_ONCE_INIT;

static void schedule_index_create(void) { schedule_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }

// The schedule is packed into the ex_data pointer itself (initial << 32 | max), so nothing is
// allocated and nothing needs freeing.
static unsigned int schedule_timer(SSL *ssl, unsigned int previous_us) {
    uintptr_t packed = (uintptr_t)SSL_get_ex_data(ssl, schedule_index);
    unsigned int initial = (unsigned int)(packed >> 32), maximum = (unsigned int)(packed & 0xFFFFFFFFu);
    if (previous_us == 0) return initial;
    unsigned long long doubled = (unsigned long long)previous_us * 2;
    return doubled > maximum ? maximum : (unsigned int)doubled;
}

int parley_dtls_set_retransmit_schedule(SSL *ssl, unsigned int initial_us, unsigned int max_us) {
    pthread_once(&schedule_once, schedule_index_create);
    if (schedule_index < 0) return 0;
    uintptr_t packed = ((uintptr_t)initial_us << 32) | max_us;
    if (!SSL_set_ex_data(ssl, schedule_index, (void *)packed)) return 0;
    DTLS_set_timer_cb(ssl, schedule_timer);
    return 1;
}
