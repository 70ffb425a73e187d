"""Hostile peers against `parley dev`: media with absurd RTP timestamps, a client that stops
answering Parley's consent checks, checks spoofed from a victim's or a bystander's address, and
floods of forged, replayed and unroutable datagrams from spoofed sources beside a live Chromium call.

Everything here asserts on behaviour — what keeps flowing, what ends, what reaches whom — never on
how fast Parley does it. The spoofing tests build IPv4/UDP headers by hand on a raw socket
(`IPPROTO_RAW`, so they need CAP_NET_RAW: scripts/interop.sh runs pytest as root inside a
loopback-only namespace, where any 127.0.0.0/8 source is deliverable) and watch what the relay sends
with an AF_PACKET socket on loopback behind a classic BPF filter.

`AiortcCall` (an aiortc call with a tone, counting the echoed frames it decodes) is also used by
test_pion.py for the aiortc call that runs beside the 90-second Pion call.
"""
import asyncio
import base64
import ctypes
import hashlib
import hmac
import inspect
import multiprocessing
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import aiortc.rtcrtpsender
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from conftest import ParleyProcess, free_port, require
from test_aiortc import Tone  # importing it also makes aioice offer 127.0.0.1 as a host candidate
from test_chromium import chromium, wait_for


# ---------------------------------------------------------------------------------------------
# aiortc calls


class AiortcCall:
    """One aiortc call to `parley dev`: a 440 Hz tone out, the echo agent's frames back. Records the
    arrival time of every decoded echoed frame and every connection-state change. Create it inside
    a running event loop; `start` signals and waits for DTLS."""

    def __init__(self, parley):
        self.parley = parley
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.sender = self.pc.addTrack(Tone())
        self.frames = []  # time.monotonic() of each echoed frame with samples
        self.states = []  # (time.monotonic(), connectionState)
        self.location = self.answer = None
        self.dropped_requests = 0  # Binding requests from Parley ignored after stop_answering_checks()
        self._connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state():
            self.states.append((time.monotonic(), self.pc.connectionState))
            if self.pc.connectionState == "connected":
                self._connected.set()

        @self.pc.on("track")
        def on_track(track):
            async def consume():
                try:
                    while True:
                        frame = await track.recv()
                        if frame.samples > 0:
                            self.frames.append(time.monotonic())
                except MediaStreamError:
                    pass
            asyncio.ensure_future(consume())

    async def start(self, timeout=15):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, self.location, self.answer = await asyncio.get_running_loop().run_in_executor(
            None, self.parley.post_offer, self.pc.localDescription.sdp)
        assert status == 201, status
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer, type="answer"))
        await asyncio.wait_for(self._connected.wait(), timeout)
        self.connected_at = time.monotonic()
        return self

    @property
    def call_id(self):
        return self.location.rsplit("/", 1)[-1]

    @property
    def connection(self):
        """aiortc's aioice Connection (private attributes: aiortc has no public handle on it)."""
        return self.sender.transport.transport.iceGatherer._connection

    @property
    def local_address(self):
        """The client's address on the selected pair, as Parley sees it: (host, port)."""
        return self.connection._nominated[1].local_addr

    def stop_answering_checks(self):
        """From now on the client ignores every STUN Binding request it receives (Parley's consent
        checks) while still sending its own checks and media: aioice's request handler of this one
        connection is wrapped, the other calls of the process are untouched."""
        connection = self.connection
        original = connection.request_received

        def ignoring(message, addr, protocol):
            self.dropped_requests += 1

        connection.request_received = ignoring
        return original

    def frames_between(self, start, end):
        return sum(1 for t in self.frames if start <= t < end)

    def frames_per_window(self, start, window, count):
        return [self.frames_between(start + i * window, start + (i + 1) * window) for i in range(count)]

    async def status(self):
        """`GET <Location>` as JSON, or None once the call is gone (404)."""
        def get():
            try:
                return self.parley.get_json(self.location)
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                raise
        return await asyncio.get_running_loop().run_in_executor(None, get)

    async def remote_inbound(self):
        """The latest RTCP report block Parley sent about our stream (aiortc's remote-inbound-rtp), or None."""
        for stats in (await self.sender.getStats()).values():
            if stats.type == "remote-inbound-rtp":
                return stats
        return None

    async def close(self):
        await self.pc.close()


def ice_credentials(sdp):
    """(ufrag, pwd) of an SDP's first a=ice-ufrag / a=ice-pwd."""
    return (re.search(r"^a=ice-ufrag:(\S+)", sdp, re.M).group(1), re.search(r"^a=ice-pwd:(\S+)", sdp, re.M).group(1))


async def long_aiortc_call(parley, seconds, window=10):
    """An aiortc call held for `seconds` (Parley's status read every 5 s): the echoed frames per
    `window`, the statuses, and the client's connection states."""
    call = await AiortcCall(parley).start()
    start = time.monotonic()
    statuses = []
    while time.monotonic() - start < seconds:
        await asyncio.sleep(min(5, seconds - (time.monotonic() - start)))
        statuses.append(await call.status())
    held = time.monotonic() - start
    final = await call.status()
    states = [state for _, state in call.states]
    await call.close()
    return {"heldSeconds": held, "windows": call.frames_per_window(start, window, int(seconds // window)),
            "statuses": statuses, "final": final, "states": states}


# ---------------------------------------------------------------------------------------------
# Hostile RTP timestamps: a per-sender patch of the one call that makes them


_real_uint32_add = aiortc.rtcrtpsender.uint32_add
_hostile_senders = {}  # RTCRtpSender -> packets stamped so far


def _hostile_uint32_add(a, b):
    """aiortc.rtcrtpsender's uint32_add, except for senders in `_hostile_senders`, whose RTP
    timestamps alternate 0, 0xFFFFFFFF, 0, … (the caller is RTCRtpSender._run_rtp: its `self`)."""
    sender = sys._getframe(1).f_locals.get("self")
    if sender is not None and sender in _hostile_senders:
        count = _hostile_senders[sender]
        _hostile_senders[sender] = count + 1
        return 0 if count % 2 == 0 else 0xFFFFFFFF
    return _real_uint32_add(a, b)


class hostile_timestamps:
    """Context manager: installs `_hostile_uint32_add` and restores aiortc's own on exit. In aiortc
    1.16, rtcrtpsender calls uint32_add in exactly one place, the packet timestamp
    (`timestamp = uint32_add(timestamp_origin, enc_frame.timestamp)` in `_run_rtp`); checked here so
    an aiortc that uses it for something else fails loudly instead of testing something else."""

    def __enter__(self):
        source = inspect.getsource(aiortc.rtcrtpsender)
        uses = re.findall(r"uint32_add\(([^)]*)\)", source)
        assert uses == ["timestamp_origin, enc_frame.timestamp"], f"aiortc changed its use of uint32_add: {uses}"
        aiortc.rtcrtpsender.uint32_add = _hostile_uint32_add
        return self

    def add(self, sender):
        _hostile_senders[sender] = 0

    def remove(self, sender):
        return _hostile_senders.pop(sender, 0)

    def __exit__(self, *exc):
        aiortc.rtcrtpsender.uint32_add = _real_uint32_add
        _hostile_senders.clear()


# ---------------------------------------------------------------------------------------------
# Tests 1 and 2: one scenario, two calls at once on one parley (CI time), asserted separately

HOSTILE_SECONDS = 30


async def _hostile_timestamp_call(parley, call, patch):
    """30 s of alternating timestamps; a sample each second: process alive, status, RTCP report."""
    start = time.monotonic()
    samples = []
    while time.monotonic() - start < HOSTILE_SECONDS:
        await asyncio.sleep(1)
        status = await call.status()
        report = await call.remote_inbound()
        samples.append({"t": round(time.monotonic() - start, 1), "alive": parley.process.poll() is None,
                        "state": status and status["state"], "rtpReceived": status and status["rtpReceived"],
                        "jitter": report and report.jitter, "packetsLost": report and report.packetsLost,
                        "reportAt": report and report.timestamp})
    stamped = patch.remove(call.sender)
    echoed = call.frames_between(start, time.monotonic())
    await call.close()
    return {"samples": samples, "stamped": stamped, "echoedFrames": echoed}


async def _unanswering_call(parley, call):
    """Audio flows for a second; then the client ignores Parley's checks (but keeps its own checks
    and its media going) until Parley ends the call or 45 s pass."""
    await asyncio.sleep(1)
    call.stop_answering_checks()
    stopped = time.monotonic()
    polls = []
    ended = None
    while time.monotonic() - stopped < 45:
        await asyncio.sleep(0.5)
        status = await call.status()
        now = time.monotonic() - stopped
        if status is None:
            ended = now
            break
        polls.append({"t": round(now, 1), "state": status["state"], "rtpReceived": status["rtpReceived"]})
    await call.close()
    return {"polls": polls, "endedAfter": ended, "droppedRequests": call.dropped_requests, "callId": call.call_id}


async def _hostile_scenario(parley):
    with hostile_timestamps() as patch:
        hostile = AiortcCall(parley)
        patch.add(hostile.sender)  # before its first packet
        quiet = AiortcCall(parley)
        await asyncio.gather(hostile.start(), quiet.start())
        timestamps, consent = await asyncio.gather(_hostile_timestamp_call(parley, hostile, patch),
                                                   _unanswering_call(parley, quiet))
    # Then an ordinary call, with aiortc's own timestamps again.
    normal = await AiortcCall(parley).start()
    start = time.monotonic()
    await asyncio.sleep(3)
    status = await normal.status()
    normal_result = {"echoedFrames": normal.frames_between(start, time.monotonic()), "status": status}
    await normal.close()
    return {"timestamps": timestamps, "consent": consent, "normal": normal_result,
            "alive": parley.process.poll() is None}


@pytest.fixture(scope="module")
def hostile_calls(tmp_path_factory):
    """Runs both hostile calls at once on one `parley dev` (about 35 s), then an ordinary call;
    stops that parley and gives the tests the results and its log."""
    log = tmp_path_factory.mktemp("hostile") / "parley.log"
    parley = ParleyProcess(free_port(), free_port(socket.SOCK_DGRAM), log)
    try:
        started = time.monotonic()
        results = asyncio.run(_hostile_scenario(parley))
        print(f"hostile calls scenario: {time.monotonic() - started:.1f} s")
    finally:
        parley.stop()
        print(parley.logs()[-4000:])
    return parley.logs(), results


def test_hostile_timestamps_do_not_crash_and_another_call_connects(hostile_calls):
    """A client whose RTP timestamps alternate 0 and 0xFFFFFFFF for 30 s (every difference a 32-bit
    wrap) neither crashes Parley nor loses its call: the process stays up, the call stays connected
    and keeps counting received RTP, and the RTCP receiver reports Parley sends about that stream
    stay sane (jitter in the timestamp units of a 20 ms frame, not the ~2^31 a naive subtraction
    gives; no invented loss). Afterwards an ordinary call connects and hears its echo."""
    _, results = hostile_calls
    hostile = results["timestamps"]
    samples = hostile["samples"]
    print(f"hostile-timestamp call: {hostile['stamped']} packets stamped 0/0xFFFFFFFF, "
          f"{hostile['echoedFrames']} echoed frames decoded; per second: states "
          f"{sorted({sample['state'] for sample in samples}, key=str)}, rtpReceived {[s['rtpReceived'] for s in samples]}, "
          f"RTCP jitter {[s['jitter'] for s in samples]}, packetsLost {[s['packetsLost'] for s in samples]}")
    assert hostile["stamped"] >= HOSTILE_SECONDS * 30, f"the patch stamped only {hostile['stamped']} packets"
    assert all(sample["alive"] for sample in samples) and results["alive"], "parley exited"
    assert [sample["state"] for sample in samples] == ["connected"] * len(samples), samples
    received = [sample["rtpReceived"] for sample in samples]
    assert all(later > earlier for earlier, later in zip(received, received[1:])), received
    reports = [sample for sample in samples if sample["reportAt"] is not None]
    assert len({sample["reportAt"] for sample in reports}) >= HOSTILE_SECONDS // 3, "RTCP reports kept coming"
    # Jitter is in RTP timestamp units (48 kHz for Opus): 48,000 is one second.
    assert max(sample["jitter"] for sample in reports) < 48_000, [sample["jitter"] for sample in reports]
    assert all(0 <= sample["packetsLost"] <= 25 for sample in reports), [sample["packetsLost"] for sample in reports]
    normal = results["normal"]
    assert normal["status"]["state"] == "connected", normal
    assert normal["echoedFrames"] >= 100, f"the call after it decoded only {normal['echoedFrames']} echoed frames in 3 s"


def test_a_client_that_stops_answering_checks_is_ended_within_30_seconds(hostile_calls):
    """RFC 7675 consent kept by Parley itself: a connected client that stops answering Parley's
    Binding requests (it still sends media, and its own checks, which Parley answers) is ended
    with reason consent_expired 30 s after its last answer — so 24–30 s after it stopped answering
    (a check goes out every 4–6 s), allowing up to 40 s — and stays connected until then."""
    logs, results = hostile_calls
    consent = results["consent"]
    polls = consent["polls"]
    print(f"unanswering call: ended {consent['endedAfter']} s after it stopped answering; "
          f"{consent['droppedRequests']} of Parley's checks ignored; last polls: {polls[-4:]}")
    assert consent["endedAfter"] is not None, f"still alive 45 s after it stopped answering: {polls[-3:]}"
    assert 23.5 <= consent["endedAfter"] <= 40, consent["endedAfter"]
    assert [poll["state"] for poll in polls] == ["connected"] * len(polls), polls
    received = [poll["rtpReceived"] for poll in polls]
    assert received[-1] > received[0] + 20 * 50, "the client kept sending media until the end"
    # Parley kept checking (every 4-6 s) while nobody answered.
    assert consent["droppedRequests"] >= 3, consent["droppedRequests"]
    lines = [line for line in logs.splitlines() if consent["callId"] in line and "session closed" in line]
    assert lines and "reason=consent_expired" in lines[-1], lines


# ---------------------------------------------------------------------------------------------
# STUN and raw IPv4/UDP by hand (RFC 8489, RFC 8445)

STUN_MAGIC = 0x2112A442
PRIORITY = (110 << 24) | (65535 << 8) | 255  # a peer-reflexive candidate's (RFC 8445 §5.1.2.1)


def stun_attribute(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def binding_request(username, password, transaction=None, use_candidate=True, tiebreaker=None, bad_integrity=False):
    """A STUN Binding request as an ICE client in the controlling role sends it: USERNAME, PRIORITY,
    ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `password`, over the
    message up to it with the header length counting it) and FINGERPRINT (CRC-32 ^ 0x5354554E).
    `bad_integrity` inverts the HMAC (the FINGERPRINT still matches the bytes)."""
    transaction = transaction or os.urandom(12)
    body = stun_attribute(0x0006, username.encode())
    body += stun_attribute(0x0024, struct.pack("!I", PRIORITY))
    body += stun_attribute(0x802A, struct.pack("!Q", random.getrandbits(64) if tiebreaker is None else tiebreaker))
    if use_candidate:
        body += stun_attribute(0x0025, b"")
    header = struct.pack("!HHI", 0x0001, len(body) + 24, STUN_MAGIC) + transaction
    mac = hmac.new(password.encode(), header + body, hashlib.sha1).digest()
    if bad_integrity:
        mac = bytes(byte ^ 0xFF for byte in mac)
    body += stun_attribute(0x0008, mac)
    header = struct.pack("!HHI", 0x0001, len(body) + 8, STUN_MAGIC) + transaction
    body += stun_attribute(0x8028, struct.pack("!I", (zlib.crc32(header + body) ^ 0x5354554E) & 0xFFFFFFFF))
    return header + body


def stun_type(datagram):
    return struct.unpack("!H", datagram[:2])[0] if len(datagram) >= 20 else None


def ipv4_udp(source, destination, payload):
    """An IPv4 header (the kernel fills in the checksum and id of an IPPROTO_RAW packet) and a UDP
    header with checksum 0 (none, allowed for IPv4), from any source address we like."""
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                       socket.inet_aton(source[0]), socket.inet_aton(destination[0])) + udp


def raw_socket():
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        require(False, "spoofing source addresses needs CAP_NET_RAW (scripts/interop.sh runs the tests as root)")


# ---------------------------------------------------------------------------------------------
# Test 4: spoofed checks from a victim's and a bystander's address


def test_spoofed_check_from_a_victims_address_moves_nothing(parley):
    """An attacker A holding a call of its own forges its own session's checks — correctly signed
    with A's server password, USE-CANDIDATE set — with the source address of another caller V,
    several times, and once with the address of a bystander B that never took part in any call.
    Parley answers a valid check wherever it claims to come from, but believes the address only once
    its own Binding request is answered from there (V's and B's stacks cannot answer with A's
    credentials), so: V's audio keeps coming during and after the spoofing, A's session stays on
    A's real address, and B receives only a few small STUN messages (the answer and Parley's
    validation requests, at most 6) — never DTLS or RTP."""
    spoofer = raw_socket()
    relay = ("127.0.0.1", parley.media_port)
    bystander = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bystander.bind(("127.0.0.1", 0))
    bystander.settimeout(0.2)
    received = []  # (seconds after the bystander spoof, datagram)
    stop = threading.Event()

    def record():
        while not stop.is_set():
            try:
                data, _ = bystander.recvfrom(65535)
                received.append((time.monotonic(), data))
            except socket.timeout:
                pass

    async def scenario():
        victim, attacker = AiortcCall(parley), AiortcCall(parley)
        await asyncio.gather(victim.start(), attacker.start())
        await asyncio.sleep(1)
        victim_address, attacker_address = victim.local_address, attacker.local_address
        victim_before, attacker_before = await victim.status(), await attacker.status()
        server_ufrag, server_password = ice_credentials(attacker.answer)
        username = f"{server_ufrag}:{attacker.connection.local_username}"
        checks = 6
        recorder = threading.Thread(target=record, daemon=True)
        recorder.start()
        spoofed_at = time.monotonic()
        spoofer.sendto(ipv4_udp(bystander.getsockname(), relay, binding_request(username, server_password)), (relay[0], 0))
        for _ in range(checks):
            spoofer.sendto(ipv4_udp(victim_address, relay, binding_request(username, server_password)), (relay[0], 0))
            await asyncio.sleep(0.4)
        await asyncio.sleep(10 - (time.monotonic() - spoofed_at))
        victim_after, attacker_after = await victim.status(), await attacker.status()
        windows = victim.frames_per_window(spoofed_at, 1, 10)
        attacker_frames = attacker.frames_between(spoofed_at + 8, spoofed_at + 10)
        await asyncio.gather(victim.close(), attacker.close())
        return {"checks": checks, "spoofed_at": spoofed_at, "victim_address": victim_address,
                "attacker_address": attacker_address, "victim_before": victim_before, "victim_after": victim_after,
                "attacker_before": attacker_before, "attacker_after": attacker_after, "windows": windows,
                "attacker_frames": attacker_frames}

    try:
        result = asyncio.run(scenario())
    finally:
        stop.set()
    spoofed_at = result["spoofed_at"]
    messages = [(round(t - spoofed_at, 2), len(data), data[0], stun_type(data)) for t, data in received]
    print(f"victim {result['victim_address']}, attacker {result['attacker_address']}, bystander "
          f"{bystander.getsockname()}; victim's echoed frames per second from the first spoof: {result['windows']}; "
          f"bystander received (s, bytes, first byte, STUN type): {messages}")
    victim_before, victim_after = result["victim_before"], result["victim_after"]
    attacker_before, attacker_after = result["attacker_before"], result["attacker_after"]
    # The forged checks were valid and reached A's session: Parley answered them.
    assert attacker_after["checksAnswered"] >= attacker_before["checksAnswered"] + result["checks"] + 1, (
        attacker_before, attacker_after)
    # V's audio never stopped, and V's call is where it was.
    assert all(frames >= 20 for frames in result["windows"]), result["windows"]
    assert victim_after["state"] == "connected" and victim_after["client"] == victim_before["client"], victim_after
    assert victim_after["rtpReceived"] >= victim_before["rtpReceived"] + 9 * 50 * 0.8, (victim_before, victim_after)
    # A's session did not move to V's or B's address.
    assert attacker_after["state"] == "connected", attacker_after
    assert attacker_after["client"] == attacker_before["client"], (attacker_before, attacker_after)
    assert attacker_after["client"].startswith(f"127.0.0.1:{result['attacker_address'][1]} via "), attacker_after
    assert result["attacker_frames"] > 0, "the attacker's own call still works"
    # The bystander: the answer to the forged check and Parley's validation requests — small STUN only.
    assert messages, "Parley answered nothing: the forged check did not authenticate, so the test proves nothing"
    for _, length, first, _ in messages:
        assert first in (0x00, 0x01) and length <= 150, messages
    assert not any(20 <= first <= 63 or 128 <= first <= 191 for _, _, first, _ in messages), messages
    assert len(messages) <= 6, messages


# ---------------------------------------------------------------------------------------------
# Test 5: floods from spoofed sources beside a Chromium call

FLOOD_RATE = 20_000  # datagrams per second
FLOOD_SECONDS = 4
FLOOD_KINDS = ("forged_token", "replayed_token", "dtls", "rtp", "garbage")
GARBAGE_FIRST_BYTES = [b for b in range(256) if not (b <= 3 or 20 <= b <= 63 or 128 <= b <= 191)]


def forged_token(rng):
    """A routing token's shape (version 1, key 0, cluster 0, 21 random bytes: 32 characters) that
    fails its tag: a relay must parse the check and compute the tag to reject it."""
    return base64.b64encode(bytes([0x10, 0, 0]) + rng.randbytes(21)).decode()


def flood_payload(kind, index, rng, replay):
    if kind == "forged_token":
        return binding_request(f"{forged_token(rng)}:{rng.randbytes(3).hex()}", "x" * 22, transaction=rng.randbytes(12))
    if kind == "replayed_token":
        # Half the exact bytes of a real, already-answered check; half checks of the same session
        # (valid token) with new transaction ids and a wrong MESSAGE-INTEGRITY.
        return replay["bytes"] if index % 2 == 0 else binding_request(
            replay["username"], replay["password"], transaction=rng.randbytes(12), bad_integrity=True)
    if kind == "dtls":
        return bytes([22, 0xFE, 0xFD]) + rng.randbytes(rng.randrange(10, 200))
    if kind == "rtp":
        return bytes([0x80, 111]) + rng.randbytes(rng.randrange(10, 200))
    return bytes([rng.choice(GARBAGE_FIRST_BYTES)]) + rng.randbytes(rng.randrange(0, 200))


def spoofed_source(rng, avoid_port):
    """A random address in 127.0.0.0/8 other than 127.0.0.1 (no .0 or .255 host byte), random port."""
    while True:
        address = f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        port = rng.randrange(1024, 65536)
        if address != "127.0.0.1" and port != avoid_port:
            return address, port


def kernel_drops(port):
    """Datagrams the kernel dropped on the sockets bound to `port` (/proc/net/udp) plus the
    per-CPU backlog drops (/proc/net/softnet_stat)."""
    total = 0
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}"):
                total += int(fields[-1])
    with open("/proc/net/softnet_stat") as softnet:
        total += sum(int(line.split()[1], 16) for line in softnet)
    return total


def flood(connection, relay, seed, replay):
    """Child process: builds FLOOD_RATE × FLOOD_SECONDS spoofed datagrams of each kind, says "ready",
    waits for "go", then sends each kind in turn, paced in batches every millisecond, and reports
    what it achieved and what the kernel dropped meanwhile."""
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    total = FLOOD_RATE * FLOOD_SECONDS
    packets = {kind: [ipv4_udp(spoofed_source(rng, relay[1]), relay, flood_payload(kind, i, rng, replay))
                      for i in range(total)] for kind in FLOOD_KINDS}
    connection.send("ready")
    connection.recv()
    results = []
    destination = (relay[0], 0)
    for kind in FLOOD_KINDS:
        batch = packets[kind]
        dropped_before = kernel_drops(relay[1])
        sent = errors = 0
        began = time.monotonic()  # CLOCK_MONOTONIC: comparable with the parent's
        started = time.perf_counter()
        while sent + errors < total:
            due = min(total, int((time.perf_counter() - started) * FLOOD_RATE) + 1)
            while sent + errors < due:
                try:
                    sock.sendto(batch[sent + errors], destination)
                    sent += 1
                except OSError:
                    errors += 1
            time.sleep(0.0005)
        seconds = time.perf_counter() - started
        ended = time.monotonic()
        time.sleep(0.3)  # the relay drains its socket
        results.append({"kind": kind, "sent": sent, "errors": errors, "seconds": round(seconds, 3),
                        "began": began, "ended": ended,
                        "rate": round(sent / seconds), "kernelDrops": kernel_drops(relay[1]) - dropped_before})
    connection.send(results)


class RelaySniffer(threading.Thread):
    """UDP datagrams seen leaving on loopback by an AF_PACKET socket: every one from 127.0.0.1:`port`
    (the relay's public socket), and every one from any socket to a 127.0.0.0/8 address other than
    127.0.0.1 (where all spoofed sources are: a reply to one of them from anywhere in Parley). A
    classic BPF filter keeps only those outgoing IPv4/UDP packets (each loopback packet is
    otherwise seen twice, and the floods themselves would swamp Python)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        keep, drop = 15, 16
        program = [
            (0x20, 0, 0, 0xFFFFF004),                # 0  ld  pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE)
            (0x15, 0, drop - 2, 4),                  # 1  jeq PACKET_OUTGOING
            (0x28, 0, 0, 12),                        # 2  ldh ethertype (loopback has a 14-byte Ethernet header)
            (0x15, 0, drop - 4, 0x0800),             # 3  jeq IPv4
            (0x30, 0, 0, 23),                        # 4  ldb IP protocol
            (0x15, 0, drop - 6, 17),                 # 5  jeq UDP
            (0x20, 0, 0, 30),                        # 6  ld  IP destination
            (0x15, 0, 13 - 8, 0x7F000001),           # 7  jeq 127.0.0.1, else to 13
            (0x20, 0, 0, 26),                        # 8  ld  IP source
            (0x15, 0, drop - 10, 0x7F000001),        # 9  jeq 127.0.0.1
            (0xB1, 0, 0, 14),                        # 10 ldxb 4*([14]&0xf): IP header length
            (0x48, 0, 0, 14),                        # 11 ldh [x+14]: UDP source port
            (0x15, keep - 13, drop - 13, port),      # 12 jeq the relay's port
            (0x54, 0, 0, 0xFF000000),                # 13 and: the destination's first byte
            (0x15, keep - 15, drop - 15, 0x7F000000),  # 14 jeq 127.x.y.z (not 127.0.0.1)
            (0x06, 0, 0, 0x40000),                   # 15 ret: keep
            (0x06, 0, 0, 0),                         # 16 ret: drop
        ]
        code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
        self._code = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(program), ctypes.addressof(self._code))
        self.socket.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
        self.socket.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        self.socket.bind(("lo", 0x0003))
        self.socket.setblocking(False)
        try:
            while self.socket.recv(65535):  # whatever arrived before the filter was attached
                pass
        except BlockingIOError:
            pass
        self.socket.settimeout(0.2)
        self.statistics()  # reading the statistics resets them
        # (source "ip:port", destination "ip:port", first payload byte, payload length)
        self.datagrams = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                frame = self.socket.recv(65535)
            except socket.timeout:
                continue
            ip = frame[14:]
            header = (ip[0] & 0x0F) * 4
            source_port, destination_port = struct.unpack("!HH", ip[header:header + 4])
            payload = ip[header + 8:]
            self.datagrams.append((f"{socket.inet_ntoa(ip[12:16])}:{source_port}",
                                   f"{socket.inet_ntoa(ip[16:20])}:{destination_port}",
                                   payload[0] if payload else None, len(payload)))

    def statistics(self):
        """(packets, drops) the filter passed since the last call (PACKET_STATISTICS)."""
        return struct.unpack("II", self.socket.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS

    def stop(self):
        self.stopping.set()
        self.join(timeout=2)
        return self.statistics()


def read_metrics(parley):
    """`GET /metrics` as {(name, ((label, value), …)): number}."""
    text = parley.metrics()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if match and not line.startswith("#"):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")))
            values[(match.group(1), labels)] = float(match.group(3))
    return values


def metric(values, name, **labels):
    """The sum of `name` over the series whose labels include `labels`."""
    return sum(value for (series, series_labels), value in values.items()
               if series == name and set(labels.items()) <= set(series_labels))


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.M).group(1)) * 1024


def inbound_packets(driver):
    """inbound-rtp packetsReceived from the page's RTCPeerConnection, read now (not the page's copy)."""
    return driver.execute_async_script("""
        const done = arguments[0];
        pc.getStats().then((report) => {
          let received = null;
          report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") received = s.packetsReceived; });
          done(received);
        }, (error) => done(String(error)));""")


async def _replayable_check(parley):
    """A second session, signaled with aiortc's offer but never connected by aiortc: our own ICE
    credentials (its offer's) and Parley's (the answer), and a correctly signed check for it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(Tone())
    await pc.setLocalDescription(await pc.createOffer())
    status, location, answer = await asyncio.get_running_loop().run_in_executor(None, parley.post_offer, pc.localDescription.sdp)
    client_ufrag, _ = ice_credentials(pc.localDescription.sdp)
    await pc.close()
    server_ufrag, server_password = ice_credentials(answer)
    username = f"{server_ufrag}:{client_ufrag}"
    return {"username": username, "password": server_password, "bytes": binding_request(username, server_password),
            "location": location}


def test_relay_floods_leave_a_chromium_call_untouched(parley_with):
    """A headless Chromium call through the relay while spoofed sources all over 127.0.0.0/8 (never
    127.0.0.1) send ~20,000 datagrams/s for ~4 s of each kind: (a) checks with forged tokens,
    (b) a real check of another session (sent once from its real socket and answered) replayed
    byte for byte, interleaved with checks carrying that session's valid token but a wrong
    MESSAGE-INTEGRITY, (c) DTLS-looking, (d) RTP-looking and (e) garbage datagrams; the relay's
    store lookups are limited to 100/s per worker (`--store-lookup-rate 100`, 2 workers).

    Asserted: the call's audio never stops (the page's inbound-rtp packetsReceived, read every
    500 ms, grows in every sample); parley's RSS grows by less than 10 MiB; the relay sends not one
    datagram to a spoofed source (an AF_PACKET capture of everything leaving its public port sees
    only the Chromium client and our capture socket, nothing on loopback goes to any 127.x.y.z other
    than 127.0.0.1 from any socket, and the capture dropped nothing); store lookups grow by at
    most 100/s × 2 workers over the floods that ask + a burst of 100 per worker; and each flood is counted by its
    reason — bad_token for (a), pending_full for (b) (8 pending flows per token and worker pass to
    the transceiver, which drops them), no_route + lookup_rate_limited + lookup_queue_full for
    (c) and (d), unknown_protocol for (e) — each reason growing by at least 80% of what was sent of
    its kind less what the kernel dropped meanwhile (/proc/net/udp drops on the relay's sockets and
    softnet backlog drops), and by no more than was sent (no double counting). The store-lookup bound
    is 2 workers × (a burst of 100 + 100/s over the span of the DTLS and RTP floods + 0.5 s), since
    only an unknown source's DTLS/RTP/RTCP asks the store; `lookup_rate_limited` must have fired."""
    raw_socket().close()
    parley = parley_with("--store-lookup-rate", "100", "--workers", "2")
    relay = ("127.0.0.1", parley.media_port)
    workers = 2
    lookup_rate = 100

    # (b)'s material: a real check of a second session, sent once for real and answered.
    replay = asyncio.run(_replayable_check(parley))
    capture = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    capture.bind(("127.0.0.1", 0))
    capture.settimeout(2)
    capture_address = f"127.0.0.1:{capture.getsockname()[1]}"
    capture.sendto(replay["bytes"], relay)
    replies = []
    while not any(stun_type(reply) == 0x0101 and reply[8:20] == replay["bytes"][8:20] for reply in replies):
        try:
            replies.append(capture.recv(2048))  # Parley's own check comes first, then the answer
        except socket.timeout:
            raise AssertionError(f"the check to replay was not answered (so it is not valid): {replies}")

    seed = random.randrange(1 << 32)
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    flooder = context.Process(target=flood, args=(child_end, relay, seed, replay), daemon=True)
    flooder.start()
    driver = chromium()
    sniffer = None
    try:
        driver.get(parley.base + "/?autostart=1")
        state = wait_for(driver, lambda s: s["state"] == "connected", 20, "connection state 'connected'")
        state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100 and s["stats"].get("localAddress"),
                         20, "echoed audio")
        chromium_address = state["stats"]["localAddress"]
        assert parent_end.poll(60) and parent_end.recv() == "ready", "the flooder did not get ready"
        metrics_workers = {dict(labels)["worker"] for (name, labels) in read_metrics(parley)
                           if name == "parley_relay_routes" and dict(labels)["worker"] != "tcp"}  # UDP workers
        assert len(metrics_workers) == workers, metrics_workers

        sniffer = RelaySniffer(parley.media_port)
        sniffer.start()
        before = read_metrics(parley)
        rss_before = rss_bytes(parley.process.pid)
        measured_from = time.monotonic()
        samples = [inbound_packets(driver)]
        parent_end.send("go")
        results = None
        next_sample = time.monotonic() + 0.5
        tail_until = None
        while tail_until is None or time.monotonic() < tail_until:
            time.sleep(max(0, next_sample - time.monotonic()))
            next_sample += 0.5
            samples.append(inbound_packets(driver))
            if results is None and parent_end.poll():
                results = parent_end.recv()
                tail_until = time.monotonic() + 1.0  # and a second after the last flood
            assert flooder.is_alive() or results is not None, "the flooder died"
        time.sleep(2.5)  # relay workers report their drop counts once a second
        after = read_metrics(parley)
        measured_for = time.monotonic() - measured_from
        rss_after = rss_bytes(parley.process.pid)
        captured, sniffer_drops = sniffer.stop()
        call = parley.get_json(f"/v1/realtime/calls/{state['callId']}")
        final = driver.execute_script("return window.parley")
    finally:
        if sniffer is not None:
            sniffer.stopping.set()
        driver.quit()
        flooder.join(timeout=5)
        if flooder.is_alive():
            flooder.kill()
        capture.close()

    sent = {result["kind"]: result for result in results}
    for result in results:
        print(f"flood {result['kind']}: {result['sent']} datagrams in {result['seconds']} s = {result['rate']}/s "
              f"({result['errors']} send errors, {result['kernelDrops']} kernel drops)")
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    drops = {dict(labels)["reason"]: value for (name, labels), value in delta.items()
             if name == "parley_relay_drops_total" and value}
    transceiver_drops = {dict(labels)["reason"]: value for (name, labels), value in delta.items()
                         if name == "parley_drops_total" and value}
    lookups = metric(delta, "parley_relay_store_lookups_total")
    # Only unknown sources' DTLS/RTP/RTCP ask the store: at most a full bucket (the burst, `rate`
    # tokens) per worker, then `rate` per second per worker while those floods ran (+0.5 s slack).
    lookup_span = sent["rtp"]["ended"] - sent["dtls"]["began"]
    lookup_bound = workers * lookup_rate * (1 + lookup_span + 0.5)
    relay_address = f"127.0.0.1:{parley.media_port}"
    destinations = {}  # what the relay's public socket sent, by destination
    for source, destination, first, length in sniffer.datagrams:
        if source == relay_address:
            destinations.setdefault(destination, []).append((first, length))
    # From any socket at all to a spoofed address (127.x.y.z other than 127.0.0.1).
    to_spoofed = [datagram for datagram in sniffer.datagrams if not datagram[1].startswith("127.0.0.1:")]
    chromium_count = len(destinations.pop(chromium_address, []))
    capture_datagrams = destinations.pop(capture_address, [])
    print(f"Chromium at {chromium_address}: audio samples every 500 ms {samples}")
    print(f"parley RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
          f"(+{(rss_after - rss_before) / 2**20:.2f} MiB)")
    print(f"store lookups +{lookups:.0f} (bound {lookup_bound:.0f}: {workers} workers × ({lookup_rate} + {lookup_rate}/s × "
          f"{lookup_span:.1f} s of DTLS/RTP floods + 0.5 s)); measured over {measured_for:.1f} s; relay drops: {drops}; "
          f"transceiver drops: {transceiver_drops}")
    print(f"relay → Chromium: {chromium_count} datagrams; → our capture socket {capture_address} (the real "
          f"sender of the replayed check): {[(first, length) for first, length in capture_datagrams]}; → anyone else: "
          f"{ {address: len(items) for address, items in destinations.items()} }; from any socket to spoofed addresses: "
          f"{len(to_spoofed)}; capture filter passed "
          f"{captured}, dropped {sniffer_drops}; call status: {call}")

    # The call never noticed.
    assert all(later > earlier for earlier, later in zip(samples, samples[1:])), samples
    assert call["state"] == "connected" and final["state"] == "connected", (call, final["state"])
    # The floods happened at about the rate asked (a flood at a tenth of it would prove little).
    for kind in FLOOD_KINDS:
        assert sent[kind]["sent"] >= 0.95 * FLOOD_RATE * FLOOD_SECONDS and sent[kind]["rate"] >= 0.5 * FLOOD_RATE, sent[kind]
    # Memory, reflection, store load.
    assert rss_after - rss_before < 10 * 2**20
    assert sniffer_drops == 0, "the capture missed datagrams: no claim about reflection can be made"
    assert chromium_count > 0, "the capture saw the relay's audio to Chromium"
    assert destinations == {}, f"the relay sent datagrams to spoofed sources: {destinations}"
    assert to_spoofed == [], f"datagrams went to spoofed sources: {to_spoofed[:20]} ({len(to_spoofed)} in all)"
    # Our capture socket (the replayed check's real sender) got Parley's answer and validation requests only.
    assert all(first in (0x00, 0x01) and length <= 150 for first, length in capture_datagrams), capture_datagrams
    assert 0 < lookups <= lookup_bound, (lookups, lookup_bound)

    def arrived(*kinds):
        return sum(sent[kind]["sent"] - sent[kind]["kernelDrops"] for kind in kinds)

    def counted(*reasons):
        return sum(drops.get(reason, 0) for reason in reasons)

    for reasons, kinds in [(("bad_token",), ("forged_token",)),
                           (("pending_full",), ("replayed_token",)),
                           (("no_route", "lookup_rate_limited", "lookup_queue_full"), ("dtls", "rtp")),
                           (("unknown_protocol",), ("garbage",))]:
        assert 0.8 * arrived(*kinds) <= counted(*reasons) <= sum(sent[kind]["sent"] for kind in kinds), (
            reasons, kinds, drops, sent)
    assert drops.get("lookup_rate_limited", 0) > 0, drops
