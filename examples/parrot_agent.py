#!/usr/bin/env python3
"""A parrot voice agent behind Parley, over the WebSocket agent protocol (docs/agent-protocol.md).

It listens until the caller speaks and stops, then plays the utterance back; if the caller speaks
while it plays, it clears its output at once (barge-in). Run it, then point Parley at it:

    .venv/bin/python examples/parrot_agent.py --port 9000
    swift run parley dev --agent ws://127.0.0.1:9000/

Needs websockets: `scripts/install-deps.sh test` puts it in the repository's .venv.
"""
import argparse
import asyncio
import json
import math
import struct

import websockets

RATE = 16000                 # the PCM rate we ask for: 20 ms frames of 320 samples
PREROLL, HANGOVER, ONSET = 10, 25, 3


def level(frame):
    """RMS of a PCM16 frame in dBFS."""
    samples = struct.unpack(f"<{len(frame) // 2}h", frame)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
    return 20 * math.log10(rms) if rms > 0 else -120.0


class VoiceActivity:
    """The same rules as Parley's built-in parrot: voiced = 10 dB over a learnt noise floor and over
    -55 dBFS; speech starts on 3 voiced frames, ends after 25 unvoiced ones (500 ms)."""

    def __init__(self):
        self.floor, self.speaking, self.voiced_run, self.unvoiced_run = -70.0, False, 0, 0

    def process(self, frame):
        db = level(frame)
        voiced = db > max(self.floor + 10, -55)
        self.floor = db if db < self.floor else min(self.floor + 0.05, -20)
        if voiced:
            self.voiced_run, self.unvoiced_run = self.voiced_run + 1, 0
            if not self.speaking and self.voiced_run >= ONSET:
                self.speaking = True
                return "started"
        else:
            self.voiced_run, self.unvoiced_run = 0, self.unvoiced_run + 1
            if self.speaking and self.unvoiced_run >= HANGOVER:
                self.speaking = False
                return "ended"
        return None


async def call(websocket):
    started = json.loads(await websocket.recv())
    assert started["type"] == "session.started", started
    await websocket.send(json.dumps({"type": "session.accept", "sample_rate": RATE}))
    vad, recent, utterance, playback, turns = VoiceActivity(), [], [], None, 0
    frame_index, onset_at, last_voiced_at = 0, 0, 0

    async def event(body):
        await websocket.send(json.dumps({"type": "data_channel.send", "label": "oai-events", "data": json.dumps(body)}))

    async def play(frames):
        for frame in frames:  # as fast as Parley takes them: its queue paces, TCP holds us back
            await websocket.send(frame)

    async for message in websocket:
        if isinstance(message, str):
            if json.loads(message)["type"] == "session.ended":
                break
            continue
        transition = vad.process(message)
        frame_index += 1
        if vad.voiced_run:
            last_voiced_at = frame_index
        if transition == "started":
            onset_at = frame_index
            if playback and not playback.done():
                playback.cancel()
                await websocket.send(json.dumps({"type": "audio.clear"}))
                await event({"type": "parrot.barge_in"})
            utterance = list(recent)
        elif transition == "ended":
            turns += 1
            # Times in 20 ms frames: the speech from onset to its last voiced frame, and the hangover.
            await event({"type": "parrot.turn", "turn": turns, "frames": len(utterance),
                         "speech_ms": (last_voiced_at - onset_at) * 20, "turn_detection_ms": (frame_index - last_voiced_at) * 20})
            playback = asyncio.create_task(play(utterance + [message]))
            utterance = []
        elif vad.speaking:
            utterance.append(message)
        recent = (recent + [message])[-PREROLL:]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    async with websockets.serve(call, args.host, args.port, max_size=2**20):
        print(f"parrot agent on ws://{args.host}:{args.port}/", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
