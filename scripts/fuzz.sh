#!/usr/bin/env bash
# Builds the libFuzzer harnesses (the Fuzz/ package, `swift build --sanitize=fuzzer
# --sanitize=address`, release) and runs each for a number of inputs or seconds, from a corpus
# seeded with real packets. See docs/testing.md.
#
# Usage: scripts/fuzz.sh [--runs N | --seconds S] [--jobs J] [target …]
#   targets: stun sdp token tunnel sctp rtp resp association agent jitter session client signaling routing tcp (default: all)
#   --runs N     inputs per target (default 1000000; `make fuzz` and the recorded campaign: 10^7)
#   --seconds S  or this long per target instead
#   --jobs J     parallel fuzzing processes per target (libFuzzer -fork; default 1)
# A crash, timeout or out-of-memory leaves its input as Fuzz/<target>-crash-* (…-oom-*, …) and makes
# the script fail; replay it with `.build-fuzz/release/Fuzz<Name> <file>`, fix, and keep the input.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=1000000
seconds=
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(stun sdp token tunnel sctp rtp resp association agent jitter session client signaling routing tcp)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

binary_name() {
    case $1 in
        stun) echo FuzzSTUN ;; sdp) echo FuzzSDP ;; token) echo FuzzToken ;; tunnel) echo FuzzTunnel ;;
        sctp) echo FuzzSCTP ;; rtp) echo FuzzRTP ;; resp) echo FuzzRESP ;; association) echo FuzzAssociation ;;
        agent) echo FuzzAgentMessages ;; jitter) echo FuzzJitterBuffer ;; session) echo FuzzSession ;;
        client) echo FuzzClientSession ;; signaling) echo FuzzSignaling ;; routing) echo FuzzRouting ;; tcp) echo FuzzTCP ;;
        *) echo "unknown fuzz target: $1 (one of: ${all[*]})" >&2; exit 2 ;;
    esac
}
for target in "${targets[@]}"; do binary_name "$target" > /dev/null; done

echo "== building the harnesses (Fuzz/, release, fuzzer + address sanitizers)"
# Release builds compile each module whole (-wmo), and swiftc then drops -sanitize=fuzzer's coverage
# instrumentation unless it is asked for explicitly: without it libFuzzer would fuzz blind.
# Each harness is built as its own product: a plain build would also link Parley's own executable,
# whose main clashes with libFuzzer's.
# A harness that does not build fails the run: fuzzing the binary an earlier build left would test
# old code and pass.
for target in "${targets[@]}"; do
    if ! swift build -c release --package-path Fuzz --scratch-path .build-fuzz --sanitize=fuzzer --sanitize=address \
        -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp --product "$(binary_name "$target")" \
        2> >(grep -v "Cannot export local symbol" >&2) > >(grep -v "^\[" || true); then
        echo "fuzz: the $target harness did not build" >&2
        exit 1
    fi
done
bin=.build-fuzz/release
rm -f Fuzz/*-crash-* Fuzz/*-leak-* Fuzz/*-timeout-* Fuzz/*-oom-* Fuzz/*-slow-unit-*
mkdir -p Fuzz/logs
python3 scripts/fuzz_seeds.py Fuzz "${targets[@]}"

status=0
for target in "${targets[@]}"; do
    name=$(binary_name "$target")
    limits=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10)
    # Records (kind, length, bytes) drive the stateful harnesses; SDP goes up to the parser's own 64 KiB.
    case $target in
        sdp) limits+=(-max_len=70000) ;;
        session|client|association|jitter|rtp) limits+=(-max_len=1024) ;;
        *) limits+=(-max_len=4096) ;;
    esac
    # The stateful harnesses keep a call across inputs on purpose, and Swift's weak-reference side
    # tables (the agent's link to its bridge) look unreachable to LeakSanitizer: their leak check
    # would report that, not leaks. Memory stays bounded by -rss_limit_mb and -malloc_limit_mb.
    # ASAN_OPTIONS too: -detect_leaks=0 stops libFuzzer's check per input, not LeakSanitizer's own
    # at exit, which then reports the call the harness still holds.
    asan=${ASAN_OPTIONS:-}
    case $target in session|client|association|jitter) limits+=(-detect_leaks=0); asan="detect_leaks=0${asan:+:$asan}" ;; esac
    budget=(-runs="$runs")
    [ -n "$seconds" ] && budget=(-max_total_time="$seconds")
    parallel=()
    [ "$jobs" -gt 1 ] && parallel=(-fork="$jobs" -ignore_crashes=0)
    echo "== fuzzing $target (${budget[*]})"
    set +e
    ASAN_OPTIONS="$asan" "$bin/$name" "${budget[@]}" "${limits[@]}" "${parallel[@]}" -print_final_stats=1 -artifact_prefix="Fuzz/$target-" \
        "Fuzz/corpus-$target" > "Fuzz/logs/$target.log" 2>&1
    result=$?
    set -e
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|SUMMARY" "Fuzz/logs/$target.log" | head -5 || true
    if [ $result -ne 0 ] || ls Fuzz/"$target"-* > /dev/null 2>&1; then
        echo "!! $target: the fuzzer failed (exit $result); inputs: $(ls Fuzz/"$target"-* 2>/dev/null | tr '\n' ' ')"
        tail -40 "Fuzz/logs/$target.log"
        status=1
    fi
done
exit $status
