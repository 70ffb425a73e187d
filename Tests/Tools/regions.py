#!/usr/bin/env python3
"""regions.py: two Parley regions on one machine, joined by a link with real delay.

    sudo Tests/Tools/regions.py up [--one-way-ms 20] [--api-key KEY] [--state-dir DIR]
    sudo Tests/Tools/regions.py down [--state-dir DIR]

Region A is the network namespace the command runs in (named `regionA-<pid>` for the impairment
tool with `ip netns attach`); region B is a fresh namespace behind Tests/Tools/impair.py, with
--one-way-ms of delay each way (20 ms: a 40 ms round trip). Each region is a cluster with its own
routing key: region A runs relay A (public UDP on 127.0.0.1) and cluster 1's transceiver; region B
runs relay B, cluster 2's transceiver and a Redis. Both transceivers advertise relay A (a browser
here is in region A), and the relays forward each other's clusters (docs/global-relay.md):
calling cluster 2 enters at relay A and crosses the link (two-stage routing).

`up` prints one JSON line when everything answers ({"event": "ready", ...}: the signaling URLs, the
demo pages with a client secret valid for two hours, the relays' addresses), then a few lines for
people, and runs until SIGINT or SIGTERM, when it stops everything it started. `down` stops an
`up` whose state is in --state-dir (after a SIGKILL, say). Needs root (namespaces, TUN), a built
`parley` (.build/debug/parley, or $PARLEY_BIN), and redis-server. Python standard library only.

The test suite runs the same topology (Tests/Interop/test_global_relay.py imports `Topology`).
"""
import argparse
import json
import os
import select
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PARLEY = os.environ.get("PARLEY_BIN", os.path.join(ROOT, ".build", "debug", "parley"))
IMPAIR = os.path.join(HERE, "impair.py")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"{url} did not answer within {seconds} s")
            time.sleep(0.2)


class Topology:
    """The two regions, as processes. `start()` brings them up; `stop()` ends them."""

    def __init__(self, state_dir, one_way_ms=20, api_key=None, link=None, tcp=False):
        self.state_dir = str(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.one_way_ms = one_way_ms
        # impair.py's SPEC for both directions (loss, jitter, reordering…); default: the delay alone.
        self.link_spec = link or f"delay={one_way_ms}ms"
        self.api_key = api_key or "sk_regions_" + secrets.token_hex(16)
        self.processes = []
        self.link = None
        # ICE-TCP on both relays, on one port number (each region has its own addresses).
        self.tcp_port = free_port(socket.SOCK_STREAM) if tcp else 0
        tag = f"{os.getpid() % 100000}"
        self.ns_a, self.ns_b = f"regionA-{tag}", f"regionB-{tag}"

    def log_path(self, name):
        return os.path.join(self.state_dir, f"{name}.log")

    def spawn(self, name, arguments):
        process = subprocess.Popen(arguments, stdout=open(self.log_path(name), "w"), stderr=subprocess.STDOUT)
        process.log_path = self.log_path(name)
        self.processes.append(process)
        return process

    def start(self):
        subprocess.run(["ip", "netns", "attach", self.ns_a, str(os.getpid())], check=True)
        self.link = subprocess.Popen(
            [sys.executable, IMPAIR, "up", "--a", self.ns_a, "--b", self.ns_b,
             "--state-dir", os.path.join(self.state_dir, "impair"),
             "--both", self.link_spec, "--seed", "1", "--realtime", "10"],
            stdout=subprocess.PIPE, stderr=open(self.log_path("impair"), "w"), text=True)
        ready, _, _ = select.select([self.link.stdout], [], [], 10)
        info = json.loads(self.link.stdout.readline() or "{}") if ready else {}
        if info.get("event") != "ready":
            self.stop()
            raise RuntimeError("impair.py did not start: " + open(self.log_path("impair")).read())
        self.ip_a, self.ip_b = info["a"]["ipv4"], info["b"]["ipv4"]
        self.key_a, self.key_b = secrets.token_hex(32), secrets.token_hex(32)
        self.public_a, self.public_b, self.internal_a, self.internal_b = (free_port(socket.SOCK_DGRAM) for _ in range(4))
        self.http_a, self.http_b, self.redis_port = (free_port(socket.SOCK_STREAM) for _ in range(3))
        in_b = ["ip", "netns", "exec", self.ns_b]
        self.spawn("redis-b", in_b + ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--port", str(self.redis_port)])
        self.relay_a = self.spawn("relay-a", [PARLEY, "relay", "--routing-key", self.key_a, "--cluster-id", "1",
                               "--cluster-relay", f"2={self.ip_b}:{self.internal_b}", "--public-host", "127.0.0.1",
                               "--public-port", str(self.public_a), "--public-tcp-port", str(self.tcp_port), "--internal-host", "0.0.0.0",
                               "--internal-port", str(self.internal_a), "--worker-network", "127.0.0.0/8",
                               "--workers", "1", "--metrics-port", "0"])
        self.relay_b = self.spawn("relay-b", in_b + [PARLEY, "relay", "--routing-key", self.key_b, "--cluster-id", "2",
                                      "--cluster-relay", f"1={self.ip_a}:{self.internal_a}", "--public-host", self.ip_b,
                                      "--public-port", str(self.public_b), "--public-tcp-port", str(self.tcp_port), "--internal-host", "0.0.0.0",
                                      "--internal-port", str(self.internal_b), "--worker-network", "127.0.0.0/8",
                                      "--workers", "1", "--metrics-port", "0", "--redis", f"127.0.0.1:{self.redis_port}"])
        # A browser here is in region A: both clusters' answers send it to relay A, and relay B is
        # the other candidate (for a call into cluster 2, B's relay is reachable across the link).
        relays = ["--relay", f"a=127.0.0.1:{self.public_a}", "--relay", f"b={self.ip_b}:{self.public_b}", "--region", "a"]
        for name, prefix, key, cluster, http in (("transceiver-a", [], self.key_a, "1", self.http_a),
                                                 ("transceiver-b", in_b, self.key_b, "2", self.http_b)):
            self.spawn(name, prefix + [PARLEY, "transceiver", "--routing-key", key, "--cluster-id", cluster,
                                       "--http-host", "0.0.0.0", "--http-port", str(http), "--media-host", "127.0.0.1",
                                       "--media-port", "0", "--workers", "1", "--api-key", self.api_key,
                                       "--metrics-port", "0", "--demo-page", "--advertise-tcp-port", str(self.tcp_port), "--relay-network", "127.0.0.0/8",
                                       "--relay-network", f"{self.ip_a}/32", "--relay-network", f"{self.ip_b}/32", *relays])
        self.base_a, self.base_b = f"http://127.0.0.1:{self.http_a}", f"http://{self.ip_b}:{self.http_b}"
        for base in (self.base_a, self.base_b):
            wait_http(base + "/healthz")
        for process in self.processes:
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{process.log_path} exited: " + open(process.log_path).read()[-2000:])
        with open(os.path.join(self.state_dir, "regions.json"), "w") as f:
            json.dump({"pid": os.getpid(), "namespaces": [self.ns_a, self.ns_b]}, f)
        return self

    def mint(self, base, seconds=600, session=None):
        body = json.dumps({"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": session or {}}).encode()
        request = urllib.request.Request(base + "/v1/realtime/client_secrets", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer " + self.api_key})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["value"]

    def page(self, base, seconds=600):
        return f"{base}/?autostart=1&client_secret={self.mint(base, seconds)}"

    def info(self):
        return {
            "event": "ready", "api_key": self.api_key, "one_way_ms": self.one_way_ms,
            "regions": {
                "a": {"cluster": 1, "signaling": self.base_a, "page": self.page(self.base_a, 7200),
                      "relay": f"127.0.0.1:{self.public_a}", "namespace": self.ns_a},
                "b": {"cluster": 2, "signaling": self.base_b, "page": self.page(self.base_b, 7200),
                      "relay": f"{self.ip_b}:{self.public_b}", "namespace": self.ns_b},
            },
        }

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.link and self.link.poll() is None:
            self.link.terminate()
            try:
                self.link.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.link.kill()
        # The name only: region A is this process's own namespace and stays.
        subprocess.run(["ip", "netns", "delete", self.ns_a], stderr=subprocess.DEVNULL)


def down(state_dir):
    path = os.path.join(state_dir, "regions.json")
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        print(f"regions: nothing to stop ({path} is missing)")
        return 0
    try:
        os.kill(state["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    subprocess.run([sys.executable, IMPAIR, "down", "--a", state["namespaces"][0], "--b", state["namespaces"][1],
                    "--state-dir", os.path.join(state_dir, "impair")], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "delete", state["namespaces"][0]], stderr=subprocess.DEVNULL)
    os.remove(path)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--one-way-ms", type=int, default=20, help="delay each way between the regions (default 20)")
    parser.add_argument("--api-key", help="the API key both transceivers take (default: one is made)")
    parser.add_argument("--link", help="impair.py SPEC for both directions instead of the delay alone, "
                                       "e.g. delay=40ms,jitter=30ms,loss=5%%,reorder=2%%:20ms")
    parser.add_argument("--state-dir", default="/tmp/parley-regions", help="logs and state (default /tmp/parley-regions)")
    parser.add_argument("--tcp", action="store_true", help="ICE-TCP on both relays (one free port number) and in the answers")
    args = parser.parse_args(argv)
    if args.command == "down":
        return down(args.state_dir)
    topology = Topology(args.state_dir, args.one_way_ms, args.api_key, args.link, tcp=args.tcp)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    topology.start()
    try:
        info = topology.info()
        print(json.dumps(info), flush=True)
        a, b = info["regions"]["a"], info["regions"]["b"]
        print(f"""
  Two regions, {2 * args.one_way_ms} ms round trip between them. API key: {info['api_key']}

  region A (cluster 1, relay {a['relay']}): {a['page']}
  region B (cluster 2, relay {b['relay']}): {b['page']}

  Either page calls through relay A; region B's call crosses the link (two-stage routing). Region B's
  page is not on localhost: start Chromium with --unsafely-treat-insecure-origin-as-secure={b['signaling']}
  so it may use the microphone. Logs: {args.state_dir}. Ctrl-C stops everything.
""", file=sys.stderr, flush=True)
        while not stopping:
            time.sleep(0.5)
            if any(process.poll() is not None for process in topology.processes):
                print("regions: a process exited; stopping (logs in the state directory)", file=sys.stderr)
                break
    finally:
        topology.stop()
        state = os.path.join(args.state_dir, "regions.json")
        if os.path.exists(state):
            os.remove(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
