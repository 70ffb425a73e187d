"""Rotating the routing key on a running relay and transceiver, both reading --routing-key-file and
reloading it on SIGHUP, in the order docs/operations.md gives: add the new key everywhere, make it
the sealing key, retire the old one. A call made under the old key goes on through all three steps
with no gap in its echoed audio and keeps its consent (its checks still name the retired key: the
transceiver knows the call by its validated address, the relay by its committed route); calls made
after the second step are sealed with the new key; once the old key is retired the relay refuses a
new flow that presents it. aiortc calls through the relay, no Redis."""
import asyncio
import base64
import re
import secrets
import signal
import socket
import time

import pytest

from test_hostile import AiortcCall, binding_request
from test_relay_recovery import Stack, metric


def key_id(answer):
    """The key id of the routing token in an answer's ICE ufrag (the low 4 bits of its first byte,
    in the clear: docs/protocol.md)."""
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", answer, re.MULTILINE).group(1)
    return base64.b64decode(ufrag)[0] & 0x0F


def ufrag(answer):
    return re.search(r"^a=ice-ufrag:(\S+)", answer, re.MULTILINE).group(1)


def count(process, text):
    return process.log_path.read_text().count(text)


async def reload(keys, text, processes):
    """Writes the key file, sends SIGHUP to each process and waits for each to log the reload."""
    keys.write_text(text)
    for process, line in processes:
        before = count(process, line)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while count(process, line) == before:
            assert time.monotonic() < deadline, f"no '{line}' in {process.log_path.name}:\n{process.log_path.read_text()[-2000:]}"
            await asyncio.sleep(0.05)


@pytest.fixture
def stack(tmp_path):
    keys = tmp_path / "routing-keys"
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    keys.write_text(f"# id secret [current]\n1 {first} current\n")
    stack = Stack(tmp_path, redis_args=None, key_file=keys)
    stack.keys, stack.first, stack.second = keys, first, second
    yield stack
    stack.stop()
    print(stack.logs())


def test_rotating_the_routing_key_keeps_a_live_call_and_seals_new_calls_with_the_new_key(stack):
    relay = stack.relay(redis="")
    processes = [(stack.transceiver, "keys reloaded"), (relay, "routing keys reloaded")]

    async def scenario():
        old = await AiortcCall(stack).start()
        assert key_id(old.answer) == 1
        await asyncio.sleep(1)
        rotation_started = time.monotonic()

        # 1. The new key everywhere, the old one still sealing.
        await reload(stack.keys, f"1 {stack.first} current\n2 {stack.second}\n", processes)
        assert key_id((await AiortcCall(stack).start()).answer) == 1
        # 2. The new key seals; the old one still opens.
        await reload(stack.keys, f"1 {stack.first}\n2 {stack.second} current\n", processes)
        sealed_with_new = await AiortcCall(stack).start()
        assert key_id(sealed_with_new.answer) == 2
        # 3. The old key retired.
        await reload(stack.keys, f"2 {stack.second} current\n", processes)
        retired_at = time.monotonic()
        after = await AiortcCall(stack).start()
        assert key_id(after.answer) == 2

        # The relay refuses a new flow presenting the retired key: a check with the old call's
        # ufrag from a fresh source port is dropped as bad_token.
        before = metric(relay.metrics_port, 'parley_relay_drops_total{reason="bad_token"}') or 0
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        for _ in range(3):
            probe.sendto(binding_request(f"{ufrag(old.answer)}:probe", "not-the-password"), ("127.0.0.1", stack.relay_port))
        probe.close()
        deadline = time.monotonic() + 3
        while (metric(relay.metrics_port, 'parley_relay_drops_total{reason="bad_token"}') or 0) < before + 3:
            assert time.monotonic() < deadline, "the relay did not refuse the retired key's token"
            await asyncio.sleep(0.2)

        # The old call past both consent windows (Parley's 30 s, aioice's six failed checks 5 s
        # apart) with its checks naming the retired key.
        answered = (await old.status())["checksAnswered"]
        await asyncio.sleep(36)
        status = await old.status()
        assert status is not None and status["state"] == "connected", status
        assert old.pc.connectionState == "connected"
        assert status["checksAnswered"] > answered + 3, (answered, status)
        # Echoed audio all along: every half second since the rotation began holds frames (50 a
        # second are sent; a gap of a consent window would empty several windows).
        windows = old.frames_per_window(rotation_started, 0.5, int((time.monotonic() - rotation_started - 0.5) / 0.5))
        print(f"old call: {len(windows)} half-second windows since the rotation, min {min(windows)} frames, "
              f"checks answered {answered} -> {status['checksAnswered']}; retired {time.monotonic() - retired_at:.0f} s ago")
        assert min(windows) >= 10, windows
        assert after.frames_between(retired_at, time.monotonic()) > 100
        for call in (old, sealed_with_new, after):
            await call.close()

    asyncio.run(scenario())
