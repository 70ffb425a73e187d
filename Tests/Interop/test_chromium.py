"""Headless Chromium calls `parley dev` through its own demo page and hears the echo."""
import os
import shutil
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ARTIFACTS = os.environ.get("PARLEY_ARTIFACTS", "/tmp/parley-interop")


def chromium():  # noqa: used by other interop tests too
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=900,900",
                 "--disable-features=WebRtcHideLocalIpsWithMdns"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def wait_for(driver, condition, timeout, what):
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = driver.execute_script("return window.parley")
        if state and condition(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; page state: {state}")


def test_chromium_call_echoes_audio(parley):
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver = chromium()
    try:
        driver.get(parley.base + "/?autostart=1")
        state = wait_for(driver, lambda s: s["state"] == "connected", 20, "connection state 'connected'")
        assert state["error"] is None
        call_id = state["callId"]
        assert call_id and call_id.startswith("rtc_")

        # At least 4 s of echoed audio (50 packets/s), none lost.
        state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 200, 20, "4 s of echoed audio")
        first = state["stats"]["packetsReceived"]
        time.sleep(1.5)
        state = driver.execute_script("return window.parley")
        assert state["stats"]["packetsReceived"] > first, "inbound-rtp packetsReceived keeps growing"
        assert state["stats"]["packetsLost"] == 0
        for step in ("offer", "answer", "ice", "dtls", "audio"):
            assert step in state["timings"], f"timeline has {step}"

        # The call goes through the relay (the browser talks to its public port), and the transceiver
        # sees the browser's real address, not the relay's.
        assert state["stats"]["remoteAddress"] == f"127.0.0.1:{parley.media_port}"
        call = parley.get_json(f"/v1/realtime/calls/{call_id}")
        assert call["state"] == "connected"
        assert call["client"].startswith(state["stats"]["localAddress"] + " via 127.0.0.1:"), call["client"]
        assert call["rtpReceived"] >= 200 and call["rtpSent"] >= 200

        # Round-trip time from RTCP reaches the browser's stats.
        state = wait_for(driver, lambda s: s["stats"].get("roundTripTime") is not None, 10, "RTCP round-trip time")

        # oai-events: messages of 1 B, 1 KiB, 64 KiB and 256 KiB (and a JSON text event) echoed byte for byte.
        state = wait_for(driver, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
        print(f"setup timeline (ms since Call): {state['timings']}; DTLS connected → oai-events open: "
              f"{state['timings']['channel'] - state['timings']['dtls']} ms")
        results = driver.execute_async_script(
            "const done = arguments[0]; window.parley.echoTest([1, 1024, 65536, 262144]).then(done, (e) => done(String(e)))")
        assert results == [{"size": 1, "ok": True}, {"size": 1024, "ok": True}, {"size": 65536, "ok": True},
                           {"size": 262144, "ok": True}, {"size": "text", "ok": True}], results
        call = parley.get_json(f"/v1/realtime/calls/{call_id}")
        assert call["dataChannelMessagesReceived"] == 5 and call["dataChannelMessagesSent"] == 5

        # ICE restart through PATCH: new credentials, the same call keeps its audio.
        driver.execute_async_script("const done = arguments[0]; window.parley.restartIce().then(() => done(), (e) => done(String(e)))")
        before = driver.execute_script("return window.parley.stats.packetsReceived")
        time.sleep(2)
        state = driver.execute_script("return window.parley")
        assert state["error"] is None
        assert state["iceRestarts"] == 1
        assert state["state"] == "connected"
        assert state["stats"]["packetsReceived"] > before + 50, "audio keeps flowing after the restart"
        call = parley.get_json(f"/v1/realtime/calls/{call_id}")
        assert call["iceRestarts"] == 1
        assert call["state"] == "connected"

        # Closing the channel closes it cleanly (stream reset both ways).
        driver.execute_script("window.parley.channel.close()")
        wait_for(driver, lambda s: s["channelState"] == "closed", 5, "the channel closed")

        driver.save_screenshot(os.path.join(ARTIFACTS, "chromium-call.png"))
        driver.execute_script("document.getElementById('hangup').click()")
        wait_for(driver, lambda s: s["state"] == "closed", 5, "hang up")
        time.sleep(0.5)
        with pytest.raises(Exception):
            parley.get_json(f"/v1/realtime/calls/{call_id}")
    finally:
        driver.quit()
