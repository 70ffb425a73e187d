#!/usr/bin/env bash
# Builds a libFuzzer binary per ParleyWire parser (STUN, SDP, token, tunnel) and runs each for a
# bounded time, seeded from the test fixtures. Usage: scripts/fuzz.sh [seconds-per-target] [target…]
# A crash leaves its input as Fuzz/crash-* and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stun sdp token tunnel)

mkdir -p Fuzz/bin
mapfile -t sources < <(find Sources/ParleyWire -name '*.swift' | sort)
fixtures=Tests/ParleyWireTests/Fixtures

seed() {
    local target=$1 corpus=Fuzz/corpus-$1
    mkdir -p "$corpus"
    case $target in
        stun) for f in "$fixtures"/rfc5769/*.hex; do
                  python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read()))' "$f" \
                      > "$corpus/$(basename "$f" .hex)"
              done ;;
        sdp) cp "$fixtures"/*.sdp "$corpus/" ;;
        token) python3 scripts/routing-token-reference.py | while read -r name token; do printf '%s' "$token" > "$corpus/$name"; done ;;
        tunnel) printf '\xd1\x00\x01\x02\xd4\x31\xcb\x00\x71\x07payload' > "$corpus/ipv4" ;;
    esac
}

status=0
for target in "${targets[@]}"; do
    harness=Fuzz/Fuzz$(case $target in stun) echo STUN;; sdp) echo SDP;; token) echo Token;; tunnel) echo Tunnel;; esac).swift
    binary=Fuzz/bin/fuzz-$target
    echo "== building $binary"
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name ParleyWire \
        "${sources[@]}" "$harness" -o "$binary" 2> >(grep -v "Cannot export local symbol" >&2)
    seed "$target"
    echo "== fuzzing $target for ${seconds}s"
    if ! "$binary" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
            -artifact_prefix=Fuzz/ "Fuzz/corpus-$target" 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)"; then
        :
    fi
    if ls Fuzz/crash-* Fuzz/leak-* Fuzz/timeout-* >/dev/null 2>&1; then
        echo "!! $target: the fuzzer found a failing input (Fuzz/crash-*)"; status=1
    fi
done
exit $status
