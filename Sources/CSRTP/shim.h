// Only includes the system header(s): SwiftPM finds them through pkg-config (libsrtp2), provided by Debian's libsrtp2-dev.
#include <srtp2/srtp.h>
