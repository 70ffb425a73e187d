// Only includes the system header(s): SwiftPM finds them through pkg-config (usrsctp), provided by Debian's libusrsctp-dev.
#include <usrsctp.h>
