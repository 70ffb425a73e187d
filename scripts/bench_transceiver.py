#!/usr/bin/env python3
"""Transceiver benchmark: server CPU and memory per session at 50 packets/s each way, and setup time,
for a range of session counts. The server (`parley dev`, one worker) and the load generator
(`parley load`) run as separate processes pinned to different cores; the server's CPU and memory
are read from /proc, so nothing of the client is counted.

Usage: scripts/bench_transceiver.py [--sessions 1,50,100,200,400] [--seconds 10] [--binary PATH]
Prints a table, and writes it (with the raw JSON) to --output when given.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from benchlib import cpu_seconds, free_port, rss_bytes  # noqa: E402





def run_one(binary, sessions, seconds, server_core, client_core):
    http_port, media_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    server = subprocess.Popen(["taskset", "-c", str(server_core), binary, "dev", "--workers", "1",
                               "--http-port", str(http_port), "--media-port", str(media_port), "--log-level", "error"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        baseline_rss = rss_bytes(server.pid)
        ramp = min(5.0, sessions / 100)
        load = subprocess.Popen(["taskset", "-c", str(client_core), binary, "load", "--url",
                                 f"http://127.0.0.1:{http_port}/v1/realtime/calls", "--sessions", str(sessions),
                                 "--duration", str(seconds + ramp + 2), "--ramp", str(ramp)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Measure the steady state: after every session has started and connected, for `seconds`.
        time.sleep(ramp + 2)
        cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
        time.sleep(seconds)
        cpu = cpu_seconds(server.pid) - cpu_start
        wall = time.monotonic() - wall_start
        steady_rss = rss_bytes(server.pid)
        output, _ = load.communicate(timeout=seconds * 3 + 120)
        report = json.loads(output)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {
        "sessions": sessions,
        "connected": report["connected"],
        "server_cpu_percent": 100 * cpu / wall,
        "server_cpu_percent_per_session": 100 * cpu / wall / sessions,
        "server_rss_mib": steady_rss / 2**20,
        "memory_per_session_kib": (steady_rss - baseline_rss) / 1024 / sessions,
        "setup_ms_p50": (report.get("setupMilliseconds") or {}).get("p50"),
        "setup_ms_p99": (report.get("setupMilliseconds") or {}).get("p99"),
        "echo_ratio": report["echoRatio"],
        "echo_latency_ms_p50": (report.get("echoLatencyMilliseconds") or {}).get("p50"),
        "echo_latency_ms_p99": (report.get("echoLatencyMilliseconds") or {}).get("p99"),
        "load": report,
    }


def table(rows):
    header = ("| sessions | connected | server CPU | CPU per session | server RSS | memory per session "
              "| setup p50 / p99 | echoed | echo latency p50 / p99 |\n"
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines = []
    for r in rows:
        lines.append(f"| {r['sessions']} | {r['connected']} | {r['server_cpu_percent']:.1f}% "
                     f"| {r['server_cpu_percent_per_session']:.3f}% | {r['server_rss_mib']:.1f} MiB "
                     f"| {r['memory_per_session_kib']:.0f} KiB | {r['setup_ms_p50']:.1f} / {r['setup_ms_p99']:.1f} ms "
                     f"| {100 * r['echo_ratio']:.2f}% | {r['echo_latency_ms_p50']:.2f} / {r['echo_latency_ms_p99']:.2f} ms |")
    return header + "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="1,50,100,200,400")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "parley"))
    parser.add_argument("--output")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    server_core, client_core = 0, (1 if cores > 1 else 0)
    rows = []
    for count in [int(n) for n in args.sessions.split(",")]:
        print(f"running {count} sessions…", file=sys.stderr)
        rows.append(run_one(args.binary, count, args.seconds, server_core, client_core))
    text = table(rows)
    print(text)
    if args.output:
        with open(args.output, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
