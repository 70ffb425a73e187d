"""Voice agents behind `parley dev`, called by aiortc: the Python example agent over the WebSocket
protocol plays each turn back after the caller stops; an agent that is unreachable or goes away ends
its call with a reason on `oai-events` (and only that call)."""
import asyncio
import fractions
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request

import aioice.ice
import numpy
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import AudioFrame

from conftest import ROOT, free_port

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


class Bursts(AudioStreamTrack):
    """Speech-like bursts at 48 kHz: `pattern` is a list of (seconds, loud?) spans, then quiet."""

    def __init__(self, pattern):
        super().__init__()
        self.samples = 0
        self.spans, edge = [], 0.0
        for seconds, loud in pattern:
            self.spans.append((edge, edge + seconds, loud))
            edge += seconds
        self.random = numpy.random.default_rng(5)
        self.t0 = None  # when the first frame was captured: the pattern's time zero

    def loud_at(self, t):
        return any(start <= t < end and loud for start, end, loud in self.spans)

    async def recv(self):
        await asyncio.sleep(0.02)
        if self.t0 is None:
            self.t0 = time.monotonic()
        t = (numpy.arange(960) + self.samples) / 48000
        if self.loud_at(self.samples / 48000):
            # A 180 Hz voice-like tone with a 4 Hz syllable envelope.
            pcm = numpy.sin(2 * math.pi * 180 * t) * (5000 + 4000 * numpy.sin(2 * math.pi * 4 * t))
        else:
            pcm = self.random.normal(0, 20, 960)
        frame = AudioFrame.from_ndarray(pcm.astype(numpy.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, 48000)
        self.samples += 960
        return frame


class Caller:
    """An aiortc call to Parley that records what it hears (level per frame, with time) and its
    `oai-events` messages."""

    def __init__(self, parley, track):
        self.parley, self.track = parley, track
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(track)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events, self.heard, self.opened = [], [], False
        self.channel.on("message", lambda message: self.events.append(json.loads(message)))
        self.channel.on("open", lambda: setattr(self, "opened", True))

    def types(self):
        return [event.get("type") for event in self.events]

    async def start(self):
        @self.pc.on("track")
        def on_track(track):
            async def consume():
                try:
                    while True:
                        frame = await track.recv()
                        pcm = frame.to_ndarray().astype(numpy.float64)
                        rms = math.sqrt(float(numpy.mean(pcm * pcm))) / 32768 if pcm.size else 0
                        self.heard.append((time.monotonic(), 20 * math.log10(rms) if rms > 0 else -120))
                except MediaStreamError:
                    pass
            asyncio.ensure_future(consume())

        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, self.location, answer = await asyncio.get_running_loop().run_in_executor(
            None, self.parley.post_offer, self.pc.localDescription.sdp)
        assert status == 201
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        # Open, or (a call its agent ended at once) opened and already closed again.
        for _ in range(300):
            if self.channel.readyState == "open" or (self.opened and self.pc.connectionState in ("closed", "failed")):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"oai-events did not open; connection {self.pc.connectionState}")

    def loud_between(self, start, end, threshold=-35):
        """Frames heard louder than `threshold` dBFS between two times of the track's pattern."""
        t0 = self.track.t0 or 0
        return sum(1 for t, db in self.heard if start <= t - t0 < end and db > threshold)

    async def wait_for(self, predicate, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.05)
        return predicate()


def start_example_agent():
    port = free_port()
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "parrot_agent.py"), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "parrot agent on" in process.stdout.readline()
    return process, port


def metric(parley, name):
    text = parley.metrics()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_python_example_agent_plays_each_turn_back(parley_with):
    agent, port = start_example_agent()
    try:
        parley = parley_with("--agent", f"ws://127.0.0.1:{port}/")

        async def run():
            # 1 s quiet (the agent learns the noise floor), 1.2 s of speech, then quiet.
            caller = Caller(parley, Bursts([(1.0, False), (1.2, True), (4.0, False)]))
            await caller.start()
            assert await caller.wait_for(lambda: "output_audio_buffer.stopped" in caller.types(), 12), (
                caller.events, parley.get_json(caller.location))
            await caller.pc.close()
            return caller
        caller = asyncio.run(run())
    finally:
        agent.terminate()
        print("agent output:", agent.communicate(timeout=10)[0])
    types = caller.types()
    assert types.index("parrot.turn") < types.index("output_audio_buffer.started") < types.index("output_audio_buffer.stopped")
    speech_end = 1.0 + 1.2
    # While the caller speaks the agent is silent; after the turn (500 ms hangover) it plays the
    # utterance back, about as long as it was.
    assert caller.loud_between(1.0, speech_end) == 0
    assert caller.loud_between(speech_end + 0.4, speech_end + 3.5) >= 40, (caller.events, [(round(t - caller.track.t0, 2), round(db)) for t, db in caller.heard[::4]])


def test_unreachable_agent_ends_the_call_with_a_reason(parley_with):
    parley = parley_with("--agent", f"ws://127.0.0.1:{free_port()}/")  # nothing listens there

    async def run():
        caller = Caller(parley, Bursts([]))
        await caller.start()
        assert await caller.wait_for(lambda: "error" in caller.types(), 10), caller.events
        assert await caller.wait_for(lambda: caller.pc.connectionState in ("closed", "failed"), 10)
        await caller.pc.close()
        return caller
    caller = asyncio.run(run())
    error = next(event for event in caller.events if event["type"] == "error")
    assert error["error"]["type"] == "agent_unavailable"
    assert "unreachable" in error["error"]["message"]
    assert metric(parley, 'parley_agent_failures_total{reason="agent_unavailable"}') == 1


def test_agent_killed_mid_call_ends_that_call_only(parley_with):
    """An agent that drops one call's connection (as if that worker died) and keeps serving the
    other: the first call ends with a reason, the second goes on hearing its echo."""
    port = free_port()
    connections = []

    async def agent(websocket):
        started = json.loads(await websocket.recv())
        connections.append(websocket)
        await websocket.send(json.dumps({"type": "session.accept", "sample_rate": 16000}))
        async for message in websocket:
            if isinstance(message, bytes):
                await websocket.send(message)  # echo the caller's PCM

    async def run():
        async with websockets.serve(agent, "127.0.0.1", port):
            parley = parley_with("--agent", f"ws://127.0.0.1:{port}/")
            first = Caller(parley, Bursts([(30, True)]))
            second = Caller(parley, Bursts([(30, True)]))
            await first.start()
            await second.start()
            assert await first.wait_for(lambda: len(first.heard) > 50 and len(second.heard) > 50, 10)
            connections[0].transport.abort()  # no close frame: the connection just dies
            assert await first.wait_for(lambda: "error" in first.types(), 10), first.events
            assert await first.wait_for(lambda: first.pc.connectionState in ("closed", "failed"), 10)
            heard = len(second.heard)
            await asyncio.sleep(2)
            still_hearing = len(second.heard) - heard
            state = second.pc.connectionState
            # Read before the agent server shuts down (which ends the second call's link too).
            failures = metric(parley, 'parley_agent_failures_total{reason="agent_disconnected"}')
            await first.pc.close()
            await second.pc.close()
            return first, still_hearing, state, failures
    first, still_hearing, state, failures = asyncio.run(run())
    error = next(event for event in first.events if event["type"] == "error")
    assert error["error"]["type"] == "agent_disconnected"
    assert state == "connected" and still_hearing >= 80, (state, still_hearing)
    assert failures == 1


def test_example_agent_process_killed_ends_its_call(parley_with):
    agent, port = start_example_agent()
    parley = parley_with("--agent", f"ws://127.0.0.1:{port}/")

    async def run():
        caller = Caller(parley, Bursts([]))
        await caller.start()
        await asyncio.sleep(0.5)
        agent.send_signal(signal.SIGKILL)
        assert await caller.wait_for(lambda: "error" in caller.types(), 10), caller.events
        assert await caller.wait_for(lambda: caller.pc.connectionState in ("closed", "failed"), 10)
        await caller.pc.close()
        return caller
    try:
        caller = asyncio.run(run())
    finally:
        agent.kill()
        agent.wait(timeout=10)
    assert next(e for e in caller.events if e["type"] == "error")["error"]["type"] == "agent_disconnected"


def test_wss_agent_with_its_certificate_trusted_and_refused_otherwise(parley_with, tmp_path):
    """wss://: the agent's certificate (self-signed, for 127.0.0.1) is checked; trusted through
    --agent-ca the call hears the agent, untrusted the call ends with agent_unavailable."""
    import ssl
    key, cert = tmp_path / "agent.key", tmp_path / "agent.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=parley test agent",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    port = free_port()

    async def agent(websocket):
        await websocket.recv()
        await websocket.send(json.dumps({"type": "session.accept", "sample_rate": 16000}))
        async for message in websocket:
            if isinstance(message, bytes):
                await websocket.send(message)

    async def call(parley):
        caller = Caller(parley, Bursts([(30, True)]))
        await caller.start()
        await caller.wait_for(lambda: len(caller.heard) > 50 or "error" in caller.types(), 10)
        await caller.pc.close()
        return caller

    async def run():
        async with websockets.serve(agent, "127.0.0.1", port, ssl=tls):
            trusted = await call(parley_with("--agent", f"wss://127.0.0.1:{port}/", "--agent-ca", str(cert)))
            untrusted = await call(parley_with("--agent", f"wss://127.0.0.1:{port}/"))
            return trusted, untrusted
    trusted, untrusted = asyncio.run(run())
    assert len(trusted.heard) > 50 and "error" not in trusted.types(), trusted.events
    error = next(event for event in untrusted.events if event["type"] == "error")
    assert error["error"]["type"] == "agent_unavailable", error
    assert "certificate" in error["error"]["message"].lower() or "handshake" in error["error"]["message"].lower(), error


def test_an_agent_that_stops_reading_holds_up_no_other_call(parley_with):
    """One call's agent accepts and then never reads again; the other call, on the same media
    worker threads, keeps hearing its echo at full rate and the stalled call stays up."""
    port = free_port()
    accepted = []
    finished = asyncio.Event()

    async def agent(websocket):
        await websocket.recv()
        accepted.append(websocket)
        await websocket.send(json.dumps({"type": "session.accept", "sample_rate": 16000}))
        if len(accepted) == 2:
            await finished.wait()  # stalled: reads nothing more until the test is over
            return
        async for message in websocket:
            if isinstance(message, bytes):
                await websocket.send(message)

    async def run():
        async with websockets.serve(agent, "127.0.0.1", port, max_queue=1):
            parley = parley_with("--agent", f"ws://127.0.0.1:{port}/")
            healthy = Caller(parley, Bursts([(30, True)]))
            stalled = Caller(parley, Bursts([(30, True)]))
            await healthy.start()
            await stalled.start()
            await asyncio.sleep(1)
            heard = len(healthy.heard)
            await asyncio.sleep(3)
            result = (len(healthy.heard) - heard, healthy.pc.connectionState, stalled.pc.connectionState,
                      parley.get_json(stalled.location)["state"])
            finished.set()
            await healthy.pc.close()
            await stalled.pc.close()
            return result
    heard, healthy_state, stalled_state, stalled_call = asyncio.run(run())
    assert heard >= 130, f"the healthy call heard only {heard} frames in 3 s"
    assert healthy_state == "connected" and stalled_state == "connected" and stalled_call == "connected"


def test_an_agent_that_speaks_with_its_101_is_heard(parley_with):
    """An agent whose first frame (its session.accept) shares one TCP segment with the 101 and
    which then echoes audio: the accept is not lost in the upgrade (NIO's client upgrader dropped
    such bytes), so the caller hears its echo and gets no error. A raw server, to control the bytes."""
    import base64
    import hashlib
    import struct
    port, accepted = free_port(), []

    def frame(opcode, payload):
        length = len(payload)
        header = bytes([0x80 | opcode]) + (bytes([length]) if length < 126 else bytes([126]) + struct.pack("!H", length))
        return header + payload

    async def agent(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:"))
        answer = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        accept = json.dumps({"type": "session.accept", "sample_rate": 16000}).encode()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + answer + b"\r\n\r\n" + frame(1, accept))
        accepted.append(True)
        try:
            while True:  # client frames: masked; echo binary (PCM) back
                first, second = await reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
                if first & 0x0F == 2:
                    writer.write(frame(2, payload))
                elif first & 0x0F == 8:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def run():
        server = await asyncio.start_server(agent, "127.0.0.1", port)
        async with server:
            parley = parley_with("--agent", f"ws://127.0.0.1:{port}/")
            caller = Caller(parley, Bursts([(3.0, True)]))
            await caller.start()
            heard = await caller.wait_for(lambda: caller.loud_between(0, 3) >= 50, 10)
            await caller.pc.close()
            return caller, heard
    caller, heard = asyncio.run(run())
    assert accepted and heard, (caller.events, len(caller.heard))
    assert "error" not in caller.types(), caller.events
