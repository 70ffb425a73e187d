"""Signaling against the real process: bad offers get a 4xx with a reason and create nothing."""
import json
import os
import re
import urllib.error
import urllib.request

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "ParleyWireTests", "Fixtures")
CHROME = open(os.path.join(FIXTURES, "chrome.sdp")).read()
WARP = open(os.path.join(FIXTURES, "chrome-warp.sdp")).read()
WARP_INIT = "AQAAHu7QVMUAUAAA/////4YO4QzAAAAEgAgABoLA"


def post(parley, body, content_type="application/sdp", query="", headers=None):
    request = urllib.request.Request(parley.base + "/v1/realtime/calls" + query, data=body if isinstance(body, bytes) else body.encode(),
                                     method="POST", headers={"Content-Type": content_type,
                                                             **(parley.headers() if headers is None else headers)})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def multipart(fields, boundary="parleyboundary7"):
    """A multipart/form-data body (what `curl -F` sends) and its content type."""
    body = b""
    for name, value in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").encode() + value.encode() + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def sessions_created(parley):
    text = parley.metrics()
    match = re.search(r"^parley_sessions_created_total(?:\{\})? (\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("body, content_type, status, reason", [
    pytest.param(*case, id=name) for name, case in [
    ("garbage", ("garbage", "application/sdp", 400, "does not start with v=0")),
    ("empty", ("", "application/sdp", 400, "empty")),
    ("no-audio", (CHROME.replace("m=audio", "m=video"), "application/sdp", 400, "no audio")),
    ("no-opus", (CHROME.replace("opus/48000/2", "speex/48000/2"), "application/sdp", 400, "Opus")),
    ("no-fingerprint", (CHROME.replace("a=fingerprint:", "a=x-fingerprint:"), "application/sdp", 400, "fingerprint")),
    ("no-ice-pwd", (CHROME.replace("a=ice-pwd:", "a=x-ice-pwd:"), "application/sdp", 400, "ice-ufrag/ice-pwd")),
    ("wrong-content-type", (CHROME, "text/plain", 415, "application/sdp")),
    ("multipart-without-sdp", (*multipart({"session": "{}"}), 400, "sdp part")),
    ("multipart-bad-session", (*multipart({"sdp": CHROME, "session": "[1]"}), 400, "JSON object")),
    ("multipart-no-boundary", (b"x", "multipart/form-data", 400, "boundary")),
    ("too-large", ("v=0\r\n" + "a=x\r\n" * 20000, "application/sdp", 413, "larger than")),
    ("not-utf8", (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=\xff\xfe\r\n", "application/sdp", 400, "not valid SDP text")),
    # SNAP: an a=sctp-init that is not base64, or base64 of something other than an SCTP INIT chunk.
    ("sctp-init-not-base64", (WARP.replace(WARP_INIT, "not*base64"), "application/sdp", 400, "sctp-init")),
    ("sctp-init-not-an-init", (WARP.replace(WARP_INIT, "AgAAHu7QVMUAUAAA/////4YO4QzAAAAEgAgABoLA"), "application/sdp", 400,
                               "not an SCTP INIT chunk")),
    ("sctp-init-zero-tag", (WARP.replace(WARP_INIT, "AQAAHgAAAAAAUAAA/////4YO4QzAAAAEgAgABoLA"), "application/sdp", 400,
                            "not an SCTP INIT chunk")),
]])
def test_bad_offers_get_a_4xx_with_a_reason_and_create_nothing(parley, body, content_type, status, reason):
    code, text = post(parley, body, content_type)
    assert code == status, text
    assert reason in json.loads(text)["error"]["message"]
    assert sessions_created(parley) in (None, 0), "a refused offer created a session"


def test_an_unknown_agent_is_refused_with_the_choices(parley):
    code, text = post(parley, *multipart({"sdp": CHROME, "session": '{"agent":"oracle"}'}))
    assert code == 400
    assert "unknown agent oracle" in json.loads(text)["error"]["message"] and "parrot" in text
    assert json.loads(text)["error"]["code"] == "unknown_agent"
    assert sessions_created(parley) in (None, 0)
    code, _ = post(parley, *multipart({"sdp": CHROME, "session": '{"agent":"parrot"}'}))
    assert code == 201
    # The query parameter that once chose an agent chooses nothing any more.
    code, _ = post(parley, CHROME, query="?agent=oracle")
    assert code == 201


def test_good_offer_creates_exactly_one_call_and_delete_ends_it(parley):
    status, location, answer = parley.post_offer(CHROME)
    assert status == 201
    assert sessions_created(parley) == 1
    assert "a=ice-lite" in answer and "a=setup:passive" in answer
    assert parley.get_json(location)["state"] == "waiting_for_ice"
    request = urllib.request.Request(parley.base + location, method="DELETE", headers=parley.headers())
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204
    with pytest.raises(urllib.error.HTTPError) as error:
        parley.get_json(location)
    assert error.value.code == 404


def test_unknown_call_is_404(parley):
    request = urllib.request.Request(parley.base + "/v1/realtime/calls/rtc_nope", method="DELETE", headers=parley.headers())
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 404


def test_cors_preflight_allows_another_origin(parley):
    request = urllib.request.Request(parley.base + "/v1/realtime/calls", method="OPTIONS", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers.get("Access-Control-Allow-Origin") == "*"
        assert "POST" in response.headers.get("Access-Control-Allow-Methods")
        assert "authorization" in response.headers.get("Access-Control-Allow-Headers").lower()


def test_startup_refuses_ports_in_use_with_a_clear_message_and_prints_a_banner(parley):
    """A second `parley dev` on the same UDP port used to start and share it (SO_REUSEPORT), and
    calls then failed at random: now it is refused, saying which port and what to do; an HTTP port
    in use is said just as plainly. The one that runs says where to go and what it runs."""
    import subprocess
    from conftest import PARLEY, free_port
    banner = parley.logs()
    assert f"open http://127.0.0.1:{parley.http_port}/ and press Call" in banner, banner[-2000:]
    assert "agent       echo" in banner and f"127.0.0.1:{parley.media_port}" in banner
    same_udp = subprocess.run([PARLEY, "dev", "--http-port", str(free_port()), "--media-port", str(parley.media_port)],
                              capture_output=True, text=True, timeout=30)
    assert same_udp.returncode != 0
    assert f"UDP 127.0.0.1:{parley.media_port} is already in use" in same_udp.stderr, same_udp.stderr
    assert "--take-over-port" in same_udp.stderr and "Usage" not in same_udp.stderr
    same_http = subprocess.run([PARLEY, "dev", "--http-port", str(parley.http_port), "--media-port", "0"],
                               capture_output=True, text=True, timeout=30)
    assert same_http.returncode != 0
    assert f"cannot listen for HTTP on 127.0.0.1:{parley.http_port}: address already in use" in same_http.stderr, same_http.stderr
    # Calls still work on the first one: nothing took its port.
    status, _ = post(parley, CHROME)
    assert status == 201


def test_a_malformed_routing_key_is_explained():
    import subprocess
    from conftest import PARLEY
    result = subprocess.run([PARLEY, "transceiver", "--routing-key", "abcd"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "expected 64 hex characters" in result.stderr and "openssl rand -hex 32" in result.stderr, result.stderr


def test_public_host_any_address_takes_calls_and_advertises_a_reachable_one(parley_with):
    """`--public-host 0.0.0.0` (parley dev on a remote machine): the relay binds every address and
    the answer advertises this host's addresses (here, in a loopback-only namespace, 127.0.0.1)."""
    parley = parley_with("--public-host", "0.0.0.0")
    status, location, answer = parley.post_offer(CHROME)
    assert status == 201
    assert f"127.0.0.1 {parley.media_port} typ host" in answer, answer
    assert "0.0.0.0" not in answer.split("a=candidate")[1]


def test_a_snap_calls_reoffer_must_repeat_its_sctp_init(parley):
    """SNAP: one SCTP association per call, so a re-offer (an ICE restart) must carry the same
    a=sctp-init; it gets the same one of Parley's back. A changed or missing one is a 400."""
    def send(method, path, body):
        request = urllib.request.Request(parley.base + path, data=body.encode(), method=method,
                                         headers={"Content-Type": "application/sdp", **parley.headers()})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers.get("Location"), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, None, error.read().decode()

    status, location, answer = send("POST", "/v1/realtime/calls", WARP)
    assert status == 201, answer
    ours = re.search(r"a=sctp-init:(\S+)", answer).group(1)
    assert ours != WARP_INIT
    restart = re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:rst1", re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:restartpassword0123456789", WARP))
    status, _, again = send("PATCH", location, restart)
    assert status == 200, again
    assert re.search(r"a=sctp-init:(\S+)", again).group(1) == ours
    for changed in (restart.replace(WARP_INIT, "AQAAHgECAwQAUAAA/////4YO4QzAAAAEgAgABoLA"),
                    restart.replace("a=sctp-init:" + WARP_INIT + "\n", "")):  # read with universal newlines
        status, _, refused = send("PATCH", location, changed)
        assert status == 400 and "sctp-init" in json.loads(refused)["error"]["message"], refused


def test_a_dcid_that_names_no_usable_stream_is_refused(parley):
    """?dcid=N (a negotiated oai-events): outside 0-1023, not a plain number, for an offer without a
    data channel, or beyond the streams the offer's a=sctp-init gives: 400 invalid_dcid, no call."""
    audio_only = re.sub(r"a=group:BUNDLE 0 1", "a=group:BUNDLE 0", CHROME.split("m=application")[0])
    few_streams = WARP.replace(WARP_INIT, "AQAAHu7QVMUAUAAAAAQABIYO4QzAAAAEgAgABoLA")  # 4 streams each way
    for dcid, body in (("1024", CHROME), ("-1", CHROME), ("x", CHROME), ("+5", CHROME), ("0", audio_only), ("4", few_streams)):
        code, text = post(parley, body, query="?dcid=" + dcid)
        assert code == 400 and json.loads(text)["error"]["code"] == "invalid_dcid", (dcid, text)
    assert sessions_created(parley) in (None, 0)
    code, text = post(parley, few_streams, query="?dcid=3")
    assert code == 201, text
