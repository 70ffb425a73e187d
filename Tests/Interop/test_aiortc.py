"""aiortc (a third, independent WebRTC stack: aioice, pyOpenSSL DTLS, pylibsrtp) calls `parley dev`
and receives its own audio frames back."""
import asyncio
import fractions
import math

import aioice.ice
import numpy
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import AudioFrame

# aioice leaves loopback out of its host candidates; the test namespace has nothing else.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


class Tone(AudioStreamTrack):
    """A 440 Hz tone in 20 ms frames at 48 kHz."""

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


SIZES = [1, 1024, 65536, 262144]


def pattern(size):
    return bytes((i * 31 + size) & 0xFF for i in range(size))


async def echo_call(parley, seconds):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(Tone())
    channel = pc.createDataChannel("oai-events")
    echoes = asyncio.Queue()
    channel_closed = asyncio.Event()
    channel.on("message", lambda message: echoes.put_nowait(message))
    channel.on("close", lambda: channel_closed.set())
    received = {"frames": 0}
    connected = asyncio.Event()
    done = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()

    @pc.on("track")
    def on_track(track):
        async def consume():
            try:
                while True:
                    frame = await track.recv()
                    if frame.samples > 0:
                        received["frames"] += 1
            except MediaStreamError:
                pass
        asyncio.ensure_future(consume())

    await pc.setLocalDescription(await pc.createOffer())
    status, location, answer = await asyncio.get_running_loop().run_in_executor(
        None, parley.post_offer, pc.localDescription.sdp)
    assert status == 201
    assert location.startswith("/v1/realtime/calls/rtc_")
    assert "a=ice-lite" in answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 15)
    # Data channel: each size echoed byte for byte, then a text event, then a clean close.
    while channel.readyState != "open":
        await asyncio.sleep(0.05)
    data_results = []
    for size in SIZES:
        channel.send(pattern(size))
        echoed = await asyncio.wait_for(echoes.get(), 10)
        data_results.append(isinstance(echoed, bytes) and echoed == pattern(size))
    channel.send('{"type":"response.create"}')
    data_results.append(await asyncio.wait_for(echoes.get(), 10) == '{"type":"response.create"}')
    channel.close()
    await asyncio.wait_for(channel_closed.wait(), 10)
    await asyncio.sleep(seconds)
    call = parley.get_json(location)
    await pc.close()
    return received["frames"], call, data_results


def test_aiortc_call_receives_echoed_audio_and_data(parley):
    frames, call, data_results = asyncio.run(echo_call(parley, 3))
    assert data_results == [True] * (len(SIZES) + 1), data_results
    assert call["dataChannelMessagesReceived"] == len(SIZES) + 1
    assert call["state"] == "connected"
    # aiortc's DTLS (OpenSSL through pyOpenSSL) offers 1.2 only: Parley's BoringSSL falls back to it.
    assert call["dtlsVersion"] == "DTLS 1.2" and call["dtlsLibrary"] == "boringssl", call
    assert call["rtpReceived"] >= 100
    # aiortc's jitter buffer holds back a few frames; nearly all 3 s must come back.
    assert frames >= 120, f"only {frames} echoed frames decoded in 3 s"
