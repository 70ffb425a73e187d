#!/usr/bin/env bash
# Builds a libFuzzer binary per parser (STUN, SDP, token, tunnel, SCTP) and runs each for a
# bounded time, seeded from the test fixtures. Usage: scripts/fuzz.sh [seconds-per-target] [target…]
# A crash, leak, timeout or out-of-memory leaves its input as Fuzz/<target>-crash-* (…-oom-*, …)
# and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stun sdp token tunnel sctp)

mkdir -p Fuzz/bin
rm -f Fuzz/*-crash-* Fuzz/*-leak-* Fuzz/*-timeout-* Fuzz/*-oom-* Fuzz/*-slow-unit-*
mapfile -t wire_sources < <(find Sources/ParleyWire -name '*.swift' | sort)
mapfile -t sctp_sources < <(find Sources/ParleySCTP -name '*.swift' | sort)
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
        sctp) printf '\x13\x88\x13\x88\x00\x00\x00\x01\x00\x00\x00\x00\x00\x03\x00\x12\x00\x00\x00\x07\x00\x01\x00\x02\x00\x00\x00\x33hi\x00\x00' > "$corpus/data" ;;
    esac
}

status=0
for target in "${targets[@]}"; do
    harness=Fuzz/Fuzz$(case $target in stun) echo STUN;; sdp) echo SDP;; token) echo Token;; tunnel) echo Tunnel;; sctp) echo SCTP;; esac).swift
    sources=("${wire_sources[@]}")
    module=ParleyWire
    # ParleySCTP imports ParleyWire; compiled as one module, that import refers to itself and is ignored.
    if [ "$target" = sctp ]; then sources=("${wire_sources[@]}" "${sctp_sources[@]}"); fi
    binary=Fuzz/bin/fuzz-$target
    echo "== building $binary"
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name "$module" \
        "${sources[@]}" "$harness" -o "$binary" 2> >(grep -v "Cannot export local symbol\|ignoring import\|import ParleyWire" >&2)
    seed "$target"
    # SDP inputs go up to the parser's own 64 KiB limit, so the size limits are exercised too.
    max_len=4096
    [ "$target" = sdp ] && max_len=70000
    echo "== fuzzing $target for ${seconds}s"
    set +e
    "$binary" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -print_final_stats=1 -artifact_prefix="Fuzz/$target-" "Fuzz/corpus-$target" > "Fuzz/bin/$target.log" 2>&1
    result=$?
    set -e
    grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" "Fuzz/bin/$target.log" || true
    if [ $result -ne 0 ] || ls Fuzz/"$target"-* >/dev/null 2>&1; then
        echo "!! $target: the fuzzer failed (exit $result); inputs: $(ls Fuzz/"$target"-* 2>/dev/null | tr '\n' ' ')"
        status=1
    fi
done
exit $status
