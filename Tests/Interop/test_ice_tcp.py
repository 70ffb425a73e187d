"""ICE-TCP (issue 15): clients on a network that drops UDP to the relay reach it over TCP
(RFC 6544, RFC 4571 frames) on the relay's public TCP port, and the call works as over UDP."""
import json
import re
import socket
import struct
import time
import urllib.request

from conftest import free_port
from test_chromium import DroppedUDP, chromium, wait_for

SIZES = [1, 1024, 65536, 262144]
ECHOED = [{"size": size, "ok": True} for size in SIZES] + [{"size": "text", "ok": True}]


def candidates(answer):
    audio = answer.split("m=application")[0]
    return re.findall(r"^a=candidate:(\S+) 1 (udp|tcp) (\d+) (\S+) (\d+) typ host(.*)$", audio, re.MULTILINE)


def test_chromium_falls_back_to_tcp_when_udp_is_dropped(parley_with):
    parley = parley_with()
    with DroppedUDP("ip", parley.media_port) as drop:
        driver = chromium()
        try:
            started = time.time()
            driver.get(parley.base + "/?autostart=1")
            state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 30, "2 s of echoed audio over TCP")
            assert state["error"] is None
            answer = driver.execute_script("return window.parley.pc.remoteDescription.sdp")
            found = candidates(answer)
            assert [(transport, address, int(port)) for _, transport, _, address, port, _ in found] == [
                ("udp", "127.0.0.1", parley.media_port), ("tcp", "127.0.0.1", parley.media_port)], answer
            assert found[1][5].split()[:2] == ["tcptype", "passive"], found[1]
            assert int(found[0][2]) > int(found[1][2]), "TCP below UDP"
            assert drop.dropped() > 0, "Chromium tried UDP first"
            pair = driver.execute_script("""
                const report = await window.parley.pc.getStats();
                for (const s of report.values()) if (s.type === "transport" && s.selectedCandidatePairId) {
                    const pair = report.get(s.selectedCandidatePairId);
                    const local = report.get(pair.localCandidateId), remote = report.get(pair.remoteCandidateId);
                    return {local: local.protocol + " " + (local.tcpType || ""), remote: remote.protocol + " " + remote.port};
                }
                return null;""")
            assert pair == {"local": "tcp active", "remote": f"tcp {parley.media_port}"}, pair
            call = parley.get_json(f"/v1/realtime/calls/{state['callId']}")
            assert call["state"] == "connected"
            state = wait_for(driver, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
            print(f"ICE-TCP setup (ms since Call): {state['timings']}, wall {time.time() - started:.1f} s")
            results = driver.execute_async_script(
                "const done = arguments[0]; window.parley.echoTest(%s).then(done, (e) => done(String(e)))" % json.dumps(SIZES))
            assert results == ECHOED, results
            before = driver.execute_script("return window.parley.stats.packetsReceived")
            time.sleep(1.5)
            assert driver.execute_script("return window.parley.stats.packetsReceived") > before + 50, "audio keeps flowing"
        finally:
            driver.quit()
    metrics = parley.metrics()
    assert re.search(r'parley_relay_packets_total\{direction="to_client"\} [1-9]', metrics), metrics
