"""A call through `parley relay` backed by a real Redis survives the relay being killed and
restarted, a second relay process taking over the port, and Redis going away."""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import API_KEY, PARLEY, auth, free_port
from test_chromium import chromium, wait_for


def mint_secret(http_port, session=None, seconds=600, key=API_KEY):
    """A client secret from POST /v1/realtime/client_secrets."""
    import json
    body = json.dumps({"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": session or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/realtime/client_secrets", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **auth(key)})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["value"]


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class Stack:
    """Redis, a transceiver and relays, as separate processes on loopback. `redis_args` replaces
    the plain `--port` of the Redis server (TLS ports, passwords); None starts no Redis. With
    `key_file` (a path) every process reads its routing keys from that file (--routing-key-file)."""

    def __init__(self, tmp_path, redis_args=(), redis_port=None, key_file=None, tcp=False):
        self.tmp = tmp_path
        self.key = secrets.token_hex(32)
        self.key_arguments = ["--routing-key-file", str(key_file)] if key_file else ["--routing-key", self.key]
        self.redis_port = redis_port or free_port(socket.SOCK_STREAM)
        self.relay_port = free_port(socket.SOCK_DGRAM)
        # ICE-TCP: the relays listen on this port and answers advertise it (0: no TCP).
        self.tcp_port = free_port(socket.SOCK_STREAM) if tcp else 0
        self.http_port = free_port(socket.SOCK_STREAM)
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.processes = []
        self.redis = None
        if redis_args is not None:
            self.redis = self.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                              *(redis_args or ["--port", str(self.redis_port)])])
        self.transceiver = self.spawn("transceiver", [
            PARLEY, "transceiver", *self.key_arguments, "--http-port", str(self.http_port),
            "--media-host", "127.0.0.1", "--media-port", "0", "--workers", "1", "--api-key", API_KEY,
            "--metrics-port", str(free_port()), "--demo-page",
            "--relay-network", "127.0.0.0/8", "--advertise", f"127.0.0.1:{self.relay_port}",
            "--advertise-tcp-port", str(self.tcp_port)])
        wait_http(f"http://127.0.0.1:{self.http_port}/healthz")

    def page(self):
        """The transceiver's demo page with a client secret the test minted, as an app's server would."""
        return f"http://127.0.0.1:{self.http_port}/?autostart=1&client_secret={mint_secret(self.http_port)}"

    def spawn(self, name, arguments, env=None):
        path = self.tmp / f"{name}-{len(self.processes)}.log"
        log = open(path, "w")
        process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT, env=env)
        process.log_path = path
        self.processes.append(process)
        return process

    def relay(self, take_over=False, redis=None, extra=(), env=None, public_port=None):
        """A relay on the public port the transceiver advertises (or `public_port`), with
        `--redis redis` (default: this stack's plain Redis; "" for none, e.g. with PARLEY_REDIS_URL
        in `env`). Its metrics port is `process.metrics_port` (and `self.metrics_port`)."""
        self.relay_started = time.monotonic()
        self.metrics_port = free_port(socket.SOCK_STREAM)
        redis = f"127.0.0.1:{self.redis_port}" if redis is None else redis
        process = self.spawn("relay", [
            PARLEY, "relay", "--metrics-port", str(self.metrics_port)] + (["--take-over-port"] if take_over else []) + [
            *self.key_arguments, "--public-host", "127.0.0.1", "--public-tcp-port", str(self.tcp_port),
            "--public-port", str(public_port or self.relay_port), "--worker-network", "127.0.0.0/8", "--workers", "1",
            "--log-level", "debug"] + (["--redis", redis] if redis else []) + list(extra),
            env=None if env is None else dict(os.environ, **env))
        process.metrics_port = self.metrics_port
        time.sleep(0.5)
        assert process.poll() is None, "relay exited:\n" + process.log_path.read_text()
        return process

    # What AiortcCall (test_hostile.py) needs of a `parley dev`: the transceiver's signaling API.
    def post_offer(self, sdp):
        request = urllib.request.Request(self.base + "/v1/realtime/calls", data=sdp.encode(), method="POST",
                                         headers={"Content-Type": "application/sdp", **auth()})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Location"), response.read().decode()

    def get_json(self, path):
        request = urllib.request.Request(self.base + path, headers=auth())
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def logs(self):
        return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.tmp.glob("*.log")))


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    yield stack
    stack.stop()
    print(stack.logs())


def metrics_eventually(port, pattern, seconds=3):
    """Waits until the relay's /metrics has a line matching `pattern`; returns the match."""
    deadline = time.time() + seconds
    text = ""
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            return match
        time.sleep(0.2)
    raise AssertionError(f"no metric line matches {pattern}:\n{text}")


def metric(port, line_pattern):
    """The value of the relay's metric whose line (name and labels) matches `line_pattern`, or None."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(r"^" + line_pattern + r" ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def packets(driver):
    return driver.execute_script("return window.parley.stats.packetsReceived || 0")


def resumes_within(driver, seconds, start=None):
    """Seconds (from `start`, default now) until inbound audio grows again, or None."""
    start = start or time.monotonic()
    before = packets(driver)
    while time.monotonic() - start < seconds:
        time.sleep(0.05)
        if packets(driver) > before + 2:
            return time.monotonic() - start
    return None


def test_call_survives_relay_restart_second_relay_and_redis_loss(stack):
    relay = stack.relay()
    driver = chromium()
    try:
        driver.get(stack.page())
        wait_for(driver, lambda s: s["state"] == "connected", 20, "connected through the relay")
        wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 20, "echoed audio")
        time.sleep(0.5)  # the route reaches Redis asynchronously

        # 1. Kill the relay; start a new one on the same port. Audio resumes from the Redis route
        #    long before the browser's next consent check (every few seconds) could rebuild it.
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        time.sleep(0.3)
        relay = stack.relay()
        took = resumes_within(driver, 1.0, start=stack.relay_started)
        assert took is not None, "audio did not resume within 1 s of the new relay"
        print(f"audio resumed {took * 1000:.0f} ms after the new relay started")
        restarted_log = sorted(stack.tmp.glob("relay-*.log"))[-1].read_text()
        assert "route recovered from the store" in restarted_log, "recovered by Redis, not by a later check"

        # 2. A second relay process on the same port (SO_REUSEPORT); the first drains (SIGTERM: the
        #    call it carries goes on), then stops at once on a second SIGTERM; the call goes on.
        second = stack.relay(take_over=True)
        relay.send_signal(signal.SIGTERM)
        assert resumes_within(driver, 2.0) is not None, "audio stopped while the first relay drained"
        assert relay.poll() is None, "the first relay exited with a live call on its first SIGTERM"
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=10)
        assert resumes_within(driver, 2.0) is not None, "audio did not continue through the second relay"

        # The relay's own metrics (reported once a second): packets both ways, the store connected.
        metrics_eventually(stack.metrics_port, r'^parley_relay_packets_total\{direction="to_client"\} [1-9]')
        metrics_eventually(stack.metrics_port, r"^parley_relay_store_connected 1(\.0)?$")

        # 3. Redis hangs (stopped, its connections still open), then dies: the relay keeps
        #    forwarding what it knows either way.
        stack.redis.send_signal(signal.SIGSTOP)
        before = packets(driver)
        time.sleep(3)
        assert packets(driver) > before + 100, "the call stopped when Redis hung"
        stack.redis.send_signal(signal.SIGCONT)
        stack.redis.kill()
        stack.redis.wait()
        before = packets(driver)
        time.sleep(3)
        assert packets(driver) > before + 100, "the call stopped when Redis did"
        state = driver.execute_script("return window.parley")
        assert state["state"] == "connected"
        assert second.poll() is None
        metrics_eventually(stack.metrics_port, r"^parley_relay_store_connected 0(\.0)?$")
    finally:
        driver.quit()
