// Only includes the system header(s): SwiftPM finds them through pkg-config (opus), provided by Debian's libopus-dev.
#include <opus/opus.h>
