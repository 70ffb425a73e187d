"""Global Relay, two-stage routing, on loopback: cluster 2 (a transceiver, its relay B and its
Redis) owns the call; the client enters at cluster 1's relay A (the address the answer
advertises), which holds only cluster 1's routing key, reads cluster 2 in the token's clear
header and forwards the flow to B over the tunnel with the client's address kept. B routes it to
its transceiver with its own rules and sends the answers back through A. Then B is killed and
restarted: it recovers the forwarded flow from its Redis (the route remembers it arrives via A)."""
import asyncio
import contextlib
import secrets
import signal
import socket
import time
import urllib.request

import pytest

from conftest import API_KEY, PARLEY, free_port
from test_chromium import chromium, wait_for
from test_hostile import AiortcCall
from test_relay_recovery import Stack, metric, mint_secret, wait_http


class TwoClusters(Stack):
    """Cluster 2's transceiver (advertising relay A's public address) and Redis; relays are started
    by `relay_a` / `relay_b`. Each cluster has its own routing key."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.processes = []
        self.key_a, self.key_b = secrets.token_hex(32), secrets.token_hex(32)
        self.public_a, self.public_b = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        self.internal_a, self.internal_b = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        self.redis_port = free_port(socket.SOCK_STREAM)
        self.http_port = free_port(socket.SOCK_STREAM)
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.redis = self.spawn("redis-b", ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                            "--port", str(self.redis_port)])
        self.transceiver = self.spawn("transceiver-b", [
            PARLEY, "transceiver", "--routing-key", self.key_b, "--cluster-id", "2", "--http-port", str(self.http_port),
            "--media-host", "127.0.0.1", "--media-port", "0", "--workers", "1", "--api-key", API_KEY,
            "--metrics-port", str(free_port()), "--demo-page",
            "--relay-network", "127.0.0.0/8", "--advertise", f"127.0.0.1:{self.public_a}"])
        wait_http(f"{self.base}/healthz")

    def page(self):
        return f"{self.base}/?autostart=1&client_secret={mint_secret(self.http_port)}"

    def _relay(self, name, key, cluster, peer, public, internal, redis):
        metrics_port = free_port(socket.SOCK_STREAM)
        process = self.spawn(name, [
            PARLEY, "relay", "--routing-key", key, "--cluster-id", str(cluster), "--cluster-relay", peer,
            "--public-host", "127.0.0.1", "--public-port", str(public), "--public-tcp-port", "0", "--internal-port", str(internal),
            "--worker-network", "127.0.0.0/8", "--workers", "1", "--metrics-port", str(metrics_port),
            "--log-level", "debug"] + (["--redis", f"127.0.0.1:{self.redis_port}"] if redis else []))
        process.metrics_port = metrics_port
        time.sleep(0.5)
        assert process.poll() is None, f"{name} exited:\n" + process.log_path.read_text()
        return process

    def relay_a(self):
        return self._relay("relay-a", self.key_a, 1, f"2=127.0.0.1:{self.internal_b}", self.public_a, self.internal_a, False)

    def relay_b(self):
        return self._relay("relay-b", self.key_b, 2, f"1=127.0.0.1:{self.internal_a}", self.public_b, self.internal_b, True)


@pytest.fixture
def clusters(tmp_path):
    clusters = TwoClusters(tmp_path)
    yield clusters
    clusters.stop()
    print(clusters.logs())


def forwarded(port, direction):
    return metric(port, f'parley_relay_packets_total{{direction="{direction}"}}') or 0


def test_chromium_enters_at_cluster_ones_relay_and_its_call_lives_in_cluster_two(clusters):
    relay_a, relay_b = clusters.relay_a(), clusters.relay_b()
    driver = chromium()
    try:
        driver.get(clusters.page())
        wait_for(driver, lambda s: s["state"] == "connected", 20, "connected through relay A into cluster 2")
        wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 20, "echoed audio")
        wait_for(driver, lambda s: s["channelState"] == "open", 10, "oai-events open")
        # Data-channel messages both ways across the two stages (the echo agent sends them back).
        driver.execute_script("""
            window.echoed = [];
            window.parley.channel.addEventListener('message', e => window.echoed.push(e.data));
            for (const size of [1, 1000, 60000]) window.parley.channel.send(JSON.stringify({type: 'x', pad: 'a'.repeat(size)}));""")
        deadline = time.time() + 10
        while time.time() < deadline and len(driver.execute_script("return window.echoed")) < 3:
            time.sleep(0.2)
        echoed = driver.execute_script("return window.echoed.map(m => m.length)")
        assert len(echoed) == 3, echoed
        time.sleep(1.2)  # relays report their counters once a second
        # A forwarded the client's packets to B, and B's answers back to the client; B forwarded
        # them on to its transceiver and its answers back to A. A holds no route to any worker.
        assert forwarded(relay_a.metrics_port, "to_transceiver") >= 100
        assert forwarded(relay_a.metrics_port, "to_client") >= 100
        assert forwarded(relay_b.metrics_port, "to_transceiver") >= 100
        assert not metric(relay_a.metrics_port, 'parley_relay_drops_total{reason="bad_token"}'), "relay A tried to open cluster 2's token"
        # B's answers went back to the client, through A (B's public port is not in the answer).
        assert forwarded(relay_b.metrics_port, "to_client") >= 100
    finally:
        driver.quit()


def test_a_forwarded_call_survives_a_restart_of_the_owning_clusters_relay(clusters):
    relay_a, relay_b = clusters.relay_a(), clusters.relay_b()

    async def scenario():
        call = await AiortcCall(clusters).start()
        await asyncio.sleep(1.0)  # the route reaches B's Redis asynchronously
        relay_b.send_signal(signal.SIGKILL)
        relay_b.wait()
        killed = time.monotonic()
        await asyncio.sleep(0.3)
        spawned = time.monotonic()
        restarted = clusters.relay_b()
        # Audio resumes from B's Redis (the route says: via relay A's socket) at A's next forwarded
        # packet, long before a consent check would rebuild it.
        started = time.monotonic()
        before = len(call.frames)
        while time.monotonic() - started < 2 and len(call.frames) < before + 10:
            await asyncio.sleep(0.02)
        assert len(call.frames) >= before + 10, "audio did not resume through the restarted relay B"
        print(f"audio back {1000 * (time.monotonic() - killed):.0f} ms after relay B was killed "
              f"({1000 * (time.monotonic() - spawned):.0f} ms after its replacement was started)")
        log = restarted.log_path.read_text()
        assert "route recovered from the store" in log and " via 127.0.0.1:" in log, log[-2000:]
        await call.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------
# Two regions joined by a link with real delay (Tests/Tools/impair.py)

import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from conftest import auth, require  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tools"))
import regions as regions_tool  # noqa: E402  (Tests/Tools/regions.py: the topology `regions.py up` runs)

ONE_WAY_MS = 20  # region A <-> region B: 40 ms round trip


@pytest.fixture
def regions(tmp_path):
    """Region A is this test's own namespace: relay A, cluster 1's transceiver, the browser; region
    B a fresh namespace behind impair.py at ONE_WAY_MS each way: cluster 2, relay B, Redis."""
    require(os.geteuid() == 0 and os.path.exists("/dev/net/tun"), "two regions need namespaces and /dev/net/tun (scripts/interop.sh)")
    topology = regions_tool.Topology(tmp_path / "regions", ONE_WAY_MS, API_KEY).start()
    yield topology
    topology.stop()
    for process in topology.processes:
        print(f"--- {os.path.basename(process.log_path)}\n" + open(process.log_path).read()[-3000:])


def call_figures(driver, page):
    """The page's setup steps (ms after Call: offer made, answer in, ICE and DTLS connected,
    oai-events open) and the median round trip Chromium measures over 5 s (RTCP, ms)."""
    driver.get(page)
    wait_for(driver, lambda s: s["state"] == "connected", 20, "connected")
    state = wait_for(driver, lambda s: s["stats"].get("roundTripTime") is not None and "channel" in s["timings"]
                     and s["stats"].get("packetsReceived", 0) > 200, 20, "a round-trip time from RTCP")
    samples = []
    for _ in range(5):
        samples.append(1000 * driver.execute_script("return window.parley.stats.roundTripTime"))
        time.sleep(1)
    driver.execute_script("document.getElementById('hangup').click()")
    timings = state["timings"]
    steps = {step: timings[step] - timings["answer"] for step in ("ice", "dtls", "channel")}
    return {"signaling": timings["answer"] - timings["offer"], **steps, "rtt": sorted(samples)[len(samples) // 2]}


def test_a_cross_region_call_pays_the_inter_region_round_trip_and_a_local_one_does_not(regions):
    # Region B's signaling is not on localhost: the page needs to count as a secure context.
    driver = chromium(f"--unsafely-treat-insecure-origin-as-secure={regions.base_b}")
    try:
        direct = call_figures(driver, regions.page(regions.base_a))
        cross = call_figures(driver, regions.page(regions.base_b))
    finally:
        driver.quit()
    for name, figures in (("direct-region (cluster 1 through relay A)", direct),
                          ("cross-region (enters at relay A, lives in cluster 2)", cross)):
        print(f"{name}: offer->answer {figures['signaling']} ms; after the answer: ICE {figures['ice']} ms, "
              f"DTLS {figures['dtls']} ms, oai-events open {figures['channel']} ms; RTT {figures['rtt']:.1f} ms")
    # The media round trip is the sum of the legs: ~0 from the browser to relay A, 40 ms A <-> B.
    assert direct["rtt"] < 10, direct
    assert 2 * ONE_WAY_MS - 1 <= cross["rtt"] <= 2 * ONE_WAY_MS + 15, cross
    # Setup crosses the link too: ICE a round trip (a check and its answer), DTLS 1.3 one more
    # (Chromium offers it and Parley's BoringSSL takes it; DTLS 1.2 took two, dtls.md).
    # (The page marks the answer once setRemoteDescription resolves, a few ms after Chromium's
    # first check may have left: ICE can read a little under the round trip.)
    assert cross["ice"] >= 2 * ONE_WAY_MS - 10, cross
    assert 2 * ONE_WAY_MS - 10 <= cross["dtls"] - cross["ice"] < 2 * 2 * ONE_WAY_MS - 10, cross
    assert cross["channel"] > cross["dtls"], cross


def test_a_cross_region_call_moves_to_region_bs_relay_when_relay_a_dies(regions):
    """Chromium in region A calls cluster 2: it enters at relay A (the answer's first candidate)
    and its media cross the link two-stage. Relay A is killed: Chromium moves to the answer's second
    candidate, relay B across the link, which routes the call directly; same DTLS association."""
    driver = chromium(f"--unsafely-treat-insecure-origin-as-secure={regions.base_b}")
    try:
        driver.get(regions.page(regions.base_b))
        wait_for(driver, lambda s: s["state"] == "connected", 20, "connected through relay A into cluster 2")
        wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100 and s["channelState"] == "open", 20, "audio")
        time.sleep(3)
        driver.execute_script("""
            window.arrivals = [];
            setInterval(async () => {
                const stats = await window.parley.pc.getStats();
                stats.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') window.arrivals.push([performance.now(), s.packetsReceived]); });
            }, 20);
            window.echoes = 0; window.sent = 0;
            window.parley.channel.addEventListener('message', () => window.echoes++);
            window.sender = setInterval(() => { window.parley.channel.send(JSON.stringify({type: 'tick', n: window.sent++})); }, 100);""")
        time.sleep(1)
        killed_at = driver.execute_script("return performance.now()")
        regions.relay_a.kill()
        regions.relay_a.wait()
        resumed, deadline = None, time.time() + 20
        while resumed is None and time.time() < deadline:
            time.sleep(0.2)
            arrivals = driver.execute_script("return window.arrivals")
            before = [count for at, count in arrivals if at <= killed_at]
            later = [at for at, count in arrivals if at > killed_at and count > (before[-1] if before else 0) + 5]
            resumed = later[0] if later else None
        assert resumed is not None, "audio did not come back through relay B"
        time.sleep(2)
        driver.execute_script("clearInterval(window.sender)")
        time.sleep(1.5)
        sent, echoes = driver.execute_script("return [window.sent, window.echoes]")
        print(f"cross-region call, relay A killed: audio back through relay B after {(resumed - killed_at) / 1000:.2f} s; "
              f"data-channel messages {echoes}/{sent} echoed")
        assert driver.execute_script("return window.parley.state") == "connected"
        assert echoes == sent, f"data-channel messages lost across the move: {echoes}/{sent}"
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------------
# The nearest relay first, the others for failover

class TwoRelays(Stack):
    """One cluster with two public relays, in regions "a" and "b"; the transceiver advertises both
    (`--relay`), the client's region first."""

    def __init__(self, tmp_path, extra=()):
        self.tmp = tmp_path
        self.processes = []
        self.key = secrets.token_hex(32)
        self.key_arguments = ["--routing-key", self.key]
        self.tcp_port = 0  # UDP relays (Stack.relay passes it on)
        self.port_a, self.port_b = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        self.http_port = free_port(socket.SOCK_STREAM)
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.transceiver = self.spawn("transceiver", [
            PARLEY, "transceiver", "--routing-key", self.key, "--http-port", str(self.http_port),
            "--media-host", "127.0.0.1", "--media-port", "0", "--workers", "1", "--api-key", API_KEY,
            "--metrics-port", str(free_port()), "--demo-page", "--relay-network", "127.0.0.0/8",
            "--relay", f"a=127.0.0.1:{self.port_a}", "--relay", f"b=127.0.0.1:{self.port_b}", "--region", "a", *extra])
        wait_http(f"{self.base}/healthz")


def candidates(answer):
    """(port, priority) of each candidate of an answer, as listed."""
    return [(int(m.group(2)), int(m.group(1))) for m in
            __import__("re").finditer(r"^a=candidate:\S+ 1 udp (\d+) \S+ (\d+) typ host", answer, __import__("re").MULTILINE)]


def test_the_answer_lists_the_clients_region_first_and_the_other_after_it(tmp_path):
    stack = TwoRelays(tmp_path, extra=["--trusted-proxy", "127.0.0.1/32"])
    try:
        from aiortc import RTCPeerConnection

        async def offer():
            pc = RTCPeerConnection()
            pc.addTransceiver("audio")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
            await pc.close()
            return sdp
        sdp = asyncio.run(offer())

        def answer(headers=None):
            request = urllib.request.Request(stack.base + "/v1/realtime/calls", data=sdp.encode(),
                                             method="POST", headers={"Content-Type": "application/sdp", **auth(), **(headers or {})})
            with urllib.request.urlopen(request, timeout=10) as response:
                return candidates(response.read().decode())
        own = answer()
        assert [port for port, _ in own] == [stack.port_a, stack.port_b] and own[0][1] > own[1][1], own
        steered = answer({"X-Parley-Region": "b"})
        assert [port for port, _ in steered] == [stack.port_b, stack.port_a] and steered[0][1] > steered[1][1], steered
        assert [port for port, _ in answer({"X-Parley-Region": "nowhere"})] == [stack.port_a, stack.port_b]
        # The edge (a trusted proxy, here 127.0.0.1) says where the client is; without it, the
        # client's network decides (--client-region), and a client's own header is not believed.
        (tmp_path / "networks").mkdir()
        networked = TwoRelays(tmp_path / "networks", extra=["--client-region", "127.0.0.0/8=b"])
        try:
            request = urllib.request.Request(networked.base + "/v1/realtime/calls", data=sdp.encode(), method="POST",
                                             headers={"Content-Type": "application/sdp", "X-Parley-Region": "a", **auth()})
            with urllib.request.urlopen(request, timeout=10) as response:
                ports = [port for port, _ in candidates(response.read().decode())]
            assert ports == [networked.port_b, networked.port_a], ports
        finally:
            networked.stop()
    finally:
        stack.stop()
        print(stack.logs())


def test_chromium_moves_to_the_other_relay_when_its_relay_dies(tmp_path):
    """Relay A (the first candidate) is killed mid-call: Chromium's checks on its other pair, through
    relay B, keep that pair valid all along, and it moves the call there; same DTLS association."""
    stack = TwoRelays(tmp_path)
    relay_a = stack.relay(redis="", public_port=stack.port_a)
    stack.relay(redis="", public_port=stack.port_b)
    driver = chromium()
    try:
        driver.get(stack.page())
        wait_for(driver, lambda s: s["state"] == "connected", 20, "connected")
        wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 20, "echoed audio")
        wait_for(driver, lambda s: s["channelState"] == "open", 10, "oai-events open")
        time.sleep(3)  # a few rounds of Chromium's checks on the backup pair
        driver.execute_script("""
            window.arrivals = []; window.pairChanges = []; window.pair = undefined;
            setInterval(async () => {
                const stats = await window.parley.pc.getStats();
                stats.forEach(s => {
                    if (s.type === 'inbound-rtp' && s.kind === 'audio') window.arrivals.push([performance.now(), s.packetsReceived]);
                    if (s.type === 'transport' && s.selectedCandidatePairId !== window.pair) {
                        window.pair = s.selectedCandidatePairId;
                        window.pairChanges.push(performance.now());
                    }
                });
            }, 20);
            window.echoes = 0;
            window.parley.channel.addEventListener('message', () => window.echoes++);
            window.sent = 0;
            window.sender = setInterval(() => { window.parley.channel.send(JSON.stringify({type: 'tick', n: window.sent++})); }, 100);""")
        time.sleep(1)
        killed_at = driver.execute_script("return performance.now()")
        relay_a.send_signal(signal.SIGKILL)
        relay_a.wait()
        deadline = time.time() + 20
        resumed = None
        while time.time() < deadline and resumed is None:
            time.sleep(0.2)
            arrivals = driver.execute_script("return window.arrivals")
            before = [count for at, count in arrivals if at <= killed_at]
            after = [(at, count) for at, count in arrivals if at > killed_at and count > (before[-1] if before else 0) + 5]
            if after:
                resumed = after[0][0]
        assert resumed is not None, "audio did not come back through relay B within 20 s"
        gap = (resumed - killed_at) / 1000
        time.sleep(2)
        driver.execute_script("clearInterval(window.sender)")
        time.sleep(1)
        sent, echoes = driver.execute_script("return [window.sent, window.echoes]")
        switched = [(at - killed_at) / 1000 for at in driver.execute_script("return window.pairChanges") if at > killed_at]
        state = driver.execute_script("return window.parley")
        print(f"relay A killed: audio back through relay B after {gap:.2f} s; data-channel messages {echoes}/{sent} echoed; "
              f"Chromium changed its selected pair {', '.join(f'{t:.2f}' for t in switched) or 'never'} s after the kill; page state {state['state']}")
        assert state["state"] == "connected"
        assert echoes == sent, f"data-channel messages lost across the move: {echoes}/{sent}"
        assert gap < 8, gap  # Chromium: ~3.6 s to give up on the dead pair (its unwritable timeout), then Parley follows
    finally:
        driver.quit()
        stack.stop()
        print(stack.logs())


def test_regions_py_up_prints_both_regions_and_stops_cleanly(tmp_path):
    """`Tests/Tools/regions.py up`, as a person runs it: one JSON line when both regions answer,
    demo pages that load, and everything gone after SIGTERM (region B's namespace too)."""
    require(os.geteuid() == 0 and os.path.exists("/dev/net/tun"), "two regions need namespaces and /dev/net/tun (scripts/interop.sh)")
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tools", "regions.py")
    process = subprocess.Popen([sys.executable, tool, "up", "--state-dir", str(tmp_path / "state"), "--one-way-ms", "5"],
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "regions.err", "w"), text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, (tmp_path / "regions.err").read_text()
        info = json.loads(process.stdout.readline())
        assert info["event"] == "ready" and set(info["regions"]) == {"a", "b"}, info
        for region in info["regions"].values():
            with urllib.request.urlopen(region["page"], timeout=5) as response:
                assert response.status == 200 and b"RTCPeerConnection" in response.read()
        namespace_b = info["regions"]["b"]["namespace"]
        assert os.path.exists(f"/var/run/netns/{namespace_b}")
        assert "Ctrl-C stops everything" in (tmp_path / "regions.err").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode == 0, (tmp_path / "regions.err").read_text()
    assert not os.path.exists(f"/var/run/netns/{namespace_b}"), "region B's namespace was left behind"
    assert not os.path.exists(tmp_path / "state" / "regions.json")


@contextlib.contextmanager
def firefox_off_localhost(tmp_path, port):
    """Headless Firefox over Marionette, allowed to use its fake microphone on a page that is not on
    localhost (region B's signaling); yields the client and the page's Xray path (test_firefox.PAGE)."""
    from test_firefox import PAGE, firefox
    with firefox(tmp_path, port, **{"media.devices.insecure.enabled": True, "media.getusermedia.insecure.enabled": True}) as client:
        yield client, PAGE


def firefox_echo_test(client, page, sizes):
    from test_firefox import echo_test
    return echo_test(client, sizes)


def test_firefox_enters_at_relay_a_and_calls_cluster_two_across_the_link(regions, tmp_path):
    """Headless Firefox (its own ICE, NSS DTLS, usrsctp) in region A calls cluster 2 through relay
    A: echoed audio, and oai-events messages of 1 B to 256 KiB echoed byte for byte across the link."""
    from test_firefox import wait_for as firefox_wait_for
    with firefox_off_localhost(tmp_path, 2831) as (client, page):
        client.timeout.script = 90
        client.navigate(regions.page(regions.base_b))
        firefox_wait_for(client, lambda s: s["state"] == "connected", 30, "connected through relay A into cluster 2")
        state = firefox_wait_for(client, lambda s: s["stats"].get("packetsReceived", 0) >= 200, 20, "4 s of echoed audio")
        firefox_wait_for(client, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
        results = firefox_echo_test(client, page, [1, 1024, 65536, 262144])
        assert results == [{"size": 1, "ok": True}, {"size": 1024, "ok": True}, {"size": 65536, "ok": True},
                           {"size": 262144, "ok": True}, {"size": "text", "ok": True}], results
        rtt = state["stats"].get("roundTripTime")
        print(f"Firefox across regions: {state['stats'].get('packetsReceived')} packets echoed, RTT {(rtt or 0) * 1000:.1f} ms")


LOSSY = "delay=40ms,jitter=30ms,loss=5%,reorder=2%:20ms"  # 10-70 ms each way, 5% lost, some reordered


@pytest.fixture
def lossy_regions(tmp_path):
    require(os.geteuid() == 0 and os.path.exists("/dev/net/tun"), "two regions need namespaces and /dev/net/tun (scripts/interop.sh)")
    topology = regions_tool.Topology(tmp_path / "regions", 40, API_KEY, link=LOSSY).start()
    yield topology
    topology.stop()
    for process in topology.processes:
        print(f"--- {os.path.basename(process.log_path)}\n" + open(process.log_path).read()[-3000:])


def test_chromium_and_firefox_across_a_lossy_reordering_link(lossy_regions, tmp_path):
    """Both browsers call cluster 2 through relay A across a link with 5% loss, +-30 ms jitter (which
    reorders 20 ms audio packets) and 2% of packets held back 20 ms more: audio keeps flowing and
    oai-events messages of 1 B-256 KiB arrive back intact (Firefox's usrsctp included)."""
    from test_firefox import wait_for as firefox_wait_for
    regions = lossy_regions
    sizes = [1, 1024, 65536, 262144]
    expected = [{"size": size, "ok": True} for size in sizes] + [{"size": "text", "ok": True}]
    driver = chromium(f"--unsafely-treat-insecure-origin-as-secure={regions.base_b}")
    try:
        driver.get(regions.page(regions.base_b))
        wait_for(driver, lambda s: s["state"] == "connected", 30, "Chromium connected across the lossy link")
        wait_for(driver, lambda s: s["channelState"] == "open", 30, "oai-events open")
        before = driver.execute_script("return window.parley.stats.packetsReceived || 0")
        results = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"window.parley.echoTest({sizes}).then(done, (e) => done(String(e)))")
        assert results == expected, results
        time.sleep(3)
        stats = driver.execute_script("return window.parley.stats")
        print(f"Chromium across the lossy link: {stats.get('packetsReceived', 0) - before} packets during the data test and 3 s, "
              f"lost {stats.get('packetsLost')}, jitter {stats.get('jitter')}, RTT {stats.get('roundTripTime')}")
        assert stats.get("packetsReceived", 0) - before >= 100, stats
    finally:
        driver.quit()
    with firefox_off_localhost(tmp_path, 2832) as (client, page):
        client.timeout.script = 120
        client.navigate(regions.page(regions.base_b))
        firefox_wait_for(client, lambda s: s["state"] == "connected", 30, "Firefox connected across the lossy link")
        firefox_wait_for(client, lambda s: s["channelState"] == "open", 30, "oai-events open")
        results = firefox_echo_test(client, page, sizes)
        assert results == expected, results
        state = firefox_wait_for(client, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 20, "echoed audio")
        print(f"Firefox across the lossy link: {state['stats'].get('packetsReceived')} packets, lost {state['stats'].get('packetsLost')}")


def test_region_bs_relay_restart_recovers_a_cross_region_call_from_region_bs_redis(regions):
    """Across the 40 ms link: Chromium in region A calls cluster 2 through relay A; relay B (the
    owning cluster's) is killed and restarted in region B, and recovers the forwarded flow from
    region B's Redis at relay A's next forwarded packet."""
    driver = chromium(f"--unsafely-treat-insecure-origin-as-secure={regions.base_b}")
    try:
        driver.get(regions.page(regions.base_b))
        wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 20, "echoed audio across the link")
        time.sleep(1)  # the route reaches region B's Redis asynchronously
        arguments = regions.relay_b.args
        regions.relay_b.kill()
        regions.relay_b.wait()
        killed = time.monotonic()
        before = driver.execute_script("return window.parley.stats.packetsReceived")
        time.sleep(0.3)
        regions.relay_b = regions.spawn("relay-b-restarted", arguments)
        resumed = None
        while resumed is None and time.monotonic() - killed < 10:
            time.sleep(0.05)
            if driver.execute_script("return window.parley.stats.packetsReceived") > before + 10:
                resumed = time.monotonic() - killed
        assert resumed is not None, "audio did not resume through the restarted relay B"
        print(f"relay B restarted across the link: audio back {resumed * 1000:.0f} ms after the kill (0.3 s of it before the restart)")
        # The log line can trail the audio it let through by a moment (the process writes it after forwarding).
        deadline = time.monotonic() + 3
        while "route recovered from the store" not in (log := open(regions.relay_b.log_path).read()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "route recovered from the store" in log and " via " in log, log[-2000:]
        assert driver.execute_script("return window.parley.state") == "connected"
    finally:
        driver.quit()


@pytest.fixture
def tcp_regions(tmp_path):
    """The two regions with ICE-TCP on both relays (issue 15, Global Relay for TCP flows)."""
    require(os.geteuid() == 0 and os.path.exists("/dev/net/tun"), "two regions need namespaces and /dev/net/tun (scripts/interop.sh)")
    topology = regions_tool.Topology(tmp_path / "regions", ONE_WAY_MS, API_KEY, tcp=True).start()
    yield topology
    topology.stop()
    for process in topology.processes:
        print(f"--- {os.path.basename(process.log_path)}\n" + open(process.log_path).read()[-3000:])


def test_chromium_over_tcp_enters_at_relay_a_and_its_call_lives_in_cluster_two(tcp_regions):
    """Chromium in region A, with UDP to both relays dropped, reaches relay A over TCP; relay A
    forwards the TCP flow by its token to cluster 2's relay across the link (two-stage, the TCP flag
    kept), and the answers come back the same way as frames on the connection."""
    from test_chromium import DroppedUDP
    regions = tcp_regions
    with DroppedUDP("ip", [regions.public_a, regions.public_b]) as drop:
        driver = chromium(f"--unsafely-treat-insecure-origin-as-secure={regions.base_b}")
        try:
            driver.get(regions.page(regions.base_b))
            state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 40, "2 s of echoed audio over TCP")
            assert drop.dropped() > 0
            assert state["stats"]["remoteAddress"] == f"127.0.0.1:{regions.tcp_port}", state["stats"]
            protocol = driver.execute_script("""
                const report = await window.parley.pc.getStats();
                for (const s of report.values()) if (s.type === "transport" && s.selectedCandidatePairId)
                    return report.get(report.get(s.selectedCandidatePairId).remoteCandidateId).protocol;""")
            assert protocol == "tcp"
            call = json.loads(urllib.request.urlopen(urllib.request.Request(
                f"{regions.base_b}/v1/realtime/calls/{state['callId']}", headers=auth(API_KEY)), timeout=5).read())
            # Cluster 2's transceiver sees a TCP client: the TCP flag crossed both legs.
            assert call["state"] == "connected" and call["transport"] == "tcp", call
            wait_for(driver, lambda s: s["channelState"] == "open", 20, "the oai-events channel open")
            results = driver.execute_async_script(
                "const done = arguments[0]; window.parley.echoTest([1, 1024, 65536, 262144]).then(done, (e) => done(String(e)))")
            assert results == [{"size": 1, "ok": True}, {"size": 1024, "ok": True}, {"size": 65536, "ok": True},
                               {"size": 262144, "ok": True}, {"size": "text", "ok": True}], results
            state = driver.execute_script("return window.parley")
            print(f"ICE-TCP across regions: timeline {state['timings']}, RTT {state['stats'].get('roundTripTime')}")
        finally:
            driver.quit()
