#!/usr/bin/env python3
"""Setup benchmark with full-ICE clients: how long a call takes to come up when the client is a full,
controlling ICE agent (as native apps and browsers are), against Parley and against the Pion
reference server in the same run.

Two clients, each making `--calls` sequential calls, pinned to core 1:
  - pion:   Tests/Interop/pionclient (Go, Debian's Pion v3.1.56), `-calls N -seconds 1 -json`: an
            Opus track (a frame every 20 ms) and the `oai-events` channel; it reports each step's
            p50/p99 from the offer's POST, the first echoed audio being the first of its own RTP
            frames read back from the remote track (ReadRTP: no jitter buffer);
  - aiortc: a loop in this script (aiortc 1.16, aioice): a PeerConnection with a 440 Hz tone track
            and `oai-events`, POST the offer, set the answer, then time ICE "completed" (aioice has
            no "connected"), connectionState "connected" (DTLS done) and the first audio frame out
            of the remote track's recv() — which is behind aiortc's jitter buffer (it holds 4
            packets before it hands out the first), so the first echoed RTP packet's arrival is
            recorded too — and the channel's open; then close and DELETE the call.
Two servers, each started fresh for each client, pinned to core 0:
  - parley: `parley dev --direct --workers 1` (as in bench_transceiver.py: one worker thread with
            the built-in echo agent, no relay hop);
  - pion:   Benchmarks/pion (ICE lite, like Parley, but it sends connectivity checks of its own).
Everything runs on loopback. aioice leaves 127.0.0.1 out of its host candidates; it is patched in.

Usage: scripts/bench_setup.py [--calls 100] [--clients pion,aiortc] [--servers parley,pion]
       [--parley .build/release/parley] [--output-dir docs]
With --output-dir it writes benchmarks-setup-latest.json and the table inside docs/benchmarks.md
(between the bench-setup markers).
"""
import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import API_KEY, AUTH, free_port, update_markdown, wait_until_healthy  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SERVER_CORE, CLIENT_CORE = "0", "1"
GOCODE = "/usr/share/gocode"  # Debian's Go sources (golang-github-pion-webrtc.v3-dev)
STEPS = ["answer", "iceConnected", "connected", "firstEchoedAudio", "firstEchoedRTP", "dataChannelOpen"]


def go_build(source_dir, name, out):
    """Builds a Go main package offline against Debian's Pion sources (a GOPATH build, no modules),
    as Tests/Interop/test_pion.py and bench_transceiver.py do."""
    gopath = tempfile.mkdtemp(prefix=f"parley-{name}-")
    try:
        source = os.path.join(gopath, "src", name)
        shutil.copytree(source_dir, source)
        binary = os.path.join(out, name)
        environment = dict(os.environ, GO111MODULE="off", GOPATH=f"{gopath}:{GOCODE}", GOPROXY="off", GOFLAGS="",
                           GOCACHE=os.path.join(out, "gocache"))
        subprocess.run(["go", "build", "-o", binary, "."], cwd=source, env=environment, check=True)
        return binary
    finally:
        shutil.rmtree(gopath)


def percentiles(samples):
    """Nearest rank, like pionclient: p99 of 100 samples is the 99th smallest."""
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(p):
        return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], 3)
    return {"n": len(ordered), "min": round(ordered[0], 3), "p50": rank(0.5), "p99": rank(0.99),
            "max": round(ordered[-1], 3)}


# MARK: the aiortc client (runs as its own process: `bench_setup.py --aiortc-client URL`)

def aiortc_client(url, calls, timeout):
    import asyncio
    import fractions
    import urllib.error
    import urllib.parse
    import urllib.request

    import aioice.ice
    import numpy
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from av import AudioFrame

    # aioice leaves loopback out of its host candidates.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

    # The first RTP packet each receiver gets, before aiortc's jitter buffer and decoder.
    first_rtp = {}
    handle_rtp = RTCRtpReceiver._handle_rtp_packet

    async def timed_handle_rtp(self, packet, arrival_time_ms):
        first_rtp.setdefault(id(self), time.monotonic())
        return await handle_rtp(self, packet, arrival_time_ms)
    RTCRtpReceiver._handle_rtp_packet = timed_handle_rtp

    class Tone(AudioStreamTrack):
        def __init__(self):
            super().__init__()
            self.samples = 0

        async def recv(self):
            await asyncio.sleep(0.02)
            t = (numpy.arange(960) + self.samples) / 48000
            pcm = (numpy.sin(2 * math.pi * 440 * t) * 8000).astype(numpy.int16).reshape(1, -1)
            frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = self.samples
            frame.time_base = fractions.Fraction(1, 48000)
            self.samples += 960
            return frame

    def post(sdp):
        request = urllib.request.Request(url, data=sdp.encode(), method="POST", headers={"Content-Type": "application/sdp", **AUTH})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Location"), response.read().decode()

    def delete(location):
        try:
            urllib.request.urlopen(urllib.request.Request(urllib.parse.urljoin(url, location), method="DELETE", headers=AUTH),
                                   timeout=5)
        except (urllib.error.URLError, OSError):
            pass  # the Pion server takes no DELETE (405); it ends the call when DTLS closes

    async def one_call(index):
        loop = asyncio.get_running_loop()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(Tone())
        channel = pc.createDataChannel("oai-events")
        marks, start = {}, None
        audio, opened = asyncio.Event(), asyncio.Event()

        def mark(step):
            if start is not None and step not in marks:
                marks[step] = (time.monotonic() - start) * 1000

        @pc.on("iceconnectionstatechange")
        def on_ice():
            if pc.iceConnectionState == "completed":
                mark("iceConnected")

        @pc.on("connectionstatechange")
        def on_state():
            if pc.connectionState == "connected":
                mark("connected")

        @channel.on("open")
        def on_open():
            mark("dataChannelOpen")
            opened.set()

        @pc.on("track")
        def on_track(track):
            async def consume():
                try:
                    while True:
                        frame = await track.recv()
                        if frame.samples > 0:
                            mark("firstEchoedAudio")
                            audio.set()
                except MediaStreamError:
                    pass
            asyncio.ensure_future(consume())

        failure, location = None, None
        try:
            await pc.setLocalDescription(await pc.createOffer())  # gathers: the whole offer at once
            start = time.monotonic()
            status, location, answer = await loop.run_in_executor(None, post, pc.localDescription.sdp)
            mark("answer")
            if status not in (200, 201):
                raise RuntimeError(f"POST: HTTP {status}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await asyncio.wait_for(asyncio.gather(audio.wait(), opened.wait()), timeout)
        except Exception as error:  # noqa: BLE001 — a failed call is reported, the loop goes on
            failure = f"{type(error).__name__}: {error}"
        for receiver in pc.getReceivers():
            if id(receiver) in first_rtp and start is not None:
                marks["firstEchoedRTP"] = (first_rtp.pop(id(receiver)) - start) * 1000
        await pc.close()
        if location:
            await loop.run_in_executor(None, delete, location)
        return {"call": index, "ok": failure is None, "failure": failure,
                "setupMs": {step: round(marks[step], 3) for step in STEPS if step in marks}}

    async def all_calls():
        return [await one_call(index) for index in range(1, calls + 1)]

    results = asyncio.run(all_calls())
    summary = {"calls": len(results), "passed": sum(r["ok"] for r in results),
               "setupMs": {step: percentiles([r["setupMs"][step] for r in results if step in r["setupMs"]])
                           for step in STEPS},
               "failedCalls": [r for r in results if not r["ok"]]}
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0 if summary["passed"] == summary["calls"] else 1


# MARK: servers and runs

class Server:
    def __init__(self, name, command, url, health):
        self.name, self.command, self.url, self.health = name, command, url, health
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(["taskset", "-c", SERVER_CORE] + self.command,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_until_healthy(self.health):
            return self
        self.__exit__()
        raise RuntimeError(f"{self.name} did not start")

    def __exit__(self, *_):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def server_factories(parley, pion, names):
    def parley_server():
        http, media = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        return Server("parley", [parley, "dev", "--direct", "--workers", "1", "--http-port", str(http),
                                 "--media-port", str(media), "--log-level", "error", "--api-key", API_KEY, "--metrics-port", "0",
                                 # Benchmarks measure the media path, not the per-key limits.
                                 "--max-calls-per-key", "1000000", "--rate-per-key", "1000000", "--burst-per-key", "1000000"],
                      f"http://127.0.0.1:{http}/v1/realtime/calls", f"http://127.0.0.1:{http}/healthz")

    def pion_server():
        http, media = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        return Server("pion", [pion, "-http", f"127.0.0.1:{http}", "-media", f"127.0.0.1:{media}"],
                      f"http://127.0.0.1:{http}/v1/realtime/calls", f"http://127.0.0.1:{http}/healthz")

    factories = {"parley": parley_server, "pion": pion_server}
    return {name: factories[name] for name in names}


def client_command(client, tools, url, calls, timeout):
    if client == "pion":
        return [os.path.join(tools, "pionclient"), "-url", url, "-calls", str(calls), "-seconds", "1", "-json",
                "-setup-timeout", f"{timeout:g}s"]
    return [sys.executable, os.path.abspath(__file__), "--aiortc-client", url, "--calls", str(calls),
            "--timeout", str(timeout)]


def run(client, server_name, make_server, tools, calls, timeout):
    with make_server() as server:
        time.sleep(0.5)
        began = time.monotonic()
        done = subprocess.run(["taskset", "-c", CLIENT_CORE] + client_command(client, tools, server.url, calls, timeout),
                              capture_output=True, text=True, timeout=calls * (timeout + 10) + 60)
        seconds = time.monotonic() - began
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"{client} client against {server_name} exited {done.returncode} without a report:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    setup = report["setupMs"]
    if client == "pion":
        # pionclient's first echoed audio is the first frame ReadRTP returns: the RTP packet itself.
        setup["firstEchoedRTP"] = setup.get("firstEchoedAudio")
    failed = report.get("failedCalls") or []
    return {"client": client, "server": server_name, "calls": report["calls"], "passed": report["passed"],
            "seconds": round(seconds, 1), "setupMs": {step: setup.get(step) for step in STEPS},
            "failures": [c.get("failures") or c.get("failure") for c in failed][:10]}


def pair(setup, step):
    value = setup.get(step)
    return "–" if not value else f"{value['p50']:.1f} / {value['p99']:.1f}"


def table(rows):
    out = ["| client | server | calls ok | answer | ICE connected | DTLS connected | first echoed RTP "
           "| first echoed audio (app) | data channel open |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        s = row["setupMs"]
        out.append(f"| {row['client']} | {row['server']} | {row['passed']}/{row['calls']} | {pair(s, 'answer')} "
                   f"| {pair(s, 'iceConnected')} | {pair(s, 'connected')} | {pair(s, 'firstEchoedRTP')} "
                   f"| {pair(s, 'firstEchoedAudio')} | {pair(s, 'dataChannelOpen')} |")
    out.append("")
    out.append("Milliseconds from the offer's POST, p50 / p99 over the calls. \"first echoed audio (app)\" is the "
               "first frame the application reads: Pion's ReadRTP (the packet itself), aiortc's `track.recv()` "
               "(after its jitter buffer).")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100, help="sequential calls per client and server")
    parser.add_argument("--clients", default="pion,aiortc")
    parser.add_argument("--servers", default="parley,pion")
    parser.add_argument("--timeout", type=float, default=15, help="seconds a call may take to come up")
    parser.add_argument("--parley", default=os.path.join(ROOT, ".build", "release", "parley"))
    parser.add_argument("--output-dir")
    parser.add_argument("--aiortc-client", metavar="URL", help=argparse.SUPPRESS)  # the aiortc loop itself
    args = parser.parse_args()
    if args.aiortc_client:
        return aiortc_client(args.aiortc_client, args.calls, args.timeout)

    clients = [c for c in args.clients.split(",") if c]
    names = [s for s in args.servers.split(",") if s]
    if set(clients) - {"pion", "aiortc"} or set(names) - {"parley", "pion"}:
        parser.error("clients are pion and aiortc, servers parley and pion")
    if (os.cpu_count() or 1) < 2:
        print("warning: one core: server and client share it", file=sys.stderr)
    if not shutil.which("go") or not os.path.isdir(os.path.join(GOCODE, "src", "github.com", "pion", "webrtc")):
        sys.exit("Go and Debian's Pion v3 sources are needed (scripts/install-deps.sh bench)")
    if "aiortc" in clients and subprocess.run([sys.executable, "-c", "import aiortc"]).returncode != 0:
        sys.exit("aiortc is not importable (scripts/install-deps.sh test)")
    if "parley" in names and not os.access(args.parley, os.X_OK):
        sys.exit(f"{args.parley} is not there: swift build -c release --product parley (or --parley PATH)")

    began = time.monotonic()
    tools = os.path.join(ROOT, ".build", "bench")
    os.makedirs(tools, exist_ok=True)
    pion = go_build(os.path.join(ROOT, "Benchmarks", "pion"), "pionecho", tools) if "pion" in names else None
    if "pion" in clients:
        go_build(os.path.join(ROOT, "Tests", "Interop", "pionclient"), "pionclient", tools)
    factories = server_factories(args.parley, pion, names)

    rows = []
    for client in clients:
        for name in names:
            print(f"{client} client → {name}: {args.calls} calls…", file=sys.stderr)
            row = run(client, name, factories[name], tools, args.calls, args.timeout)
            rows.append(row)
            s = row["setupMs"]
            print(f"  {row['passed']}/{row['calls']} ok in {row['seconds']} s; ICE {pair(s, 'iceConnected')}, "
                  f"first echoed audio {pair(s, 'firstEchoedAudio')} ms"
                  + (f"; failures: {row['failures']}" if row["failures"] else ""), file=sys.stderr)

    text = table(rows)
    wall = time.monotonic() - began
    print(text)
    print(f"wall time: {wall:.0f} s", file=sys.stderr)
    if args.output_dir:
        stamp = time.strftime("%Y-%m-%d")
        with open(os.path.join(args.output_dir, "benchmarks-setup-latest.json"), "w") as out:
            json.dump({"date": stamp, "calls": args.calls, "parley": os.path.abspath(args.parley),
                       "wallSeconds": round(wall), "rows": rows}, out, indent=1)
        update_markdown(os.path.join(args.output_dir, "benchmarks.md"), "bench-setup",
                        f"Latest run: {stamp} (`make bench-setup`; raw figures in "
                        "[benchmarks-setup-latest.json](benchmarks-setup-latest.json)).\n\n" + text)
    return 0 if all(row["passed"] == row["calls"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
