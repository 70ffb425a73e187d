#!/usr/bin/env python3
"""Agent-path benchmark: what the agent path adds to a call, in latency and CPU.

- latency: `parley load --opus-pulses` (real Opus, a loud 20 ms pulse each second, timed from send
  to heard in the decoded return) through three agents: `echo` (Opus frames straight back, nothing
  decoded), `loopback` in process (jitter buffer, Opus decode, output queue, Opus encode, pacing) and
  the same loopback as an external agent over the WebSocket protocol (examples/loopback_agent.py).
  Server and agent on core 0, load on core 1, loopback network: the figures are Parley's own share
  of mouth-to-ear latency (no network, no browser jitter buffer, no audio device).
- CPU with transcoding: server CPU per call with `loopback` (decode + encode every frame) against
  `echo`, and what that makes per core, next to libopus's own encode ceiling on this machine.

Usage: scripts/bench_agents.py [--seconds 10] [--output-dir docs]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

from benchlib import API_KEY, cpu_seconds, free_port, update_markdown, wait_until_healthy  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def start(command):
    return subprocess.Popen(["taskset", "-c", "0"] + command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def run(binary, agent, sessions, seconds):
    """One server (and agent) setup, `sessions` pulsed calls; returns the load report and server CPU %."""
    processes = []
    try:
        if agent == "websocket":
            port = free_port(socket.SOCK_STREAM)
            helper = start([sys.executable, os.path.join(ROOT, "examples", "loopback_agent.py"), "--port", str(port)])
            helper.stdout.readline()
            processes.append(helper)
            agent_argument = f"ws://127.0.0.1:{port}/"
        else:
            agent_argument = agent
        http, media = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        server = start([binary, "dev", "--direct", "--workers", "1", "--agent", agent_argument, "--http-port", str(http),
                        "--media-port", str(media), "--log-level", "error", "--api-key", API_KEY, "--metrics-port", "0"])
        processes.append(server)
        if not wait_until_healthy(f"http://127.0.0.1:{http}/healthz"):
            raise RuntimeError("parley dev did not start")
        ramp = min(4.0, sessions / 100)
        load = subprocess.Popen(["taskset", "-c", "1", binary, "load", "--url", f"http://127.0.0.1:{http}/v1/realtime/calls",
                                 "--sessions", str(sessions), "--duration", str(seconds + ramp + 3), "--ramp", str(ramp),
                                 "--opus-pulses"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(ramp + 2)
        pids = [p.pid for p in processes]
        cpu_start, wall_start = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
        time.sleep(seconds)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_start
        wall = time.monotonic() - wall_start
        report = json.loads(load.communicate(timeout=seconds * 3 + 120)[0])
        return report, 100 * cpu / wall
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "parley"))
    parser.add_argument("--output-dir")
    args = parser.parse_args()

    latency_rows = []
    for agent, label in (("echo", "echo (Opus straight back)"), ("loopback", "loopback, in process (decode + encode)"),
                         ("websocket", "loopback over the WebSocket protocol (Python agent)")):
        print(f"latency through {agent}…", file=sys.stderr)
        report, cpu = run(args.binary, agent, 10, args.seconds)
        pulses = report["audio"].get("pulseLatencyMilliseconds") or {}
        latency_rows.append((label, pulses.get("p50"), pulses.get("p99"), report["connected"]))

    cpu_rows = []
    for agent in ("echo", "loopback"):
        for sessions in (100, 200):
            print(f"CPU with {agent} at {sessions} calls…", file=sys.stderr)
            report, cpu = run(args.binary, agent, sessions, args.seconds)
            cpu_rows.append((agent, sessions, report["connected"], cpu, report["audio"]["echoRatio"],
                             report["client"]["saturated"]))

    lines = ["| agent path | pulse send → heard, p50 / p99 | calls |", "| --- | ---: | ---: |"]
    for label, p50, p99, connected in latency_rows:
        value = "–" if p50 is None else f"{p50:.1f} / {p99:.1f} ms"
        lines.append(f"| {label} | {value} | {connected} |")
    lines += ["", "| agent | calls | server CPU | CPU per call | calls per core at this rate | returned frames / sent | client |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for agent, sessions, connected, cpu, ratio, saturated in cpu_rows:
        lines.append(f"| {agent} | {sessions} ({connected} up) | {cpu:.1f}% | {cpu / sessions:.3f}% | {100 * sessions / cpu:,.0f} "
                     f"| {ratio:.3f} | {'saturated' if saturated else 'ok'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output_dir:
        update_markdown(os.path.join(args.output_dir, "benchmarks.md"), "bench-agents",
                        f"Latest run: {time.strftime('%Y-%m-%d')} (`make bench-agents`).\n\n" + text)


if __name__ == "__main__":
    main()
