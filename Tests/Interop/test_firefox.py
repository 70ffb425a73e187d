"""Headless Firefox (its own ICE, NSS DTLS and usrsctp data channels) calls `parley dev` through
the demo page, hears the echo and gets its data-channel messages back.

There is no geckodriver in Debian, so Firefox is driven over its Marionette protocol."""
import contextlib
import shutil
import time

import pytest
from marionette_driver import marionette

# Installed by scripts/install-deps.sh test: missing, the test fails rather than skips.
FIREFOX = shutil.which("firefox-esr") or "/usr/bin/firefox-esr"

# A loopback-only namespace: fake devices, loopback candidates, and microphone permission (without
# it Firefox gathers only the default-route address, and there is none here).
PREFS = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.peerconnection.ice.loopback": True,
    "permissions.default.microphone": 1,
    "media.autoplay.default": 0,
    "marionette.port": 2830,
}


# Marionette's scripts see the page through an Xray wrapper: the page's own globals are on
# `window.wrappedJSObject`.
PAGE = "window.wrappedJSObject.parley"


@contextlib.contextmanager
def firefox(tmp_path, port=PREFS["marionette.port"], **prefs):
    """Headless Firefox over Marionette with PREFS (and `prefs`), its log in `tmp_path`; yields the client."""
    client = marionette.Marionette(host="127.0.0.1", port=port, bin=FIREFOX, headless=True,
                                   prefs=dict(PREFS, **{"marionette.port": port}, **prefs), startup_timeout=90,
                                   gecko_log=str(tmp_path / f"gecko-{port}.log"))
    try:
        client.start_session()
        client.timeout.script = 60
        yield client
    finally:
        try:
            client.delete_session()
        except Exception:
            pass
        client.cleanup()


def echo_test(client, sizes):
    """The page's data-channel echo test (sizes in bytes, then a JSON text event), its results."""
    return client.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"{PAGE}.echoTest({list(sizes)}).then((r) => done(JSON.parse(JSON.stringify(r))), (e) => done(String(e)))")


def page_state(client):
    return client.execute_script(f"return {PAGE} ? JSON.parse(JSON.stringify({PAGE})) : null")


def wait_for(client, condition, timeout, what):
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = page_state(client)
        if state and condition(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; page state: {state}")


def test_firefox_call_echoes_audio_and_data(parley, tmp_path):
    # Firefox's own log goes to the test's temporary folder, not the working directory.
    with firefox(tmp_path) as client:
        client.navigate(parley.base + "/?autostart=1")
        state = wait_for(client, lambda s: s["state"] == "connected", 30, "connection state 'connected'")
        assert state["error"] is None
        call_id = state["callId"]

        state = wait_for(client, lambda s: s["stats"].get("packetsReceived", 0) >= 200, 20, "4 s of echoed audio")
        assert state["stats"].get("packetsLost", 0) == 0
        call = parley.get_json(f"/v1/realtime/calls/{call_id}")
        assert call["state"] == "connected"
        print("Firefox's DTLS:", call.get("dtlsVersion"), call.get("dtlsLibrary"))
        assert call["dtlsVersion"] in ("DTLS 1.2", "DTLS 1.3") and call["dtlsLibrary"] == "boringssl", call
        assert call["rtpReceived"] >= 200 and call["rtpSent"] >= 200

        # oai-events over Firefox's usrsctp: 1 B to 256 KiB and a JSON event, echoed byte for byte.
        wait_for(client, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
        results = echo_test(client, [1, 1024, 65536, 262144])
        assert results == [{"size": 1, "ok": True}, {"size": 1024, "ok": True}, {"size": 65536, "ok": True},
                           {"size": 262144, "ok": True}, {"size": "text", "ok": True}], results
        call = parley.get_json(f"/v1/realtime/calls/{call_id}")
        assert call["dataChannelMessagesReceived"] == 5 and call["dataChannelMessagesSent"] == 5
        assert call.get("dataChannelTransportClosed") is None

        client.execute_script(f"{PAGE}.channel.close()")
        wait_for(client, lambda s: s["channelState"] == "closed", 5, "the channel closed")
        client.execute_script("document.getElementById('hangup').click()")
        wait_for(client, lambda s: s["state"] == "closed", 5, "hang up")
        time.sleep(0.5)
        with pytest.raises(Exception):
            parley.get_json(f"/v1/realtime/calls/{call_id}")
