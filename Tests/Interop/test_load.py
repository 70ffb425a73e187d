"""Smoke of `parley load` against `parley dev` (through the relay): a few sessions for a few
seconds must connect, get every audio frame and data-channel event echoed, and report every setup
step. The full benchmark (make bench) is not a CI step; this keeps the generator and the server's
echo path from breaking unnoticed."""
import json
import re
import subprocess

from conftest import API_KEY, PARLEY


def run_load(url, sessions, seconds, *extra):
    result = subprocess.run([PARLEY, "load", "--url", url, "--sessions", str(sessions), "--duration", str(seconds),
                             "--ramp", "0.5", "--api-key", API_KEY, *extra], capture_output=True, text=True, timeout=90)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_load_smoke_echoes_audio_and_events(parley):
    code, report, progress = run_load(parley.base + "/v1/realtime/calls", 4, 3)
    assert code == 0, progress
    assert report["connected"] == 4 and report["failed"] == 0, report["failures"]
    audio = report["audio"]
    # 3 s at 50 frames/s per session, all echoed by the echo agent, none missing in the echoed stream.
    assert audio["packetsSent"] >= 4 * 140
    assert audio["echoRatio"] >= 0.99, audio
    assert audio["packetsLost"] == 0
    assert 0 < audio["echoLatencyMilliseconds"]["p50"] < 50
    channel = report["dataChannel"]
    assert channel["opened"] == 4
    assert channel["messagesSent"] >= 4 * 2 and channel["messagesEchoed"] == channel["messagesSent"]
    setup = report["setup"]
    # Each step follows the one before it.
    assert setup["answer"]["p50"] <= setup["ice"]["p50"] <= setup["dtls"]["p50"] <= setup["firstEchoedAudio"]["p50"]
    assert setup["dtls"]["p50"] <= setup["dataChannelOpen"]["p50"]
    assert report["roundTripMilliseconds"]["p50"] > 0
    assert report["client"]["saturated"] is False
    assert "connected 4" in progress  # the progress line: elapsed time, connecting, connected, failed
    assert re.search(r"^\s*\d+\.\ds sessions \d+/4 connecting \d+ connected \d+ channels \d+ failed 0 ", progress, re.M), progress


def test_load_warp_starts_sctp_with_dtls_and_needs_no_dcep(parley):
    """`parley load --warp`: SNAP in every offer and oai-events negotiated on stream 0 (?dcid=0);
    Parley answers in kind, so each session's channel opens with SCTP, and events echo."""
    code, report, progress = run_load(parley.base + "/v1/realtime/calls", 4, 2, "--warp")
    assert code == 0, progress
    assert report["connected"] == 4 and report["failed"] == 0, report["failures"]
    channel = report["dataChannel"]
    assert channel["opened"] == 4 and channel["startedWithSNAP"] == 4, channel
    assert channel["messagesSent"] >= 4 and channel["messagesEchoed"] == channel["messagesSent"], channel
    # Open the moment DTLS is (no DCEP round trip): both steps are stamped at the same instant.
    assert report["setup"]["dataChannelOpen"]["p50"] == report["setup"]["dtls"]["p50"], report["setup"]
    assert report["audio"]["echoRatio"] >= 0.99


def test_load_without_data_channel_offers_audio_only(parley):
    code, report, progress = run_load(parley.base + "/v1/realtime/calls", 2, 2, "--no-data-channel")
    assert code == 0, progress
    assert report["connected"] == 2 and report["audio"]["echoRatio"] >= 0.99
    assert report["dataChannel"]["opened"] == 0 and report["dataChannel"]["messagesSent"] == 0
    assert "dataChannelOpen" not in report["setup"]


def test_load_reports_a_refused_offer_and_fails(parley):
    code, report, _ = run_load(parley.base + "/v1/realtime/nowhere", 2, 1)
    assert code == 1
    assert report["connected"] == 0 and report["failed"] == 2
    assert any("HTTP 404" in failure for failure in report["failures"]), report["failures"]
