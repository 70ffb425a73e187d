"""A call through `parley relay` backed by a real Redis survives the relay being killed and
restarted, a second relay process taking over the port, and Redis going away."""
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
    """Redis, a transceiver and relays, as separate processes on loopback."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.key = secrets.token_hex(32)
        self.redis_port = free_port(socket.SOCK_STREAM)
        self.relay_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port(socket.SOCK_STREAM)
        self.processes = []
        self.redis = self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"])
        self.transceiver = self.spawn("transceiver", [
            PARLEY, "transceiver", "--routing-key", self.key, "--http-port", str(self.http_port),
            "--media-host", "127.0.0.1", "--media-port", "0", "--workers", "1", "--api-key", API_KEY,
            "--metrics-port", str(free_port()), "--demo-page",
            "--relay-network", "127.0.0.0/8", "--advertise", f"127.0.0.1:{self.relay_port}"])
        wait_http(f"http://127.0.0.1:{self.http_port}/healthz")

    def page(self):
        """The transceiver's demo page with a client secret the test minted, as an app's server would."""
        return f"http://127.0.0.1:{self.http_port}/?autostart=1&client_secret={mint_secret(self.http_port)}"

    def spawn(self, name, arguments):
        log = open(self.tmp / f"{name}-{len(self.processes)}.log", "w")
        process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def relay(self, take_over=False):
        self.relay_started = time.monotonic()
        self.metrics_port = free_port(socket.SOCK_STREAM)
        process = self.spawn("relay", [
            PARLEY, "relay", "--metrics-port", str(self.metrics_port)] + (["--take-over-port"] if take_over else []) + [
            "--routing-key", self.key, "--public-host", "127.0.0.1",
            "--public-port", str(self.relay_port), "--worker-network", "127.0.0.0/8", "--workers", "1",
            "--redis", f"127.0.0.1:{self.redis_port}", "--log-level", "debug"])
        time.sleep(0.5)
        assert process.poll() is None, "relay exited"
        return process

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
    """Waits until the relay's /metrics has a line matching `pattern`."""
    deadline = time.time() + seconds
    text = ""
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if re.search(pattern, text, re.MULTILINE):
            return
        time.sleep(0.2)
    raise AssertionError(f"no metric line matches {pattern}:\n{text}")


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

        # 2. A second relay process on the same port (SO_REUSEPORT); the first stops; the call goes on.
        second = stack.relay(take_over=True)
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
