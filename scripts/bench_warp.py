#!/usr/bin/env python3
"""WARP setup benchmark: `parley load` with and without `--warp` against `parley dev` across a link
with a real round trip, in the same run.

Two network namespaces joined by Tests/Tools/impair.py (--one-way-ms each way; 25 ms: a 50 ms round
trip): `parley dev` (release build) in B, `parley load` in A. Each mode runs with `--warp` (SNAP's
a=sctp-init in the offer and `oai-events` negotiated on stream 0 with ?dcid=0) and without (SCTP's
four-way handshake and a DCEP OPEN/ACK), alternating, for:
  - single: --sessions N spread over N/2 s (one call at a time, in effect);
  - burst:  --sessions M all at once.
Every step is milliseconds from the offer's POST (the answer includes the HTTP request's round trips
over the link), p50 / p99; "open − answer" is the data channel's open less the answer, both p50,
in round trips of the link. Needs root (namespaces, TUN).

Then headless Chromium (scripts/chromium_setup_probe.py, a fresh browser per call, in namespace A)
calls the same way, --chromium-runs calls per variant: no field trials (DCEP), SNAP with a negotiated
oai-events, SNAP + SPED (WARP), and WARP without post-quantum key shares (a one-datagram
ClientHello, which rides the first check whole).

Every run happens once per server DTLS library (--dtls, default both): BoringSSL, which runs DTLS 1.3
with these clients, and OpenSSL (DTLS 1.2), the load client on the same library as the server.

Usage: sudo scripts/bench_warp.py [--one-way-ms 25] [--single 10] [--burst 100] [--chromium-runs 10]
       [--parley PATH] [--output-dir docs]
With --output-dir it writes benchmarks-warp-latest.json and the table inside docs/benchmarks.md
(between the bench-warp markers).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import API_KEY, update_markdown  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
IMPAIR = os.path.join(ROOT, "Tests", "Tools", "impair.py")
STEPS = ("answer", "ice", "dtls", "firstEchoedAudio", "dataChannelOpen")


CHROMIUM_STEPS = ("answer", "ice", "dtls", "firstEchoedAudio", "dataChannelOpen")
CHROMIUM_VARIANTS = (("plain", "no field trials (DCEP)"), ("snap", "SNAP, negotiated oai-events"),
                     ("warp", "SNAP + SPED (WARP)"), ("warp-no-pqc", "WARP, no post-quantum ClientHello"))
PROBE = os.path.join(ROOT, "scripts", "chromium_setup_probe.py")
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else None


def run_chromium(ns_a, server_ip, runs):
    python = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable
    result = subprocess.run(["ip", "netns", "exec", ns_a, python, PROBE, "--base", f"http://{server_ip}:8080",
                             "--runs", str(runs)], capture_output=True, text=True, timeout=60 * runs + 120)
    if not result.stdout.strip():
        raise RuntimeError(f"chromium_setup_probe failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def chromium_rows(results, rtt, library):
    rows = []
    for variant, label in CHROMIUM_VARIANTS:
        calls = [call for call in results.get(variant, []) if "error" not in call]
        cells = []
        for step in CHROMIUM_STEPS:
            values = [call[step] for call in calls if step in call]
            cells.append(f"{percentile(values, 0.5):.0f} / {percentile(values, 0.99):.0f}" if values else "–")
        opens = [call["dataChannelOpen"] - call["answer"] for call in calls if "dataChannelOpen" in call and "answer" in call]
        after = f"{percentile(opens, 0.5) / rtt:.1f} RTT" if opens else "–"
        sped = sum(1 for call in calls if call.get("answeredSped"))
        # The version Chromium's getStats reported (FEFC: 1.3, FEFD: 1.2), when all calls agree.
        seen = {WIRE_VERSIONS.get(call.get("tlsVersion"), "?") for call in calls}
        version = seen.pop() if len(seen) == 1 else "/".join(sorted(seen)) or "–"
        rows.append(f"| {label} | {version} | {len(calls)}/{len(results.get(variant, []))} | {sped} | " + " | ".join(cells) + f" | {after} |")
    return rows


WIRE_VERSIONS = {"FEFC": "1.3", "FEFD": "1.2"}


def load_version(report):
    """The DTLS versions `parley load`'s connected sessions agreed, as the report counts them."""
    versions = report.get("dtlsVersions", {})
    return "/".join(sorted(name.replace("DTLS ", "") for name in versions)) or "–"


def run_load(ns_a, parley, url, sessions, ramp, warp, library):
    command = ["ip", "netns", "exec", ns_a, parley, "load", "--url", url, "--sessions", str(sessions),
               "--duration", "1", "--ramp", str(ramp), "--api-key", API_KEY, "--dtls", library] + (["--warp"] if warp else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if not result.stdout.strip():
        raise RuntimeError(f"parley load failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


class Server:
    """A fresh `parley dev` in namespace B for one run, killed after it (a SIGTERM would drain)."""

    def __init__(self, parley, ns_a, ns_b, ip, library):
        self.command = ["ip", "netns", "exec", ns_b, parley, "dev", "--dtls", library, "--http-host", "0.0.0.0", "--http-port", "8080",
                        "--media-host", "0.0.0.0", "--media-port", "3478", "--advertise", f"{ip}:3478",
                        "--api-key", API_KEY, "--log-level", "warning",
                        # The load generator is one address: a burst is more connections than the default 64.
                        "--max-connections-per-address", "512"]
        self.ns_a, self.health = ns_a, f"http://{ip}:8080/healthz"

    def __enter__(self):
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while subprocess.run(["ip", "netns", "exec", self.ns_a, "curl", "-sf", "-o", "/dev/null", self.health]).returncode:
            if time.time() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise RuntimeError("parley dev did not come up: " + self.process.stderr.read()[-2000:])
            time.sleep(0.2)
        return self

    def __exit__(self, *_):
        self.process.kill()
        self.process.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one-way-ms", type=float, default=25)
    parser.add_argument("--single", type=int, default=10)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--chromium-runs", type=int, default=10, help="calls per Chromium variant (0: none)")
    parser.add_argument("--parley", default=os.path.join(ROOT, ".build", "release", "parley"))
    parser.add_argument("--dtls", default="boringssl,openssl",
                        help="server DTLS libraries to run, comma-separated (the load client uses the same)")
    parser.add_argument("--output-dir")
    args = parser.parse_args()
    if not os.path.exists(args.parley):
        sys.exit(f"{args.parley} missing: build it (swift build -c release)")
    ns_a, ns_b = f"warpA-{os.getpid()}", f"warpB-{os.getpid()}"
    state_dir = f"/tmp/bench-warp-{os.getpid()}"
    link = subprocess.Popen([sys.executable, IMPAIR, "up", "--a", ns_a, "--b", ns_b, "--subnet6", "none",
                             "--state-dir", state_dir, "--both", f"delay={args.one_way_ms}ms", "--nice", "-5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows, raw = [], {}
    try:
        line = link.stdout.readline()
        if not line:
            raise RuntimeError("impair.py did not come up: " + link.stderr.read()[-2000:])
        server_ip = json.loads(line)["b"]["ipv4"]
        url = f"http://{server_ip}:8080/v1/realtime/calls"
        rtt = 2 * args.one_way_ms
        # Each run gets a fresh server (no calls of the run before it still live), and the order of
        # the two clients alternates between the kinds.
        libraries = [library for library in args.dtls.split(",") if library]
        for kind, sessions, ramp, order in (("single", args.single, args.single / 2, (False, True)),
                                            ("burst", args.burst, 0, (True, False))):
            for library in libraries:
                for warp in order:
                    with Server(args.parley, ns_a, ns_b, server_ip, library):
                        report = run_load(ns_a, args.parley, url, sessions, ramp, warp, library)
                    raw[f"{kind}-{'warp' if warp else 'plain'}-{library}"] = report
                    setup = report["setup"]
                    cells = [f"{setup[s]['p50']:.0f} / {setup[s]['p99']:.0f}" if s in setup else "–" for s in STEPS]
                    after = (setup["dataChannelOpen"]["p50"] - setup["answer"]["p50"]) / rtt if "dataChannelOpen" in setup else None
                    rows.append(((kind != "single", warp, library != "openssl"),
                                 f"| {kind} ({sessions}) | {'`--warp`' if warp else 'plain'} | {load_version(report)} | "
                                 f"{report['connected']}/{sessions} | "
                                 f"{report['dataChannel'].get('startedWithSNAP', 0)} | " + " | ".join(cells)
                                 + (f" | {after:.1f} RTT |" if after is not None else " | – |")))
                    print(rows[-1][1], flush=True)
        chromium = []
        if args.chromium_runs:
            for library in libraries:
                with Server(args.parley, ns_a, ns_b, server_ip, library):
                    raw[f"chromium-{library}"] = run_chromium(ns_a, server_ip, args.chromium_runs)
                chromium += chromium_rows(raw[f"chromium-{library}"], rtt, library)
            print("\n".join(chromium), flush=True)
    finally:
        link.terminate()
        try:
            link.wait(timeout=10)
        except subprocess.TimeoutExpired:
            link.kill()
        subprocess.run([sys.executable, IMPAIR, "down", "--a", ns_a, "--b", ns_b, "--state-dir", state_dir],
                       capture_output=True)
    rows = [row for _, row in sorted(rows, key=lambda r: r[0])]
    table = (f"Latest run: {datetime.date.today()} (`make bench-warp`: `parley load` in one namespace, release `parley dev` in "
             f"another, {args.one_way_ms:g} ms each way through impair.py, a {2 * args.one_way_ms:g} ms round trip; "
             "raw figures in [benchmarks-warp-latest.json](benchmarks-warp-latest.json)).\n\n"
             "| calls | client | DTLS | connected | SNAP | answer | ICE | DTLS up | first echoed audio | data channel open | open − answer (p50) |\n"
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n\n"
             "Milliseconds from the offer's POST, p50 / p99. SNAP: sessions whose answer took up `a=sctp-init`. "
             "`--warp` offers SPED too (`a=ice-options:sped`): its ClientHello rides the first check. "
             "DTLS: the version the sessions' handshakes agreed (the load client counts them), with "
             "`parley dev --dtls boringssl` or `--dtls openssl` and the load client on the same library.\n")
    if chromium:
        table += ("\nHeadless Chromium 156 across the same link (scripts/chromium_setup_probe.py: a fresh browser per call, "
                  f"{args.chromium_runs} calls per variant, interleaved; one `parley dev` per DTLS library):\n\n"
                  "| Chromium | DTLS (getStats) | calls | SPED answered | answer | ICE | DTLS up | first echoed audio | data channel open | open − answer (p50) |\n"
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(chromium) + "\n\n"
                  "Milliseconds from the offer's POST, p50 / p99 (DTLS: `connectionState` connected; first echoed audio: "
                  "the receiver's first synchronization source).\n")
    print(table)
    if args.output_dir:
        with open(os.path.join(args.output_dir, "benchmarks-warp-latest.json"), "w") as f:
            json.dump({"one_way_ms": args.one_way_ms, "reports": raw}, f, indent=1, sort_keys=True)
        update_markdown(os.path.join(args.output_dir, "benchmarks.md"), "bench-warp", table)


if __name__ == "__main__":
    main()
