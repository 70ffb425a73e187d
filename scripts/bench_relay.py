#!/usr/bin/env python3
"""Relay benchmark: Parley's relay side by side with a minimal C forwarder (recvmmsg/sendmmsg),
in the same run, on the same machine.

The forwarder under test runs pinned to core 0; the load (Benchmarks/relay/udpbench.c: client
sockets plus an echo backend) runs on core 1. Each client datagram crosses the forwarder twice
(to the backend and back), so forwarded packets/s = 2 × echoed packets/s.
  - maximum: 1,000 flows, as fast as a window of outstanding packets allows, 10 s;
  - fixed load: 500 flows at 25,000 packets/s each way (50,000 forwarded/s, 500 calls at
    50 packets/s each way), 10 s: the forwarder's CPU from /proc and round-trip latency.
Parley's flows are set up as real ones: an ICE check with a routing token first, committed by
the backend's answer, then payload by lookup. The Parley relay's ICE-TCP path runs the same two
loads over TCP connections (RFC 4571 frames), in the same run.

Usage: scripts/bench_relay.py [--binary .build/release/parley] [--seconds 10] [--output-dir docs]
"""
import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
from benchlib import cpu_seconds, free_port, rss_bytes, update_markdown  # noqa: E402




def build_tools(out):
    os.makedirs(out, exist_ok=True)
    for name in ("forwarder", "udpbench"):
        subprocess.run(["gcc", "-O2", "-o", os.path.join(out, name), os.path.join(ROOT, "Benchmarks", "relay", f"{name}.c")],
                       check=True)


def client(tools, port, flows, rate, seconds, ufrag, mode="client"):
    arguments = ["taskset", "-c", "1", os.path.join(tools, "udpbench"), mode, str(port), str(flows), str(rate), str(seconds)]
    if ufrag:
        arguments.append(ufrag)
    return subprocess.run(arguments, check=True, capture_output=True, text=True, timeout=seconds * 4 + 60)


def measure(name, tools, start_subject, ufrag_for, seconds, tcp=False):
    backend_port, public_port = free_port(), free_port()
    backend = subprocess.Popen(["taskset", "-c", "1", os.path.join(tools, "udpbench"), "backend", str(backend_port),
                                "prefix" if name == "c" else "tunnel"])
    subject = start_subject(public_port, backend_port)
    time.sleep(1.0)
    mode = "tcpclient" if tcp else "client"
    try:
        # Fresh sessions' tokens for each run: the first run's routes are still live at the relay.
        maximum = json.loads(client(tools, public_port, 1000, 0, seconds, ufrag_for(backend_port), mode).stdout)
        ufrag = ufrag_for(backend_port)
        cpu0, wall0 = cpu_seconds(subject.pid), time.monotonic()
        fixed_run = client(tools, public_port, 500, 25000, seconds, ufrag, mode)
        cpu = (cpu_seconds(subject.pid) - cpu0) / (time.monotonic() - wall0)
        fixed = json.loads(fixed_run.stdout)
    finally:
        subject.terminate()
        backend.terminate()
        subject.wait(timeout=10)
        backend.wait(timeout=10)
    return {
        "forwarder": name,
        "max_forwarded_per_second": 2 * maximum["received_per_second"],
        "max_echo_ratio": maximum["received"] / max(1, maximum["sent"]),
        "cpu_percent_at_50k": 100 * cpu,
        "fixed_echo_ratio": fixed["received"] / max(1, fixed["sent"]),
        "rtt_us_p50_at_50k": fixed["rtt_us_p50"],
        "rtt_us_p99_at_50k": fixed["rtt_us_p99"],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "parley"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--output-dir", help="write the JSON and the table in docs/benchmarks.md there")
    args = parser.parse_args()
    tools = os.path.join(ROOT, ".build", "bench-relay")
    build_tools(tools)
    key = secrets.token_hex(32)

    def c_forwarder(public_port, backend_port):
        return subprocess.Popen(["taskset", "-c", "0", os.path.join(tools, "forwarder"), str(public_port), "127.0.0.1",
                                 str(backend_port)])

    def parley_relay(public_port, backend_port, tcp_port=0):
        return subprocess.Popen(["taskset", "-c", "0", args.binary, "relay", "--routing-key", key, "--public-host", "127.0.0.1",
                                 "--public-port", str(public_port), "--public-tcp-port", str(tcp_port),
                                 "--workers", "1", "--worker-network", "127.0.0.0/8",
                                 "--metrics-port", "0", "--log-level", "error",
                                 "--drain-timeout", "0"])  # SIGTERM stops it at once: nothing to drain here

    def token(backend_port):
        # One session's token per 8 flows: a session commits at most 8 routes at the relay (relay.md).
        return ",".join(subprocess.run([args.binary, "token", "--routing-key", key, "--worker", f"127.0.0.1:{backend_port}"],
                                       check=True, capture_output=True, text=True).stdout.strip() for _ in range(125))

    rows = []
    print("running the C forwarder…", file=sys.stderr)
    rows.append(measure("c", tools, c_forwarder, lambda _: None, args.seconds))
    print("running the Parley relay…", file=sys.stderr)
    rows.append(measure("parley", tools, parley_relay, token, args.seconds))
    print("running the Parley relay's ICE-TCP path…", file=sys.stderr)
    # The TCP port is the one the client is given: the UDP port gets another.
    rows.append(measure("parley-tcp", tools, lambda port, backend: parley_relay(free_port(), backend, tcp_port=port),
                        token, args.seconds, tcp=True))
    c, parley, tcp = rows
    lines = ["| forwarder | forwarded packets/s (max, 1 core) | CPU at 50k packets/s | RTT p50 / p99 at 50k | echoed at 50k |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        label = {"c": "C, recvmmsg/sendmmsg", "parley": "Parley relay (1 worker)",
                 "parley-tcp": "Parley relay, ICE-TCP (1 event loop)"}[row["forwarder"]]
        lines.append(f"| {label} | {row['max_forwarded_per_second']:,.0f} | {row['cpu_percent_at_50k']:.1f}% "
                     f"| {row['rtt_us_p50_at_50k']} / {row['rtt_us_p99_at_50k']} µs | {100 * row['fixed_echo_ratio']:.2f}% |")
    lines.append(f"| Parley / C | {parley['max_forwarded_per_second'] / c['max_forwarded_per_second']:.2f}× "
                 f"| {parley['cpu_percent_at_50k'] / max(0.1, c['cpu_percent_at_50k']):.2f}× | | |")
    lines.append(f"| Parley TCP / Parley UDP | {tcp['max_forwarded_per_second'] / max(1, parley['max_forwarded_per_second']):.2f}× "
                 f"| {tcp['cpu_percent_at_50k'] / max(0.1, parley['cpu_percent_at_50k']):.2f}× | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output_dir:
        with open(os.path.join(args.output_dir, "benchmarks-relay-latest.json"), "w") as out:
            json.dump(rows, out, indent=2)
        update_markdown(os.path.join(args.output_dir, "benchmarks.md"), "bench-relay",
                        f"Latest run: {time.strftime('%Y-%m-%d')} (`make bench-relay`; raw figures in "
                        "[benchmarks-relay-latest.json](benchmarks-relay-latest.json)).\n\n" + text)


if __name__ == "__main__":
    main()
