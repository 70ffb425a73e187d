"""Pion (Go, v3 from Debian's sources) calls `parley dev`: a full-ICE agent in the controlling role,
the way most native apps call, with an Opus track and the `oai-events` data channel. The client is
Tests/Interop/pionclient (built once per session); it reports each setup step, the media both
ways, its connection-state changes and the STUN Binding requests it sent, as JSON.

Pion's ICE sends no Binding request after connecting while media flows both ways (its keepalive
runs only after 2 s without traffic), so against an ICE-lite server nothing refreshes consent
unless the server checks on its own: the 90-second call is what shows that Parley keeps such a
call (RFC 7675 consent expires after 30 s without an authenticated check).

`start_pion_call` returns the client's Popen without waiting, so a long call can run beside other
work (another test's call on the same `parley dev`) and be collected with `pion_report`.
"""
import asyncio
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import require
from test_hostile import long_aiortc_call

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_SOURCE = os.path.join(HERE, "pionclient")
GOCODE = "/usr/share/gocode"  # Debian's Go sources (golang-github-pion-webrtc.v3-dev)
PION_SOURCES = os.path.join(GOCODE, "src", "github.com", "pion", "webrtc")


@pytest.fixture(scope="session")
def pion_client(tmp_path_factory):
    """The pionclient binary, built offline against Debian's Pion: a GOPATH build (no modules, no
    proxy) like scripts/bench_transceiver.py's reference server."""
    require(shutil.which("go") and os.path.isdir(PION_SOURCES),
            "Pion tests need Go and Debian's Pion v3 sources: "
            "apt-get install golang-go golang-github-pion-webrtc.v3-dev (scripts/install-deps.sh test)")
    work = tmp_path_factory.mktemp("pionclient")
    gopath = work / "gopath"
    shutil.copytree(CLIENT_SOURCE, gopath / "src" / "pionclient")
    binary = work / "pionclient"
    environment = dict(os.environ, GO111MODULE="off", GOPATH=f"{gopath}:{GOCODE}", GOPROXY="off", GOFLAGS="",
                       GOCACHE=str(work / "gocache"))
    build = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=gopath / "src" / "pionclient",
                           env=environment, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"building pionclient failed:\n{build.stdout}{build.stderr}"
    return str(binary)


def start_pion_call(client, parley, seconds, *extra_args):
    """Starts pionclient against `parley` for one call of `seconds` (or more: extra_args such as
    "-calls", "10") and returns at once with its Popen; `pion_report` collects the result."""
    return subprocess.Popen([client, "-url", parley.base + "/v1/realtime/calls", "-seconds", str(seconds), "-json",
                             "-api-key", parley.api_key or "", *extra_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def pion_report(process, timeout, keep=None):
    """Waits for a client started by `start_pion_call`: (exit code, its JSON report, its stderr).
    With `keep` (a path), the report and stderr are also written there (.json, .log)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"pionclient still running after {timeout} s:\n{stderr[-4000:]}")
    if keep is not None:
        with open(f"{keep}.json", "w") as report, open(f"{keep}.log", "w") as log:
            report.write(stdout)
            log.write(stderr)
    try:
        return process.returncode, json.loads(stdout), stderr
    except json.JSONDecodeError:
        raise AssertionError(f"pionclient exited {process.returncode} without a report:\n{stdout}\n{stderr[-4000:]}")


def session_endings(parley):
    """Parley's log lines about calls ending (why: consent_expired, hangup, …), for failure messages."""
    return "\n".join(line for line in parley.logs().splitlines() if re.search(r"session closed|consent|ended", line))


def test_pion_call_sets_up_and_echoes_audio_and_events(parley, pion_client):
    code, call, stderr = pion_report(start_pion_call(pion_client, parley, 5), timeout=60)
    assert code == 0 and call["ok"], (call.get("failures"), stderr[-2000:])
    setup = call["setupMs"]
    # Each step follows the one before it; the echo agent answers the first frame at once.
    assert 0 < setup["answer"] <= setup["iceConnected"] <= setup["connected"] <= setup["firstEchoedAudio"]
    assert setup["connected"] <= setup["dataChannelOpen"]
    assert setup["firstEchoedAudio"] < 2000, setup
    # The DTLS handshake takes a few ms on loopback; a lost first flight costs Pion's 1 s retransmit.
    assert setup["connected"] - setup["iceConnected"] < 500, setup
    audio = call["audio"]
    assert audio["packetsSent"] >= 240 and audio["echoRatio"] >= 0.99 and audio["foreign"] == 0, audio
    channel = call["dataChannel"]
    assert channel["opened"] and channel["sent"] >= 5 and channel["echoed"] == channel["sent"], channel
    # Parley's view agrees: the call was still up when the client asked, and saw our checks.
    server = call["server"]["body"]
    assert server["state"] == "connected", server
    assert server["rtpReceived"] >= audio["packetsSent"] - 5
    assert 0 < server["checksAnswered"] <= call["stun"]["requestsSent"], (server, call["stun"])


def test_pion_call_lasts_90_seconds_with_audio_both_ways(parley, pion_client, tmp_path):
    """Past the 30 s consent timeout: Parley must keep a call whose client sends no consent checks
    while media flows (Pion), which an ICE-lite server can do only by checking on its own.

    An aiortc call of the same length runs beside it on the same `parley dev` (a different ICE
    stack, one that does send consent checks, and answers Parley's): it too must stay connected for
    the 90 s (its own connection state and Parley's status every 5 s) with echoed audio decoded in
    every 10 s window."""
    seconds = 90
    process = start_pion_call(pion_client, parley, seconds)
    try:
        side = asyncio.run(long_aiortc_call(parley, seconds))
    finally:
        code, call, stderr = pion_report(process, timeout=seconds + 60, keep=tmp_path / "pion-call")
    why = (f"failures: {call.get('failures')}; dropped: {call.get('dropped')}; last echo at second "
           f"{call['audio']['lastEchoSecond']}; states: {call['states']}; STUN: {call['stun']}; "
           f"server: {call.get('server')}\nparley: {session_endings(parley)}")
    assert "dropped" not in call, why
    assert call["connectedSeconds"] >= seconds - 1, why
    audio = call["audio"]
    assert audio["packetsSent"] >= (seconds - 1) * 50, why
    assert audio["echoRatio"] >= 0.9 and (audio["lastEchoSecond"] or 0) >= seconds - 1, why
    assert call["dataChannel"]["echoed"] == call["dataChannel"]["sent"] >= seconds - 1, why
    assert code == 0 and call["ok"], why
    # The aiortc call beside it (a 20 ms frame every ~21.5 ms: about 460 frames per 10 s window).
    print(f"aiortc call beside Pion: held {side['heldSeconds']:.1f} s, echoed frames per 10 s {side['windows']}, "
          f"states {side['states']}, Parley's last status {side['final']}")
    why = f"aiortc: {side}\nparley: {session_endings(parley)}"
    assert side["heldSeconds"] >= seconds - 1 and side["states"][-1] == "connected", why
    assert not {"disconnected", "failed", "closed"} & set(side["states"]), why
    assert all(status is not None and status["state"] == "connected" for status in side["statuses"]), why
    assert side["final"] is not None and side["final"]["state"] == "connected", why
    assert len(side["windows"]) == seconds // 10 and all(frames >= 100 for frames in side["windows"]), why
    assert side["final"]["rtpReceived"] >= (seconds - 1) * 40, why


def test_pion_sequential_calls_report_setup_percentiles(parley, pion_client):
    """The benchmark mode (-calls N): short sequential calls, one summary with each setup step."""
    code, summary, stderr = pion_report(start_pion_call(pion_client, parley, 1, "-calls", "3"), timeout=90)
    assert code == 0, (summary.get("failedCalls"), stderr[-2000:])
    assert summary["calls"] == 3 and summary["passed"] == 3
    for step in ("answer", "iceConnected", "connected", "firstEchoedAudio", "dataChannelOpen"):
        assert summary["setupMs"][step]["n"] == 3, summary["setupMs"]
    first_echo = summary["setupMs"]["firstEchoedAudio"]
    assert 0 < first_echo["p50"] <= first_echo["p99"] < 2000
