import COpenSSL
import COpus
import CParleyShims
import Testing
@testable import ParleyMedia

/// Each C library Parley depends on links, loads, and answers a real call through the module
/// maps and the shim target, so a missing apt package or a broken wrapper fails here first.
/// (usrsctp, a test-only peer, is exercised by ParleySCTPTests.)
@Suite struct NativeLibraryTests {
    @Test func versionsComeFromTheLinkedLibraries() {
        #expect(NativeLibraries.openSSLVersion.hasPrefix("OpenSSL 3."))
        #expect(NativeLibraries.srtpVersion.hasPrefix("libsrtp2 2."))
        #expect(NativeLibraries.opusVersion.hasPrefix("libopus 1."))
    }

    @Test func dtlsContextTakesTheShimmedSettings() throws {
        let context = try #require(SSL_CTX_new(DTLS_method()))
        defer { SSL_CTX_free(context) }
        #expect(parley_ssl_ctx_set_min_proto_dtls12(context) == 1)
        #expect(parley_ssl_ctx_set_max_proto_dtls12(context) == 1)
        let options = SSL_CTX_set_options(context, parley_ssl_op_no_query_mtu())
        #expect(options & parley_ssl_op_no_query_mtu() != 0)
        #expect(SSL_CTX_set_tlsext_use_srtp(context, "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80") == 0)
        let ssl = try #require(SSL_new(context))
        defer { SSL_free(ssl) }
        #expect(parley_dtls_set_link_mtu(ssl, 1200) == 1)
        #expect(parley_dtls_timeout_ms(ssl) == -1, "no handshake started, so no retransmission timer")
    }

    @Test func p256KeysAreGenerated() throws {
        let key = try #require(parley_generate_p256_key())
        defer { EVP_PKEY_free(key) }
        #expect(EVP_PKEY_get_bits(key) == 256)
    }

    @Test func opusEncoderTakesControlCalls() throws {
        var error: Int32 = 0
        let encoder = try #require(opus_encoder_create(48000, 1, OPUS_APPLICATION_VOIP, &error))
        defer { opus_encoder_destroy(encoder) }
        #expect(error == OPUS_OK)
        #expect(parley_opus_encoder_set_bitrate(encoder, 32000) == OPUS_OK)
        #expect(parley_opus_encoder_set_inband_fec(encoder, 1) == OPUS_OK)
        var bitrate: Int32 = 0
        #expect(parley_opus_encoder_get_bitrate(encoder, &bitrate) == OPUS_OK)
        #expect(bitrate == 32000)
        let silence = [Int16](repeating: 0, count: 960)
        var packet = [UInt8](repeating: 0, count: 400)
        let length = opus_encode(encoder, silence, 960, &packet, 400)
        #expect(length > 0)
    }
}
