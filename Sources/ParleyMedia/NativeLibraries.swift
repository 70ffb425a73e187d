internal import COpenSSL
import COpus
internal import CParleyShims
import CSRTP

/// The C libraries Parley's media path runs on, as linked into this process. `parley version`
/// prints them, and the tests check each one actually loads and answers.
public enum NativeLibraries {
    public static var openSSLVersion: String { String(cString: parley_openssl_version()) }
    public static var srtpVersion: String { String(cString: srtp_get_version_string()) }
    public static var opusVersion: String { String(cString: opus_get_version_string()) }

    public static var summary: [(name: String, version: String)] {
        [("OpenSSL", openSSLVersion), ("libsrtp", srtpVersion), ("libopus", opusVersion)]
    }
}
