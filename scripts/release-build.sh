#!/usr/bin/env bash
# The Containerfile's build step, run here: a release `parley` with the Swift standard library
# linked statically, checked to load no Swift runtime library at run time and to run. The
# pods-from-manifests test (Tests/Interop/test_kubernetes.py) runs this binary at the image's path.
# Usage: scripts/release-build.sh [--path]   (--path: print where the binary is, build nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
swift=${SWIFT:-swift}
binary="$($swift build -c release --show-bin-path)/parley"
if [ "${1:-}" = "--path" ]; then echo "$binary"; exit 0; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! $swift build -c release --static-swift-stdlib --product parley > "$log" 2>&1; then
    cat "$log" >&2
    echo "release build failed" >&2
    exit 1
fi
# Anything from the toolchain (libswift*, Foundation, Dispatch, BlocksRuntime, ICU data): the
# runtime stage has Debian's libraries only.
if ldd "$binary" | grep -Eq "libswift|Foundation|libdispatch|BlocksRuntime|/opt/swift|/usr/share/swift|not found"; then
    echo "$binary loads Swift runtime libraries; the image's runtime stage has none:" >&2
    ldd "$binary" >&2
    exit 1
fi
"$binary" --help > /dev/null  # it starts (the pods-from-manifests test then runs calls through it)
echo "$binary: static Swift runtime; links $(ldd "$binary" | awk '{print $1}' | grep -v "^linux-vdso\|ld-linux" | tr '\n' ' ')"
