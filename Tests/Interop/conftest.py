"""Fixtures for the interop tests: a real `parley dev` process on free loopback ports.

These tests run inside a loopback-only network namespace (scripts/interop.sh creates it), so
neither Parley nor the browsers can reach anything but 127.0.0.1.
"""
import os
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PARLEY = os.environ.get("PARLEY_BIN", os.path.join(ROOT, ".build", "debug", "parley"))


def require(condition, reason):
    """A test's precondition (a tool installed, a capability held). `make test` installs and runs
    everything, so a missing one fails the test, not skips it: a skipped requirement would pass
    unseen. PARLEY_ALLOW_SKIP=1 makes it a skip, for a partial run on a machine without it."""
    if condition:
        return
    if os.environ.get("PARLEY_ALLOW_SKIP") == "1":
        pytest.skip(reason)
    pytest.fail(reason + " (set PARLEY_ALLOW_SKIP=1 to skip instead)")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The API key the tests' `parley dev` takes (as an app's server would hold it).
API_KEY = "sk_test_interop_0123456789abcdef"


def auth(key=API_KEY):
    return {"Authorization": "Bearer " + key}


class ParleyProcess:
    def __init__(self, http_port, media_port, log_path, extra_args=(), api_key=API_KEY):
        self.http_port = http_port
        self.media_port = media_port
        self.metrics_port = free_port()
        self.base = f"http://127.0.0.1:{http_port}"
        self.metrics_base = f"http://127.0.0.1:{self.metrics_port}"
        self.api_key = api_key
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [PARLEY, "dev", "--http-port", str(http_port), "--media-port", str(media_port), "--log-level", "debug",
             "--metrics-port", str(self.metrics_port), *(["--api-key", api_key] if api_key else []), *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("parley dev did not start:\n" + open(log_path).read())

    def headers(self):
        return auth(self.api_key) if self.api_key else {}

    def get_json(self, path):
        import json
        request = urllib.request.Request(self.base + path, headers=self.headers())
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def metrics(self):
        with urllib.request.urlopen(self.metrics_base + "/metrics", timeout=5) as response:
            return response.read().decode()

    def post_offer(self, sdp):
        request = urllib.request.Request(self.base + "/v1/realtime/calls", data=sdp.encode(), method="POST",
                                         headers={"Content-Type": "application/sdp", **self.headers()})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Location"), response.read().decode()

    def stop(self):
        """SIGTERM drains (live calls go on); a second one ends every call at once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
        self.log.close()

    def logs(self):
        return open(self.log_path).read()


@pytest.fixture
def parley_with(tmp_path):
    """Starts `parley dev` with extra arguments: `parley_with("--agent", "parrot")`."""
    started = []

    def start(*extra_args):
        process = ParleyProcess(free_port(), free_port(socket.SOCK_DGRAM), tmp_path / f"parley-{len(started)}.log", extra_args)
        started.append(process)
        return process
    yield start
    for process in started:
        process.stop()
        print(process.logs()[-4000:])


@pytest.fixture
def parley(tmp_path):
    process = ParleyProcess(free_port(), free_port(socket.SOCK_DGRAM), tmp_path / "parley.log")
    yield process
    process.stop()
    print(process.logs()[-4000:])
