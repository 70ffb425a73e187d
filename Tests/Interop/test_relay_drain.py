"""Draining `parley relay`: the first SIGTERM (or POST /admin/drain) makes /readyz answer 503 and
refuses new calls, while a live call's audio goes on; the relay exits once that call has hung up
and its route has idled out (--route-idle-timeout 10 here), or when --drain-timeout passes, or at
once on a second signal. Calls are aiortc's (test_hostile.AiortcCall) through the relay, which has
no Redis here (draining does not depend on the store)."""
import asyncio
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from test_hostile import AiortcCall
from test_relay_recovery import Stack, metric

IDLE = 10  # --route-idle-timeout: how long a hung-up call's route lives on


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path, redis_args=None)
    yield stack
    stack.stop()
    print(stack.logs())


def status(port, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def lines(process, text):
    return [line for line in process.log_path.read_text().splitlines() if text in line]


async def exited_within(process, seconds):
    """Seconds until `process` exits, or None if it is still running after `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if process.poll() is not None:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    return None


def test_a_draining_relay_keeps_its_call_refuses_new_ones_and_exits_once_the_route_idles_out(stack):
    relay = stack.relay(redis="", extra=["--route-idle-timeout", str(IDLE)])
    assert status(relay.metrics_port, "/readyz") == 200

    async def scenario():
        call = await AiortcCall(stack).start()
        await asyncio.sleep(1.5)  # the workers publish their route counts once a second
        relay.send_signal(signal.SIGTERM)
        drained_at = time.monotonic()
        await asyncio.sleep(0.3)
        # Out of the load balancer's rotation at once, still alive.
        assert await asyncio.to_thread(status, relay.metrics_port, "/readyz") == 503
        assert await asyncio.to_thread(status, relay.metrics_port, "/healthz") == 200
        before = (await call.status())["rtpReceived"]
        # A new call through the draining relay does not connect: its checks are dropped. The live
        # call's audio goes on meanwhile, both ways.
        newcomer = AiortcCall(stack)
        with pytest.raises(asyncio.TimeoutError):
            await newcomer.start(timeout=5)
        await newcomer.close()
        window = (drained_at, time.monotonic())
        echoed = call.frames_between(*window)
        received = (await call.status())["rtpReceived"] - before
        print(f"while draining, {window[1] - window[0]:.1f} s: {echoed} echoed frames decoded, "
              f"Parley received {received} RTP packets")
        assert echoed >= 40 * (window[1] - window[0] - 1), "the live call's audio stopped"
        assert received >= 40 * (window[1] - window[0] - 1)
        assert relay.poll() is None
        # The call hangs up: its route has carried its last packet, and lives on for the idle timeout.
        await call.close()
        hung_up = time.monotonic()
        assert await exited_within(relay, IDLE - 3) is None, "exited before the route idled out"
        assert await exited_within(relay, 6) is not None, "still running after the route idled out"
        return time.monotonic() - hung_up

    drops_before_exit = []

    async def watch_drops():
        # /metrics goes with the process: read the draining drops while it is there.
        while relay.poll() is None:
            try:
                value = await asyncio.to_thread(metric, relay.metrics_port, 'parley_relay_drops_total{reason="draining"}')
                drops_before_exit.append(value)
            except OSError:
                break
            await asyncio.sleep(0.5)

    async def both():
        watcher = asyncio.ensure_future(watch_drops())
        took = await scenario()
        await watcher
        return took

    took = asyncio.run(both())
    print(f"exited {took:.1f} s after the hang-up (idle timeout {IDLE} s)")
    assert relay.returncode == 0
    assert max(value or 0 for value in drops_before_exit) >= 1, f"no draining drop counted: {drops_before_exit}"
    started = lines(relay, "relay draining: no new flows")
    assert len(started) == 1 and "committed_routes=1" in started[0] and "trigger=SIGTERM" in started[0], started
    assert any("routes_remaining=1" in line for line in lines(relay, "relay draining")), "no progress line"
    assert lines(relay, "relay drained: no committed route left; exiting")


def test_drain_requested_over_http_then_signals_and_the_drain_timeout(stack):
    async def connected_call():
        call = await AiortcCall(stack).start()
        await asyncio.sleep(0.5)
        return call

    async def scenario():
        # POST /admin/drain drains like a signal; SIGTERM after it is the first signal (an
        # orchestrator's preStop hook, then its SIGTERM) and changes nothing; the second ends it.
        relay = await asyncio.to_thread(stack.relay, redis="")
        call = await connected_call()
        assert await asyncio.to_thread(status, relay.metrics_port, "/admin/drain", "POST") == 202
        assert await asyncio.to_thread(status, relay.metrics_port, "/readyz") == 503
        assert metric(relay.metrics_port, "parley_relay_draining") == 1
        relay.send_signal(signal.SIGTERM)
        assert await exited_within(relay, 1.5) is None, "the first signal after POST /admin/drain ended the drain"
        relay.send_signal(signal.SIGTERM)
        took = await exited_within(relay, 2)
        assert took is not None, "a second signal did not end the relay at once"
        print(f"second signal: exited in {took * 1000:.0f} ms")
        assert relay.returncode == 0
        assert lines(relay, "trigger=POST /admin/drain") and lines(relay, "second termination signal: exiting at once")
        await call.close()

        # --drain-timeout 2 with a live call: the relay goes when it passes, routes or not.
        relay = await asyncio.to_thread(stack.relay, redis="", extra=["--drain-timeout", "2"])
        call = await connected_call()
        relay.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await exited_within(relay, 1.5) is None
        assert await exited_within(relay, 2.5) is not None, "the drain timeout did not end the relay"
        took = time.monotonic() - signalled
        assert 2 <= took <= 4, took
        timed_out = lines(relay, "drain timeout passed")
        assert len(timed_out) == 1 and "routes_remaining=1" in timed_out[0], timed_out
        await call.close()

    asyncio.run(scenario())
