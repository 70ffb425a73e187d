#!/usr/bin/env python3
"""Transceiver benchmark: Parley side by side with a Pion answerer, the same load, the same run.

Each server runs pinned to core 0; the load generator (`parley load`: Parley's own client stack —
controlling ICE, DTLS, SRTP, SCTP — one UDP socket per session, 80-byte Opus-sized RTP every 20 ms
and a JSON event on `oai-events` every second) runs pinned to core 1. The servers:
  - parley: `parley dev --direct --workers 1` (the transceiver with its built-in echo agent, no relay
    hop, since Pion has none);
  - pion:   Benchmarks/pion (Go, Debian's Pion v3): ICE lite, one UDP port, default interceptors,
    RTP and data-channel echo.
Per server and session count: server CPU (utime + stime from /proc) and resident memory over
`--seconds` of steady media, echo ratio, loss, echo latency, jitter. The capacity search keeps adding
sessions until a run fails the bar (every session connected, >= 99.9% echoed, p99 echo < 20 ms,
load generator not saturated); the last count that passed is what one core sustains.
Setup: offer POST -> first echoed audio for single sessions (one after another) and for a burst of
100 started at once.

Usage: scripts/bench_transceiver.py [--sessions 100,200,400] [--capacity 600,800,...] [--seconds 10]
       [--servers parley,pion] [--output-dir docs]
With --output-dir it writes benchmarks-transceiver-latest.json, the PNG plots and the table inside
docs/benchmarks.md (between the bench-transceiver markers).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import API_KEY, cpu_seconds, free_port, rss_bytes, update_markdown, wait_until_healthy  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SERVER_CORE, CLIENT_CORE = "0", "1"
BAR = {"echo_ratio": 0.999, "echo_p99_ms": 20.0}


def build_pion(out):
    """Builds Benchmarks/pion offline against Debian's Pion sources (a GOPATH build, no modules)."""
    if not shutil.which("go") or not os.path.isdir("/usr/share/gocode/src/github.com/pion/webrtc"):
        print("Pion is not installed (scripts/install-deps.sh bench): running Parley alone", file=sys.stderr)
        return None
    gopath = tempfile.mkdtemp(prefix="parley-pion-")
    source = os.path.join(gopath, "src", "pionecho")
    shutil.copytree(os.path.join(ROOT, "Benchmarks", "pion"), source)
    binary = os.path.join(out, "pionecho")
    environment = dict(os.environ, GO111MODULE="off", GOPATH=f"{gopath}:/usr/share/gocode", GOPROXY="off",
                       GOFLAGS="", GOCACHE=os.path.join(out, "gocache"))
    subprocess.run(["go", "build", "-o", binary, "."], cwd=source, env=environment, check=True)
    shutil.rmtree(gopath)
    return binary


class Server:
    def __init__(self, name, command, url, health):
        self.name, self.command, self.url, self.health = name, command, url, health
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(["taskset", "-c", SERVER_CORE] + self.command,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_until_healthy(self.health):
            return self
        raise RuntimeError(f"{self.name} did not start")

    def __exit__(self, *_):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def servers(binary, pion, names):
    def parley():
        http, media = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        return Server("parley", [binary, "dev", "--direct", "--workers", "1", "--http-port", str(http),
                                 "--media-port", str(media), "--log-level", "error", "--api-key", API_KEY, "--metrics-port", "0",
                                 # Benchmarks measure the media path, not the per-key limits.
                                 "--max-calls-per-key", "1000000", "--rate-per-key", "1000000", "--burst-per-key", "1000000"],
                      f"http://127.0.0.1:{http}/v1/realtime/calls", f"http://127.0.0.1:{http}/healthz")

    def pion_server():
        http, media = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        return Server("pion", [pion, "-http", f"127.0.0.1:{http}", "-media", f"127.0.0.1:{media}"],
                      f"http://127.0.0.1:{http}/v1/realtime/calls", f"http://127.0.0.1:{http}/healthz")

    factories = {"parley": parley}
    if pion:
        factories["pion"] = pion_server
    return {name: factories[name] for name in names if name in factories}


def load(binary, url, sessions, duration, ramp):
    return subprocess.Popen(["taskset", "-c", CLIENT_CORE, binary, "load", "--url", url, "--sessions", str(sessions),
                             "--duration", str(duration), "--ramp", str(ramp)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def p(report, *path):
    value = report
    for key in path:
        value = (value or {}).get(key)
    return value


def steady(binary, make_server, sessions, seconds, repeat=1):
    """`repeat` runs of `sessions` calls, each measured over `seconds` once every call is up; the
    run with the median server CPU stands for them (this machine's CPU figures vary by ±20% run to
    run), with every run's CPU kept in `cpu_runs`."""
    runs = sorted((steady_once(binary, make_server, sessions, seconds) for _ in range(repeat)),
                  key=lambda row: row["server_cpu_percent"])
    row = dict(runs[len(runs) // 2])
    row["cpu_runs"] = [round(run["server_cpu_percent"], 1) for run in runs]
    row["passes"] = all(run["passes"] for run in runs)
    row["client_saturated"] = any(run["client_saturated"] for run in runs)
    return row


def steady_once(binary, make_server, sessions, seconds):
    """One run: `sessions` calls, measured over `seconds` once every call is up."""
    with make_server() as server:
        time.sleep(0.5)
        baseline_rss = rss_bytes(server.process.pid)
        ramp = min(8.0, sessions / 100)
        client = load(binary, server.url, sessions, seconds + ramp + 3, ramp)
        time.sleep(ramp + 2)
        cpu_start, wall_start = cpu_seconds(server.process.pid), time.monotonic()
        time.sleep(seconds)
        cpu = cpu_seconds(server.process.pid) - cpu_start
        wall = time.monotonic() - wall_start
        steady_rss = rss_bytes(server.process.pid)
        output, _ = client.communicate(timeout=seconds * 3 + 120)
    report = json.loads(output)
    row = {
        "server": server.name,
        "sessions": sessions,
        "connected": report["connected"],
        "server_cpu_percent": 100 * cpu / wall,
        "server_rss_mib": steady_rss / 2**20,
        "memory_per_session_kib": (steady_rss - baseline_rss) / 1024 / sessions,
        "echo_ratio": p(report, "audio", "echoRatio"),
        "packets_lost": p(report, "audio", "packetsLost"),
        "echo_ms_p50": p(report, "audio", "echoLatencyMilliseconds", "p50"),
        "echo_ms_p99": p(report, "audio", "echoLatencyMilliseconds", "p99"),
        "jitter_ms_p50": p(report, "audio", "jitterMilliseconds", "p50"),
        "channels_open": p(report, "dataChannel", "opened"),
        "client_saturated": p(report, "client", "saturated"),
        "client_peak_cpu_percent": p(report, "client", "peakCPUPercent"),
        "load": report,
    }
    row["passes"] = (row["connected"] == sessions and (row["echo_ratio"] or 0) >= BAR["echo_ratio"]
                     and (row["echo_ms_p99"] or 1e9) < BAR["echo_p99_ms"] and not row["client_saturated"])
    return row


def setup_runs(binary, make_server, singles, burst):
    """Offer -> first echoed audio: `singles` sessions one after another, then `burst` at once."""
    samples = []
    with make_server() as server:
        time.sleep(0.5)
        for _ in range(singles):
            output, _ = load(binary, server.url, 1, 1, 0).communicate(timeout=60)
            value = p(json.loads(output), "setup", "firstEchoedAudio", "p50")
            if value is not None:
                samples.append(value)
    with make_server() as server:
        time.sleep(0.5)
        output, _ = load(binary, server.url, burst, 3, 0).communicate(timeout=120)
    burst_report = json.loads(output)
    samples.sort()
    return {
        "server": server.name,
        "single_ms_p50": samples[len(samples) // 2] if samples else None,
        "single_ms_p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else None,
        "burst_sessions": burst,
        "burst_connected": burst_report["connected"],
        "burst_ms_p50": p(burst_report, "setup", "firstEchoedAudio", "p50"),
        "burst_ms_p99": p(burst_report, "setup", "firstEchoedAudio", "p99"),
        "burst_channel_open_ms_p99": p(burst_report, "setup", "dataChannelOpen", "p99"),
        "burst": burst_report["setup"],
    }


def fmt(value, spec, unit=""):
    return "–" if value is None else f"{value:{spec}}{unit}"


def ratio(a, b):
    return "–" if not a or not b else f"{a / b:.2f}×"


def tables(rows, capacity, setup):
    names = sorted({row["server"] for row in rows}, key=lambda n: n != "parley")
    out = ["| server | sessions | connected | server CPU | CPU per session | server RSS | memory per session "
           "| echoed | lost | echo p50 / p99 | jitter p50 | client |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in sorted(rows, key=lambda r: (names.index(r["server"]), r["sessions"])):
        out.append(f"| {row['server']} | {row['sessions']} | {row['connected']} | {row['server_cpu_percent']:.1f}% "
                   f"| {row['server_cpu_percent'] / row['sessions']:.3f}% | {row['server_rss_mib']:.1f} MiB "
                   f"| {row['memory_per_session_kib']:.0f} KiB | {100 * (row['echo_ratio'] or 0):.2f}% | {row['packets_lost']} "
                   f"| {fmt(row['echo_ms_p50'], '.2f')} / {fmt(row['echo_ms_p99'], '.2f')} ms "
                   f"| {fmt(row['jitter_ms_p50'], '.2f', ' ms')} "
                   f"| {'saturated' if row['client_saturated'] else 'ok'} ({row['client_peak_cpu_percent']:.0f}%) |")
    out.append("")
    out.append("| server | sessions one core sustains (≥ 99.9% echoed, p99 < 20 ms) | first failing count: why |")
    out.append("| --- | ---: | --- |")
    for name in names:
        result = capacity.get(name, {})
        out.append(f"| {name} | {result.get('sustained', '–')} | {result.get('limit', '–')} |")
    out.append("")
    out.append("| server | setup, single: p50 / p99 | setup, burst of 100: p50 / p99 | burst: data channel open p99 |")
    out.append("| --- | ---: | ---: | ---: |")
    for name in names:
        s = setup.get(name)
        if s:
            out.append(f"| {name} | {fmt(s['single_ms_p50'], '.1f')} / {fmt(s['single_ms_p99'], '.1f')} ms "
                       f"| {fmt(s['burst_ms_p50'], '.1f')} / {fmt(s['burst_ms_p99'], '.1f')} ms "
                       f"| {fmt(s['burst_channel_open_ms_p99'], '.1f')} ms |")
    if "parley" in names and "pion" in names:
        out.append("")
        out.append("Parley / Pion, same session count (CPU and memory: lower is better):")
        out.append("")
        out.append("| sessions | server CPU | memory per session |")
        out.append("| ---: | ---: | ---: |")
        by = {(r["server"], r["sessions"]): r for r in rows}
        for count in sorted({r["sessions"] for r in rows}):
            a, b = by.get(("parley", count)), by.get(("pion", count))
            if a and b:
                out.append(f"| {count} | {ratio(a['server_cpu_percent'], b['server_cpu_percent'])} "
                           f"| {ratio(a['memory_per_session_kib'], b['memory_per_session_kib'])} |")
        sa, sb = capacity.get("parley", {}).get("sustained"), capacity.get("pion", {}).get("sustained")
        out.append("")
        out.append(f"Sessions per core, Parley / Pion: {ratio(sa, sb)}"
                   + (" (Parley's figure is a lower bound: its run stopped at the load generator's limit)"
                      if capacity.get("parley", {}).get("client_limited") else ""))
    return "\n".join(out) + "\n"


def plots(rows, directory):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (scripts/install-deps.sh bench): no plots", file=sys.stderr)
        return []
    written = []
    for key, label, name in (("server_cpu_percent", "server CPU (% of one core)", "benchmarks-transceiver-cpu.png"),
                             ("echo_ms_p99", "echo latency p99 (ms)", "benchmarks-transceiver-latency.png"),
                             ("memory_per_session_kib", "memory per session (KiB)", "benchmarks-transceiver-memory.png")):
        figure, axes = plt.subplots(figsize=(6.4, 4))
        for server, colour in (("parley", "#1f77b4"), ("pion", "#d62728")):
            points = sorted((r["sessions"], r[key]) for r in rows if r["server"] == server and r[key] is not None)
            if points:
                axes.plot([x for x, _ in points], [y for _, y in points], marker="o", color=colour, label=server)
        axes.set_xlabel("concurrent echo sessions (50 packets/s each way + data channel)")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = os.path.join(directory, name)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="100,200,300,400", help="counts measured for every server")
    parser.add_argument("--capacity", default="600,800,1000,1200,1500",
                        help="further counts tried, in order, until a run fails the bar")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs per count; the median CPU one is reported")
    parser.add_argument("--servers", default="parley,pion")
    parser.add_argument("--singles", type=int, default=10, help="single-session setups measured")
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "parley"))
    parser.add_argument("--output-dir")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("warning: one core: server and load share it, figures are not comparable", file=sys.stderr)
    tools = os.path.join(ROOT, ".build", "bench")
    os.makedirs(tools, exist_ok=True)
    pion = build_pion(tools) if "pion" in args.servers.split(",") else None
    factories = servers(args.binary, pion, args.servers.split(","))
    base = [int(n) for n in args.sessions.split(",") if n]
    extra = [int(n) for n in args.capacity.split(",") if n]

    rows, capacity, setup = [], {}, {}
    for name, make in factories.items():
        sustained, limit, client_limited = None, None, False
        for count in base + [n for n in extra if n > max(base, default=0)]:
            if limit and count not in base:
                break
            print(f"{name}: {count} sessions…", file=sys.stderr)
            row = steady(args.binary, make, count, args.seconds, args.repeat)
            rows.append(row)
            print(f"  CPU {row['server_cpu_percent']:.1f}% (runs: {row['cpu_runs']}), echoed {100 * (row['echo_ratio'] or 0):.2f}%, "
                  f"p99 {fmt(row['echo_ms_p99'], '.2f')} ms, client {row['client_peak_cpu_percent']:.0f}%", file=sys.stderr)
            if row["passes"] and not limit:
                sustained = count
            elif not limit:
                reasons = []
                if row["connected"] < count:
                    reasons.append(f"{row['connected']}/{count} connected")
                if (row["echo_ratio"] or 0) < BAR["echo_ratio"]:
                    reasons.append(f"{100 * (row['echo_ratio'] or 0):.2f}% echoed")
                if (row["echo_ms_p99"] or 1e9) >= BAR["echo_p99_ms"]:
                    reasons.append(f"p99 {fmt(row['echo_ms_p99'], '.1f')} ms")
                if row["client_saturated"]:
                    reasons.append("load generator saturated")
                    client_limited = True
                limit = f"{count}: " + ", ".join(reasons)
        capacity[name] = {"sustained": sustained, "limit": limit or "none within the counts tried",
                          "client_limited": client_limited}
        print(f"{name}: setup…", file=sys.stderr)
        setup[name] = setup_runs(args.binary, make, args.singles, args.burst)

    text = tables(rows, capacity, setup)
    print(text)
    if args.output_dir:
        stamp = time.strftime("%Y-%m-%d")
        with open(os.path.join(args.output_dir, "benchmarks-transceiver-latest.json"), "w") as out:
            json.dump({"date": stamp, "rows": rows, "capacity": capacity, "setup": setup}, out, indent=1)
        for path in plots(rows, args.output_dir):
            print(f"wrote {path}", file=sys.stderr)
        update_markdown(os.path.join(args.output_dir, "benchmarks.md"), "bench-transceiver",
                        f"Latest run: {stamp} (`make bench-transceiver`; raw figures in "
                        "[benchmarks-transceiver-latest.json](benchmarks-transceiver-latest.json)).\n\n" + text)


if __name__ == "__main__":
    main()
