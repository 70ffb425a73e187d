#!/usr/bin/env python3
"""The smallest agent behind Parley's WebSocket agent protocol (docs/agent-protocol.md): it accepts
each call at 48 kHz and sends every 20 ms PCM frame straight back, so the caller hears itself
through the whole agent path. `make bench-agents` times it against the in-process agents.

    .venv/bin/python examples/loopback_agent.py --port 9001
    swift run parley dev --agent ws://127.0.0.1:9001/
"""
import argparse
import asyncio
import json

import websockets


async def call(websocket):
    started = json.loads(await websocket.recv())
    assert started["type"] == "session.started", started
    await websocket.send(json.dumps({"type": "session.accept", "sample_rate": 48000}))
    async for message in websocket:
        if isinstance(message, bytes):
            await websocket.send(message)
        elif json.loads(message)["type"] == "session.ended":
            break


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    async with websockets.serve(call, args.host, args.port, max_size=2**20):
        print(f"loopback agent on ws://{args.host}:{args.port}/", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
