"""The signaling API as something to put on the internet, against the real process: API keys and
client secrets (401, 403, expiry, a browser calling with a secret), calls owned by their credential
(404 to anyone else), rate limits (429 with Retry-After), live calls per key, HTTP timeouts and the
connection cap, no agent connection before ICE, metrics off the public port, the sideband, drain."""
import asyncio
import http.server
import json
import re
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import websockets
import websockets.sync.client

from conftest import API_KEY, PARLEY, ROOT as ROOT_DIR, auth, free_port
from test_agents import Bursts, Caller, metric
from test_chromium import chromium, wait_for, write_bursts
from test_signaling import CHROME, multipart

OTHER_KEY = "sk_test_other_key_fedcba9876543210"


def request(parley, method, path, body=None, headers=None, content_type=None):
    """(status, headers, body text) of one request; errors are answers too."""
    data = body.encode() if isinstance(body, str) else body
    fields = dict(headers or {})
    if content_type:
        fields["Content-Type"] = content_type
    try:
        with urllib.request.urlopen(urllib.request.Request(parley.base + path, data=data, method=method, headers=fields),
                                    timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def error_of(text):
    return json.loads(text)["error"]


def mint(parley, session=None, seconds=600, key=API_KEY):
    body = json.dumps({"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": session or {}})
    status, _, text = request(parley, "POST", "/v1/realtime/client_secrets", body, auth(key), "application/json")
    assert status == 200, text
    return json.loads(text)


def offer(parley, headers, sdp=CHROME, session=None):
    if session is None:
        return request(parley, "POST", "/v1/realtime/calls", sdp, headers, "application/sdp")
    body, content_type = multipart({"sdp": sdp, "session": json.dumps(session)})
    return request(parley, "POST", "/v1/realtime/calls", body, headers, content_type)


def test_no_credential_is_401_and_a_wrong_one_too(parley):
    for method, path in [("POST", "/v1/realtime/calls"), ("GET", "/v1/realtime/calls/rtc_x"),
                         ("DELETE", "/v1/realtime/calls/rtc_x"), ("POST", "/v1/realtime/client_secrets"),
                         ("POST", "/admin/drain")]:
        status, headers, text = request(parley, method, path, CHROME if method == "POST" else None, content_type="application/sdp")
        assert status == 401, (method, path, text)
        assert error_of(text)["code"] == "missing_credentials" and "Bearer" in error_of(text)["message"]
        assert headers["WWW-Authenticate"] == "Bearer"
    status, _, text = offer(parley, auth("sk_wrong_0000000000000000"))
    assert status == 401 and error_of(text)["code"] == "invalid_api_key"
    status, _, text = offer(parley, auth("ek_AQEnotasecret"))
    assert status == 401 and error_of(text)["code"] == "invalid_client_secret"
    # The health checks and the page need nothing.
    assert request(parley, "GET", "/healthz")[0] == 200 and request(parley, "GET", "/readyz")[0] == 200
    assert request(parley, "GET", "/")[0] == 200


def test_metrics_live_on_their_own_listener(parley):
    assert request(parley, "GET", "/metrics", headers=parley.headers())[0] == 404
    assert "parley_sessions_active" in parley.metrics()
    with urllib.request.urlopen(parley.metrics_base + "/readyz", timeout=5) as response:
        assert response.status == 200


def test_a_client_secret_fixes_the_session_and_cannot_do_what_a_key_does(parley):
    minted = mint(parley, {"agent": "parrot", "instructions": "be brief"}, seconds=60)
    assert minted["value"].startswith("ek_") and minted["session"]["agent"] == "parrot"
    assert abs(minted["expires_at"] - (time.time() + 60)) < 5
    secret = auth(minted["value"])
    # A multipart offer asking for the agent the secret allows: made, with that agent.
    status, headers, text = offer(parley, secret, session={"agent": "parrot"})
    assert status == 201, text
    call = json.loads(request(parley, "GET", headers["Location"], headers=secret)[2])
    # The browser holding the secret does not read the session sealed in it; the app's key does.
    assert call["agent"] == "parrot" and "session" not in call, call
    call = json.loads(request(parley, "GET", headers["Location"], headers=auth())[2])
    assert call["session"] == {"agent": "parrot", "instructions": "be brief"}
    # Another agent, or a setting the secret does not carry: 403, and no call; the refusal names
    # the field, never the sealed value.
    for session in ({"agent": "echo"}, {"voice": "alloy"}, {"instructions": "be long"}):
        status, _, text = offer(parley, secret, session=session)
        assert status == 403 and error_of(text)["code"] == "session_not_allowed", text
        assert "be brief" not in text, text
    # A raw SDP offer with the secret gets the secret's session.
    status, headers, _ = offer(parley, secret)
    assert status == 201
    assert json.loads(request(parley, "GET", headers["Location"], headers=secret)[2])["agent"] == "parrot"
    # A secret cannot mint secrets, drain, or open a sideband.
    status, _, text = request(parley, "POST", "/v1/realtime/client_secrets", "{}", secret, "application/json")
    assert status == 403 and error_of(text)["code"] == "api_key_required"
    assert request(parley, "POST", "/admin/drain", "", secret)[0] == 403
    # Minting checks what it is asked for.
    for body in ('{"session": {"agent": "oracle"}}', '{"expires_after": {"seconds": 5}}',
                 '{"expires_after": {"seconds": 99999}}', '{"expires_after": {"anchor": "now", "seconds": 60}}', "[]"):
        status, _, text = request(parley, "POST", "/v1/realtime/client_secrets", body, parley.headers(), "application/json")
        assert status == 400, (body, text)


def test_calls_belong_to_their_credential_and_others_get_404(parley_with):
    parley = parley_with("--api-key", OTHER_KEY)
    status, headers, _ = offer(parley, parley.headers())
    assert status == 201
    location = headers["Location"]
    missing = request(parley, "GET", "/v1/realtime/calls/rtc_0000000000000000", headers=auth(OTHER_KEY))
    for method in ("GET", "DELETE", "PATCH"):
        status, _, text = request(parley, method, location, CHROME if method == "PATCH" else None, auth(OTHER_KEY),
                                  "application/sdp" if method == "PATCH" else None)
        assert status == 404 and error_of(text)["code"] == "call_not_found", (method, text)
    assert missing[0] == 404 and error_of(missing[2])["code"] == "call_not_found"
    assert request(parley, "POST", location + "/hangup", "", auth(OTHER_KEY))[0] == 404
    assert request(parley, "GET", location, headers=parley.headers())[0] == 200

    # A call made with a secret: the secret and the key that minted it may touch it, another
    # secret of the same key may not.
    first, second = auth(mint(parley)["value"]), auth(mint(parley)["value"])
    status, headers, _ = offer(parley, first)
    assert status == 201
    assert request(parley, "GET", headers["Location"], headers=first)[0] == 200
    assert request(parley, "GET", headers["Location"], headers=second)[0] == 404
    assert request(parley, "GET", headers["Location"], headers=auth(OTHER_KEY))[0] == 404
    assert request(parley, "GET", headers["Location"], headers=parley.headers())[0] == 200
    assert request(parley, "DELETE", headers["Location"], headers=first)[0] == 204
    assert request(parley, "DELETE", location, headers=parley.headers())[0] == 204


def test_rate_limits_answer_429_with_retry_after(parley_with):
    parley = parley_with("--burst-per-address", "3", "--rate-per-address", "0.2")
    browser = auth(mint(parley)["value"])
    for _ in range(3):
        assert offer(parley, browser)[0] == 201
    status, headers, text = offer(parley, browser)
    assert status == 429, text
    assert error_of(text)["code"] == "rate_limit_exceeded" and "127.0.0.1" in error_of(text)["message"]
    assert 1 <= int(headers["Retry-After"]) <= 5
    # The app's server, with its API key, starts calls from its one address: bounded by the key's
    # limits, not the address's.
    assert offer(parley, parley.headers())[0] == 201
    # Guessing keys costs the same tokens: wrong keys run into the limit too.
    guesser = parley_with("--burst-per-address", "3", "--rate-per-address", "0.2")
    codes = [offer(guesser, auth(f"sk_guess_{n:020d}"))[0] for n in range(5)]
    assert codes == [401, 401, 401, 429, 429], codes
    assert 'code="rate_limit_exceeded"' in guesser.metrics()


def test_an_api_key_has_a_limit_of_live_calls(parley_with):
    parley = parley_with("--max-calls-per-key", "2")
    first = offer(parley, parley.headers())
    assert first[0] == 201 and offer(parley, parley.headers())[0] == 201
    status, _, text = offer(parley, parley.headers())
    assert status == 429 and "2 live calls" in error_of(text)["message"], text
    # Its client secrets' calls count against it too.
    assert offer(parley, auth(mint(parley)["value"]))[0] == 429
    assert request(parley, "DELETE", first[1]["Location"], headers=parley.headers())[0] == 204
    assert offer(parley, parley.headers())[0] == 201


def test_slow_and_idle_http_clients_are_cut_off(parley_with):
    parley = parley_with("--http-header-timeout", "1", "--http-body-timeout", "1", "--max-connections", "3",
                         "--max-connections-per-address", "10")
    # A head sent a byte at a time (slowloris) is closed about a second after connecting.
    slow = socket.create_connection(("127.0.0.1", parley.http_port))
    started = time.monotonic()
    closed_after = None
    for byte in b"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
        try:
            slow.sendall(bytes([byte]))
            slow.settimeout(0.1)
            if slow.recv(100) == b"":
                closed_after = time.monotonic() - started
                break
        except socket.timeout:
            continue
        except OSError:
            closed_after = time.monotonic() - started
            break
    assert closed_after is not None and 0.9 <= closed_after < 3, closed_after
    # A body that stops arriving: 408 within about a second.
    stalled = socket.create_connection(("127.0.0.1", parley.http_port))
    stalled.sendall(f"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                    f"Content-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n".encode())
    stalled.settimeout(5)
    started = time.monotonic()
    answer = stalled.recv(1000).decode()
    assert answer.startswith("HTTP/1.1 408") and "request_timeout" in answer, answer
    assert time.monotonic() - started < 3
    # Past the connection cap, a new connection waits until one closes.
    idle = [socket.create_connection(("127.0.0.1", parley.http_port)) for _ in range(3)]
    time.sleep(0.2)
    waiting = socket.create_connection(("127.0.0.1", parley.http_port))
    waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    waiting.settimeout(0.5)
    with pytest.raises(socket.timeout):
        waiting.recv(100)
    idle[0].close()
    waiting.settimeout(5)
    assert waiting.recv(100).startswith(b"HTTP/1.1 200")
    for connection in idle[1:] + [waiting, slow, stalled]:
        connection.close()


def test_one_address_holds_at_most_its_share_of_connections(parley_with):
    parley = parley_with("--max-connections-per-address", "2")
    held = [socket.create_connection(("127.0.0.1", parley.http_port)) for _ in range(2)]
    time.sleep(0.2)
    third = socket.create_connection(("127.0.0.1", parley.http_port))
    third.settimeout(3)
    try:
        third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert third.recv(100) == b"", "a third connection from one address was served"
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert 'parley_signaling_refusals_total{code="too_many_connections"} 1' in parley.metrics()
    held[0].close()
    time.sleep(0.2)
    again = socket.create_connection(("127.0.0.1", parley.http_port))
    again.settimeout(3)
    again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert again.recv(100).startswith(b"HTTP/1.1 200")
    for connection in held[1:] + [third, again]:
        connection.close()


class AgentCounter:
    """A WebSocket agent that accepts every session and counts its connections."""

    def __init__(self):
        self.port = free_port()
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self.run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def run(self, ready):
        async def handle(socket):
            self.connections += 1
            await socket.recv()
            await socket.send(json.dumps({"type": "session.accept", "sample_rate": 16000}))
            async for _ in socket:
                pass

        async def main():
            async with websockets.serve(handle, "127.0.0.1", self.port):
                ready.set()
                await asyncio.Future()
        self.loop.run_until_complete(main())


def test_no_agent_connection_before_the_clients_first_authenticated_check(parley_with):
    agent = AgentCounter()
    parley = parley_with("--agent", f"ws://127.0.0.1:{agent.port}/")
    for _ in range(10):
        assert offer(parley, parley.headers())[0] == 201
    time.sleep(1)
    assert agent.connections == 0, "a bare POST opened an agent connection"
    assert metric(parley, "parley_agent_connections_total") == 0

    async def call():
        caller = Caller(parley, Bursts([(1, False)]))
        await caller.start()
        await asyncio.sleep(0.5)
        await caller.pc.close()
    asyncio.run(call())
    assert agent.connections == 1
    assert metric(parley, "parley_agent_connections_total") == 1


def test_a_browser_calls_with_a_client_secret_until_it_expires(parley):
    """The app's server mints a secret (10 s, the shortest) with its key; Chromium calls with it;
    the call lives on past the expiry, but the secret makes no call after it."""
    minted = mint(parley, {"agent": "echo"}, seconds=10)
    page = f"{parley.base}/?autostart=1&client_secret={minted['value']}"
    driver = chromium()
    try:
        driver.get(page)
        wait_for(driver, lambda s: s["state"] == "connected", 20, "connected with the client secret")
        call_id = driver.execute_script("return window.parley.callId")
        time.sleep(max(0, minted["expires_at"] - time.time()) + 0.5)
        status, _, text = offer(parley, auth(minted["value"]))
        assert status == 401 and error_of(text)["code"] == "client_secret_expired", text
        before = driver.execute_script("return window.parley.stats.packetsReceived")
        time.sleep(1)
        assert driver.execute_script("return window.parley.stats.packetsReceived") > before + 30, "the live call went on"
        assert request(parley, "GET", f"/v1/realtime/calls/{call_id}", headers=parley.headers())[0] == 200
        # The page with the expired secret says why it cannot call.
        driver.get(page)
        state = wait_for(driver, lambda s: s["error"] is not None, 10, "the page's error")
        assert "401" in state["error"] and "client_secret_expired" in state["error"], state["error"]
    finally:
        driver.quit()


def test_the_sideband_sees_the_call_and_can_talk_to_it_and_end_it(parley_with, tmp_path):
    """The app's server opens GET /v1/realtime?call_id= with its key while Chromium calls the parrot:
    it hears the call's state, what the page sends on oai-events and what the agent sends it,
    sends the page an event, updates the session, and hangs the call up."""
    parley = parley_with()
    wav = tmp_path / "bursts.wav"
    write_bursts(wav)
    driver = chromium("--use-file-for-fake-audio-capture=" + str(wav))
    try:
        driver.get(parley.base + "/?autostart=1&agent=parrot")
        wait_for(driver, lambda s: s["channelState"] == "open", 20, "oai-events open")
        call_id = driver.execute_script("return window.parley.callId")
        url = f"ws://127.0.0.1:{parley.http_port}/v1/realtime?call_id={call_id}"

        # Refused ones say why, in the close code (4000 + the HTTP status).
        for headers, code in [({}, 4401), (auth(OTHER_KEY + "x"), 4401)]:
            with websockets.sync.client.connect(url, additional_headers=headers) as refused:
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        refused.recv(timeout=5)
                assert closed.value.rcvd.code == code
        with websockets.sync.client.connect(url.replace(call_id, "rtc_nope"), additional_headers=parley.headers()) as refused:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    refused.recv(timeout=5)
            assert closed.value.rcvd.code == 4404
        # A plain GET is told what the upgrade would meet.
        assert request(parley, "GET", f"/v1/realtime?call_id={call_id}", headers=parley.headers())[0] == 426

        with websockets.sync.client.connect(url, additional_headers=parley.headers()) as sideband:
            first = json.loads(sideband.recv(timeout=5))
            assert first == {"type": "call.state", "call_id": call_id, "state": "connected"}, first
            driver.execute_script("window.parley.channel.send(JSON.stringify({type: 'page.hello', n: 1}))")
            seen, deadline = [], time.time() + 15
            def agent_types():
                return [e["event"]["type"] for e in seen if e["type"] == "call.agent_message"]
            while time.time() < deadline and not (
                    any(e["type"] == "call.client_message" for e in seen) and "output_audio_buffer.started" in agent_types()):
                seen.append(json.loads(sideband.recv(timeout=15)))
            client = next(e for e in seen if e["type"] == "call.client_message")
            assert client["label"] == "oai-events" and client["event"] == {"type": "page.hello", "n": 1}
            # The parrot's own turn events and Parley's output_audio_buffer.* events for it.
            assert "parrot.turn" in agent_types() and "output_audio_buffer.started" in agent_types(), agent_types()

            sideband.send(json.dumps({"type": "call.send", "event": {"type": "app.notice", "text": "hi"}}))
            wait_for(driver, lambda s: any(e.get("type") == "app.notice" for e in s["events"]), 5, "the app's event")
            sideband.send(json.dumps({"type": "session.update", "session": {"instructions": "shorter"}}))
            sideband.send(json.dumps({"type": "nonsense"}))
            # Other events (the parrot's) may come between: read until both answers are in.
            replies, deadline = [], time.time() + 10
            while time.time() < deadline and not (any(r["type"] == "session.updated" for r in replies)
                                                  and any(r["type"] == "error" for r in replies)):
                replies.append(json.loads(sideband.recv(timeout=max(0.1, deadline - time.time()))))
            updated = next(r for r in replies if r["type"] == "session.updated")
            assert updated["session"] == {"agent": "parrot", "instructions": "shorter"}
            assert any(r["type"] == "error" and r["error"]["code"] == "invalid_message" for r in replies)

            sideband.send(json.dumps({"type": "call.hangup", "reason": "done here"}))
            ended = None
            while ended is None:
                event = json.loads(sideband.recv(timeout=5))
                if event["type"] == "call.state" and event["state"] == "ended":
                    ended = event
            assert "done here" in ended["reason"]
            with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                sideband.recv(timeout=5)
        wait_for(driver, lambda s: s["state"] in ("closed", "failed", "disconnected"), 40, "the page's call ended")
        assert request(parley, "GET", f"/v1/realtime/calls/{call_id}", headers=parley.headers())[0] == 404
        assert "parley_sidebands_opened_total" in parley.metrics()
    finally:
        driver.quit()


def test_sigterm_drains_while_the_live_call_goes_on(parley):
    """SIGTERM during a live Chromium call: /readyz 503 at once (both listeners), new offers 503,
    the call's audio goes on for 10 s, and the process exits once the call hangs up."""
    driver = chromium()
    try:
        driver.get(parley.base + "/?autostart=1")
        wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 50, 20, "echoed audio")
        parley.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert request(parley, "GET", "/readyz")[0] == 503
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(parley.metrics_base + "/readyz", timeout=5)
        assert refused.value.code == 503
        assert request(parley, "GET", "/healthz")[0] == 200
        status, headers, text = offer(parley, parley.headers())
        assert status == 503 and error_of(text)["code"] == "draining" and headers["Retry-After"], text
        before = driver.execute_script("return window.parley.stats.packetsReceived")
        time.sleep(10)
        after = driver.execute_script("return window.parley.stats.packetsReceived")
        assert after - before >= 450, f"audio while draining: {after - before} packets in 10 s"
        assert parley.process.poll() is None, "exited with a live call"
        driver.execute_script("document.getElementById('hangup').click()")
        parley.process.wait(timeout=5)
        assert parley.process.returncode == 0
        assert "drained: no calls left" in parley.logs()
    finally:
        driver.quit()


def test_a_second_sigterm_ends_every_call_at_once(parley):
    """POST /admin/drain (a preStop hook), then SIGTERM (the kubelet's): still one drain, the call
    goes on; a second SIGTERM ends it at once."""
    async def call():
        caller = Caller(parley, Bursts([(1, False)]))
        await caller.start()
        assert request(parley, "POST", "/admin/drain", "", parley.headers())[0] in (200, 202, 204)
        await asyncio.sleep(0.3)
        parley.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert parley.process.poll() is None, "a drain request and one SIGTERM ended the process"
        assert "SIGTERM while draining: still draining" in parley.logs()
        started = time.monotonic()
        parley.process.send_signal(signal.SIGTERM)
        while parley.process.poll() is None and time.monotonic() - started < 5:
            await asyncio.sleep(0.05)
        assert parley.process.poll() == 0, "the second SIGTERM did not end the process"
        assert time.monotonic() - started < 3
        await caller.pc.close()
    asyncio.run(call())
    logs = parley.logs()
    assert "the second termination signal: ending every call now" in logs
    assert re.search(r"calls=1 .*ending the calls still live", logs), logs[-3000:]


def test_dev_makes_and_prints_a_key_and_a_transceiver_needs_one(parley_with):
    from conftest import ParleyProcess
    import tempfile
    log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
    zero = ParleyProcess(free_port(), free_port(socket.SOCK_DGRAM), log, api_key=None)
    try:
        banner = zero.logs()
        assert "API key     sk_parley_" in banner and "made for this run" in banner, banner[-1500:]
        key = banner.split("API key     ")[1].split()[0]
        assert offer(zero, auth(key))[0] == 201
        assert offer(zero, {})[0] == 401
    finally:
        zero.stop()
    refused = subprocess.run([PARLEY, "transceiver", "--routing-key", "00" * 32, "--http-port", str(free_port())],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "--api-key" in refused.stderr and "--insecure-no-auth" in refused.stderr, refused.stderr


class Transceivers:
    """`parley transceiver` processes of one cluster (one routing key, one set of API keys), as
    pods behind one Service: a call made on one is answered for on the others."""

    def __init__(self, tmp_path, count=3):
        import secrets as random_secrets
        self.key = random_secrets.token_hex(32)
        self.processes, self.bases = [], []
        for index in range(count):
            http_port, metrics_port = free_port(), free_port()
            log = open(tmp_path / f"transceiver-{index}.log", "w")
            process = subprocess.Popen([
                PARLEY, "transceiver", "--routing-key", self.key, "--http-port", str(http_port), "--media-port", "0",
                "--workers", "1", "--api-key", API_KEY, "--api-key", OTHER_KEY, "--metrics-port", str(metrics_port),
                "--relay-network", "127.0.0.0/8", "--trusted-proxy", "127.0.0.0/8", "--advertise", "127.0.0.1:3478",
                "--log-level", "debug"], stdout=log, stderr=subprocess.STDOUT)
            process.log_path = tmp_path / f"transceiver-{index}.log"
            self.processes.append(process)
            self.bases.append(type("Pod", (), {"base": f"http://127.0.0.1:{http_port}", "http_port": http_port,
                                               "metrics_port": metrics_port})())
        from test_relay_recovery import wait_http
        for pod in self.bases:
            wait_http(pod.base + "/healthz")

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for process in self.processes:
            print(f"--- {process.log_path.name}\n" + process.log_path.read_text()[-3000:])


def test_any_transceiver_answers_for_a_call_another_one_owns(tmp_path):
    """The Service in front of the transceivers sends a call's later requests to any pod: the one
    that does not hold the call forwards them to the owner its call id names (once), and the answer
    comes back as the owner gave it: GET, PATCH (an ICE restart), the sideband, DELETE."""
    pods = Transceivers(tmp_path)
    try:
        a, b, c = pods.bases
        status, headers, answer = offer(a, auth())
        assert status == 201, answer
        call_id = headers["Location"].rsplit("/", 1)[1]
        # rtc_ and a sealed token, URL-safe (no '+' or '/').
        assert re.fullmatch(r"rtc_[A-Za-z0-9_-]{32}", call_id), call_id

        status, _, text = request(b, "GET", f"/v1/realtime/calls/{call_id}", headers=auth())
        assert status == 200, text
        assert json.loads(text)["id"] == call_id
        # The owner still decides who may see the call: another key gets the owner's 404.
        status, _, text = request(b, "GET", f"/v1/realtime/calls/{call_id}", headers=auth(OTHER_KEY))
        assert status == 404 and error_of(text)["code"] == "call_not_found", text
        # A bad credential is refused where it arrives, never forwarded.
        assert request(b, "GET", f"/v1/realtime/calls/{call_id}", headers=auth("sk_wrong_0123456789abcdef"))[0] == 401

        # An ICE restart through the other pod: a new answer with new credentials, from the owner.
        restart = re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:rst1", CHROME)
        restart = re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:restartpasswordrestartpass", restart)
        status, _, renegotiated = request(b, "PATCH", f"/v1/realtime/calls/{call_id}", restart, auth(), "application/sdp")
        assert status == 200, renegotiated
        ufrag = lambda sdp: re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)  # noqa: E731
        assert ufrag(renegotiated) != ufrag(answer)
        state = json.loads(request(a, "GET", f"/v1/realtime/calls/{call_id}", headers=auth())[2])
        assert state["iceRestarts"] == 1, state

        # The sideband through the other pod: the owner's events, and a command that reaches the call.
        url = f"ws://127.0.0.1:{b.http_port}/v1/realtime?call_id={call_id}"
        with websockets.sync.client.connect(url, additional_headers=auth()) as sideband:
            first = json.loads(sideband.recv(timeout=5))
            assert first["type"] == "call.state" and first["call_id"] == call_id, first
            sideband.send(json.dumps({"type": "session.update", "session": {"instructions": "via b"}}))
            reply = json.loads(sideband.recv(timeout=5))
            assert reply["type"] == "session.updated" and reply["session"]["instructions"] == "via b", reply
        # Refusals from the owner keep their close code (4404: the owner holds no such call for this
        # key). The owner sends its 101, the acknowledgement, an error, its close frame and FIN at
        # once: ten in a row, since a client upgrader that lost what came with the 101 failed some.
        for _ in range(10):
            with websockets.sync.client.connect(url, additional_headers=auth(OTHER_KEY)) as refused:
                assert json.loads(refused.recv(timeout=5))["error"]["code"] == "call_not_found"
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    refused.recv(timeout=5)
                assert closed.value.rcvd.code == 4404

        # Only a transceiver can mark a request as forwarded (a seal with the transceivers' key,
        # for that one request): a client's own mark is refused.
        status, _, text = request(b, "GET", f"/v1/realtime/calls/{call_id}", headers={**auth(), "X-Parley-Forwarded": "1"})
        assert status == 401 and error_of(text)["code"] == "invalid_forward", text

        # What a forward carries: a seal, never the client's credential. A call id naming a server
        # that is not a Parley transceiver (as a dead pod's address may by now) learns nothing, and
        # its answer (without the seal's nonce, which only the key opens) is not passed on.
        import importlib.util
        spec = importlib.util.spec_from_file_location("reference", os.path.join(ROOT_DIR, "scripts", "routing-token-reference.py"))
        reference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reference)
        seen = []

        class Impostor(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                seen.append(dict(self.headers))
                self.send_response(418)
                self.send_header("Content-Length", "0")
                self.end_headers()
        impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
        threading.Thread(target=impostor.serve_forever, daemon=True).start()

        def call_id_naming(host, port):
            token = reference.seal(bytes.fromhex(pods.key), 0, 0, host, port, int((time.time() - 1_704_067_200) // 3600), 7, purpose=1)
            return "rtc_" + token.replace("+", "-").replace("/", "_")
        try:
            status, _, _ = request(b, "GET", f"/v1/realtime/calls/{call_id_naming('127.0.0.1', impostor.server_address[1])}",
                                   headers=auth())
            assert status == 502 and len(seen) == 1, (status, seen)
            assert "Authorization" not in seen[0] and seen[0]["X-Parley-Forwarded"].startswith("fw_"), seen[0]
            # An id naming an address outside the transceivers' network (--trusted-proxy) is not followed.
            assert request(b, "GET", f"/v1/realtime/calls/{call_id_naming('192.0.2.7', 8080)}", headers=auth())[0] == 404
            assert len(seen) == 1
        finally:
            impostor.shutdown()
            impostor.server_close()

        # Ids that are not this cluster's sealed ones are nobody's: 404 at once.
        forged = "rtc_" + "A" * 32
        assert request(b, "GET", f"/v1/realtime/calls/{forged}", headers=auth())[0] == 404
        assert request(b, "GET", "/v1/realtime/calls/rtc_0123456789abcdef", headers=auth())[0] == 404

        # Hung up through the other pod: gone on both, and a sideband open through that pod hears the
        # owner's "call ended" (its events, then close 1000) as the owner sent it.
        with websockets.sync.client.connect(url, additional_headers=auth()) as watching:
            assert json.loads(watching.recv(timeout=5))["type"] == "call.state"
            assert request(b, "DELETE", f"/v1/realtime/calls/{call_id}", headers=auth())[0] == 204
            with pytest.raises(websockets.exceptions.ConnectionClosed) as ended:
                while True:
                    watching.recv(timeout=5)
            assert ended.value.rcvd.code == 1000, ended.value
        assert request(a, "GET", f"/v1/realtime/calls/{call_id}", headers=auth())[0] == 404
        assert request(b, "GET", f"/v1/realtime/calls/{call_id}", headers=auth())[0] == 404
        # b forwarded GET, GET (another key's), PATCH, the sideband 1 + 10 + 1 times, DELETE and the
        # last GET to the owner, and one GET to the impostor, which did not count as an answer.
        from test_relay_recovery import metric as metric_at
        assert metric_at(b.metrics_port, 'parley_signaling_forwarded_total{outcome="answered"}') == 17
        assert metric_at(b.metrics_port, 'parley_signaling_forwarded_total{outcome="unreachable"}') == 1
        assert "sideband forwarded to the call's transceiver" in pods.processes[1].log_path.read_text()

        # A pod that stops (a drain with no calls of its own ends at once) closes the sidebands it
        # forwards for other pods' calls with 1012, "connect again", instead of dropping them.
        status, headers, _ = offer(a, auth())
        call_id = headers["Location"].rsplit("/", 1)[1]
        with websockets.sync.client.connect(f"ws://127.0.0.1:{c.http_port}/v1/realtime?call_id={call_id}",
                                            additional_headers=auth()) as sideband:
            assert json.loads(sideband.recv(timeout=5))["type"] == "call.state"
            pods.processes[2].send_signal(signal.SIGTERM)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    sideband.recv(timeout=10)
            assert closed.value.rcvd.code == 1012, closed.value
        assert pods.processes[2].wait(timeout=10) == 0
        # The call itself lives on at its owner.
        assert request(a, "GET", f"/v1/realtime/calls/{call_id}", headers=auth())[0] == 200

        # The owner gone (its pod ended): the other answers 502, saying so, instead of hanging.
        status, headers, answer = offer(a, auth())
        call_id = headers["Location"].rsplit("/", 1)[1]
        pods.processes[0].kill()
        pods.processes[0].wait()
        started = time.monotonic()
        status, _, text = request(b, "GET", f"/v1/realtime/calls/{call_id}", headers=auth())
        assert status == 502 and error_of(text)["code"] == "call_owner_unreachable", text
        assert time.monotonic() - started < 5
    finally:
        pods.stop()
