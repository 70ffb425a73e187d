"""ICE-TCP (issue 15): clients on a network that drops UDP to the relay reach it over TCP
(RFC 6544, RFC 4571 frames) on the relay's public TCP port, and the call works as over UDP."""
import json
import os
import re
import socket
import struct
import time
import urllib.request

from conftest import free_port
from test_chromium import DroppedUDP, chromium, wait_for

SIZES = [1, 1024, 65536, 262144]
ECHOED = [{"size": size, "ok": True} for size in SIZES] + [{"size": "text", "ok": True}]


def candidates(answer):
    audio = answer.split("m=application")[0]
    return re.findall(r"^a=candidate:(\S+) 1 (udp|tcp) (\d+) (\S+) (\d+) typ host(.*)$", audio, re.MULTILINE)


def test_chromium_falls_back_to_tcp_when_udp_is_dropped(parley_with):
    parley = parley_with()
    with DroppedUDP("ip", parley.media_port) as drop:
        driver = chromium()
        try:
            started = time.time()
            driver.get(parley.base + "/?autostart=1")
            state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 30, "2 s of echoed audio over TCP")
            assert state["error"] is None
            answer = driver.execute_script("return window.parley.pc.remoteDescription.sdp")
            found = candidates(answer)
            assert [(transport, address, int(port)) for _, transport, _, address, port, _ in found] == [
                ("udp", "127.0.0.1", parley.media_port), ("tcp", "127.0.0.1", parley.media_port)], answer
            assert found[1][5].split()[:2] == ["tcptype", "passive"], found[1]
            assert int(found[0][2]) > int(found[1][2]), "TCP below UDP"
            assert drop.dropped() > 0, "Chromium tried UDP first"
            pair = driver.execute_script("""
                const report = await window.parley.pc.getStats();
                for (const s of report.values()) if (s.type === "transport" && s.selectedCandidatePairId) {
                    const pair = report.get(s.selectedCandidatePairId);
                    const local = report.get(pair.localCandidateId), remote = report.get(pair.remoteCandidateId);
                    return {local: local.protocol + " " + (local.tcpType || ""), remote: remote.protocol + " " + remote.port};
                }
                return null;""")
            assert pair == {"local": "tcp active", "remote": f"tcp {parley.media_port}"}, pair
            time.sleep(1.2)  # the relay publishes its counts once a second
            assert tcp_routes(parley) == 1, parley.metrics()
            call = parley.get_json(f"/v1/realtime/calls/{state['callId']}")
            assert call["state"] == "connected" and call["transport"] == "tcp", call
            state = wait_for(driver, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
            print(f"ICE-TCP setup (ms since Call): {state['timings']}, wall {time.time() - started:.1f} s")
            results = driver.execute_async_script(
                "const done = arguments[0]; window.parley.echoTest(%s).then(done, (e) => done(String(e)))" % json.dumps(SIZES))
            assert results == ECHOED, results
            before = driver.execute_script("return window.parley.stats.packetsReceived")
            time.sleep(1.5)
            assert driver.execute_script("return window.parley.stats.packetsReceived") > before + 50, "audio keeps flowing"
            # An ICE restart over TCP: new credentials (a new token), a new connection, the same call.
            tcp_local = driver.execute_script("return window.parley.stats.localAddress")
            driver.execute_async_script("const done = arguments[0]; window.parley.restartIce().then(() => done(), (e) => done(String(e)))")
            state = wait_for(driver, lambda s: s["stats"]["localAddress"] != tcp_local, 15, "the restarted ICE on a new connection")
            before = state["stats"]["packetsReceived"]
            state = wait_for(driver, lambda s: s["stats"]["packetsReceived"] > before + 50, 10, "audio after the ICE restart")
            assert state["iceRestarts"] == 1 and state["stats"]["remoteAddress"] == f"127.0.0.1:{parley.media_port}"
            assert parley.get_json(f"/v1/realtime/calls/{state['callId']}")["iceRestarts"] == 1
        finally:
            driver.quit()
    metrics = parley.metrics()
    assert re.search(r'parley_relay_packets_total\{direction="to_client"\} [1-9]', metrics), metrics


def tcp_routes(parley):
    """The relay's committed ICE-TCP routes, from its metrics (the TCP listener reports as worker "tcp")."""
    match = re.search(r'parley_relay_routes\{state="committed",worker="tcp"\} (\d+)', parley.metrics()) or \
        re.search(r'parley_relay_routes\{worker="tcp",state="committed"\} (\d+)', parley.metrics())
    return int(match.group(1)) if match else None


def test_firefox_falls_back_to_tcp_when_udp_is_dropped(parley_with, tmp_path):
    from test_firefox import echo_test, firefox, wait_for as firefox_wait_for
    parley = parley_with()
    with DroppedUDP("ip", parley.media_port) as drop, firefox(tmp_path) as client:
        client.navigate(parley.base + "/?autostart=1")
        state = firefox_wait_for(client, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 30, "2 s of echoed audio over TCP")
        assert state["error"] is None
        assert drop.dropped() > 0, "Firefox tried UDP first"
        time.sleep(1.2)  # the relay publishes its counts once a second
        assert tcp_routes(parley) == 1, parley.metrics()
        assert parley.get_json(f"/v1/realtime/calls/{state['callId']}")["transport"] == "tcp"
        firefox_wait_for(client, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
        assert echo_test(client, SIZES) == ECHOED


# ---------------------------------------------------------------------------------------------
# The relay's TCP side on its own: a `parley relay` with a Python socket as its transceiver worker.

class Relay:
    """`parley relay` with ICE-TCP on a free port, its worker a UDP socket of this test's."""

    def __init__(self, tmp_path):
        import secrets
        import subprocess
        from conftest import PARLEY
        self.key = secrets.token_hex(32)
        self.worker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.worker.bind(("127.0.0.1", 0))
        self.worker.settimeout(2)
        self.udp_port, self.tcp_port, self.metrics_port = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        self.log_path = tmp_path / "relay.log"
        self.process = subprocess.Popen(
            [PARLEY, "relay", "--routing-key", self.key, "--public-host", "127.0.0.1", "--public-port", str(self.udp_port),
             "--public-tcp-port", str(self.tcp_port), "--worker-network", "127.0.0.0/8", "--workers", "1",
             "--metrics-port", str(self.metrics_port), "--log-level", "debug"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        self.ufrag = subprocess.run([PARLEY, "token", "--routing-key", self.key, "--worker",
                                     f"127.0.0.1:{self.worker.getsockname()[1]}"], capture_output=True, text=True,
                                    check=True).stdout.strip()

    def stop(self):
        """SIGTERM drains (a committed route idles out first); a second one ends it now."""
        self.process.terminate()
        try:
            self.process.wait(timeout=3)
        except Exception:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.worker.close()


    def metrics_text(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def metrics(self):
        """{(name, labels): value}, as test_hostile.read_metrics reads a `parley dev`'s."""
        from test_hostile import read_metrics
        return read_metrics(type("Source", (), {"metrics": lambda _: self.metrics_text()})())


def framed(payload):
    return struct.pack("!H", len(payload)) + payload


def read_frame(connection):
    header = recv_exactly(connection, 2)
    return recv_exactly(connection, struct.unpack("!H", header)[0])


def recv_exactly(connection, count):
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        assert chunk, f"the relay closed the connection after {len(data)} of {count} bytes"
        data += chunk
    return data


def closed_by_peer(connection, within):
    """True when the relay closes the connection (EOF or reset) within `within` seconds."""
    connection.settimeout(within)
    try:
        while True:
            if connection.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_the_relays_tcp_side_closes_what_is_not_ice_and_bounds_each_connection(tmp_path):
    from test_hostile import binding_request
    relay = Relay(tmp_path)
    try:
        address = ("127.0.0.1", relay.tcp_port)
        # Anything but a check whose token opens, first: closed at once.
        for first in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", framed(bytes([22, 0xFE, 0xFD]) + bytes(40)),
                      framed(binding_request("notatoken:cli1", "x")), b"\xff\xff" + bytes(100)):
            connection = socket.create_connection(address)
            connection.sendall(first)
            assert closed_by_peer(connection, 2), first[:16]
            connection.close()
        # Silence: closed after the first-frame timeout (5 s), not before.
        silent = socket.create_connection(address)
        assert not closed_by_peer(silent, 3.5)
        assert closed_by_peer(silent, 3)
        silent.close()
        # 16 silent connections from one address, not 17 — until the oldest has waited a second,
        # when a new one closes it to make room.
        held = [socket.create_connection(address) for _ in range(16)]
        extra = socket.create_connection(address)
        assert closed_by_peer(extra, 0.5)
        assert not closed_by_peer(held[0], 0.3)
        time.sleep(1)
        newest = socket.create_connection(address)
        assert closed_by_peer(held[0], 1), "the oldest silent connection made room"
        assert not closed_by_peer(newest, 0.3)
        for connection in held + [extra, newest]:
            connection.close()
        time.sleep(1.2)
        values = relay.metrics()
        from test_hostile import metric
        # ("GE" announces an 18,245-byte frame: an HTTP request is closed as a frame too long.)
        assert metric(values, "parley_relay_tcp_closed_total", reason="first_frame_refused") == 2, values
        assert metric(values, "parley_relay_tcp_closed_total", reason="frame_too_long") == 2
        assert metric(values, "parley_relay_tcp_closed_total", reason="first_frame_timeout") == 1
        assert metric(values, "parley_relay_tcp_closed_total", reason="too_many_from_address") == 1
        assert metric(values, "parley_relay_tcp_closed_total", reason="evicted") == 1

        # A routed connection: the check reaches the worker in a tunnel datagram with the TCP flag,
        # the worker's check comes back as a frame, the client's answer commits the route.
        client = socket.create_connection(address)
        check = binding_request(f"{relay.ufrag}:cli1", "whatever")
        client.sendall(framed(check))
        datagram, tunnel = relay.worker.recvfrom(4096)
        host, port = client.getsockname()
        header = struct.pack("!BBHH4s", 0xD1, 0b001, 0x4000, port, socket.inet_aton(host))
        assert datagram == header + check, datagram[:12]
        transaction = os.urandom(12)
        server_check = binding_request(f"cli1:{relay.ufrag}", "client-password", transaction=transaction)
        to_client = struct.pack("!BBHH4s", 0xD1, 0b101, 0x4000, port, socket.inet_aton(host))
        relay.worker.sendto(to_client + server_check, tunnel)
        client.settimeout(2)
        assert read_frame(client) == server_check
        success = struct.pack("!HHI", 0x0101, 0, 0x2112A442) + transaction
        client.sendall(framed(success))
        assert relay.worker.recvfrom(4096)[0] == header + success

        # A reader that stops reading: the worker sends 40 MB its way; the relay holds at most its
        # write budget and drops the rest (tcp_backlog), and its memory does not grow with it.
        from test_hostile import rss_bytes
        before = rss_bytes(relay.process.pid)
        media = to_client + bytes([0x80, 111]) + bytes(998)
        for sent in range(40_000):
            relay.worker.sendto(media, tunnel)
            if sent % 200 == 199:
                time.sleep(0.005)  # paced (about 25,000/s), so the datagrams reach the relay, not the kernel's queue limit
        time.sleep(1.5)
        grown = rss_bytes(relay.process.pid) - before
        received = 0
        client.settimeout(0.5)
        try:
            while True:
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
        except socket.timeout:
            pass
        values = relay.metrics()
        dropped = metric(values, "parley_relay_drops_total", reason="tcp_backlog")
        print(f"slow reader: {received} bytes reached it of 40 MB, {dropped:.0f} frames dropped, relay RSS +{grown >> 20} MiB")
        assert dropped > 30_000, values
        assert received < 2_000_000, "the kernel's send buffer is kept small: a congested client loses packets, not seconds"
        assert grown < 16 << 20, grown
        client.close()
    finally:
        relay.stop()
        print(open(relay.log_path).read()[-3000:])


def tcp_call(stack):
    driver = chromium()
    driver.get(stack.page())
    state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 30, "audio over TCP")
    assert state["stats"]["remoteAddress"] == f"127.0.0.1:{stack.tcp_port}", state["stats"]
    return driver, state


def audio_again(driver, what, timeout=40):
    received = driver.execute_script("return window.parley.stats.packetsReceived")
    return wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) > received + 25, timeout, what)


def test_relays_replaced_under_a_tcp_call(tmp_path):
    """A relay's TCP connections end with its process; what Chromium does then (issue 15, item 3).

    1. A relay replaced the way docs/relay.md says (the new one takes the port over, then the old
       one stops): the old connection is reset, and Chromium (libwebrtc's TCPConnection) reconnects
       a writable outgoing connection from a new local port on its next send; the new relay gets
       the connection, its first frame is a check whose token opens, and the call goes on without
       an ICE restart.
    2. A relay killed and restarted a moment later: Chromium's one reconnection attempt meets a
       closed port, the pair fails and the ICE transport goes to `failed`; an ICE restart (the
       page's, as an app does on `failed`) brings the call back on the new relay."""
    import signal
    from test_relay_recovery import Stack
    stack = Stack(tmp_path, redis_args=None, tcp=True)
    old = stack.relay(redis="")
    with DroppedUDP("ip", stack.relay_port):
        driver, state = tcp_call(stack)
        try:
            first_address = state["stats"]["localAddress"]
            new = stack.relay(redis="", take_over=True)
            stopped = time.time()
            old.send_signal(signal.SIGKILL)
            state = audio_again(driver, "audio after the relay was replaced")
            replaced = time.time() - stopped
            assert state.get("iceRestarts", 0) == 0 and state["state"] == "connected", state["state"]
            second_address = state["stats"]["localAddress"]
            assert second_address != first_address, "a new TCP connection (a new local port)"

            new.send_signal(signal.SIGKILL)
            killed = time.time()
            time.sleep(1)
            stack.relay(redis="")
            state = wait_for(driver, lambda s: s["state"] == "disconnected", 20, "the ICE transport disconnected")
            disconnected = time.time() - killed
            state = wait_for(driver, lambda s: s["state"] == "failed", 40, "the ICE transport failed")
            failed, failed_state = time.time() - killed, state["state"]
            # Chromium does not try again by itself: no audio while it sits in `failed`.
            received = state["stats"]["packetsReceived"]
            time.sleep(3)
            state = driver.execute_script("return window.parley")
            assert state["state"] == "failed" and state["stats"]["packetsReceived"] == received, state["state"]
            driver.execute_async_script("const done = arguments[0]; window.parley.restartIce().then(() => done(), (e) => done(String(e)))")
            state = audio_again(driver, "audio after an ICE restart")
            restarted = time.time() - killed
            assert state["iceRestarts"] == 1
            print(f"ICE-TCP relay replaced (take-over, then the old one killed): audio back after {replaced:.2f} s, "
                  f"{first_address} -> {second_address}, no ICE restart; relay killed and restarted 1 s later: "
                  f"disconnected after {disconnected:.1f} s, '{failed_state}' after {failed:.1f} s and still 3 s later, "
                  f"audio back {restarted:.1f} s after the kill with an ICE restart")
        finally:
            driver.quit()
            for process in stack.processes:
                process.kill()


def test_setup_time_udp_and_tcp(parley_with):
    """Setup figures for docs/benchmarks.md (printed, not asserted): the page's timeline after the
    answer (ICE connected, DTLS connected, oai-events open), three calls each over UDP and over TCP
    (UDP to the relay dropped: Chromium checks the TCP pair after the UDP one, paced, and then
    pays the TCP handshake)."""
    parley = parley_with()
    figures = {"udp": [], "tcp": []}
    for transport in ("udp", "tcp", "udp", "tcp", "udp", "tcp"):
        drop = DroppedUDP("ip", parley.media_port) if transport == "tcp" else None
        if drop:
            drop.__enter__()
        driver = chromium()
        try:
            driver.get(parley.base + "/?autostart=1")
            state = wait_for(driver, lambda s: "channel" in s["timings"] and s["stats"].get("remoteAddress"), 30,
                             f"a call over {transport}")
            assert state["stats"]["remoteAddress"] == f"127.0.0.1:{parley.media_port}", state["stats"]
            timings = state["timings"]
            figures[transport].append({step: timings[step] - timings["answer"] for step in ("ice", "dtls", "channel")})
        finally:
            driver.quit()
            if drop:
                drop.__exit__()
    for transport, runs in figures.items():
        median = {step: sorted(run[step] for run in runs)[1] for step in ("ice", "dtls", "channel")}
        print(f"setup over {transport} (ms after the answer, median of 3): ICE {median['ice']}, DTLS {median['dtls']}, "
              f"oai-events open {median['channel']}; runs {runs}")


def test_a_tcp_call_moves_to_udp_when_udp_gets_through(parley_with):
    """Migration from TCP to UDP (issue 15, item 2): a call that fell back to TCP, on a network that
    later lets UDP through, ends up on the UDP pair — by Chromium's own checks, or else by an ICE
    restart; the transceiver follows the pair Chromium nominates (same DTLS association). The call
    JSON says which transport the call is on."""
    parley = parley_with()
    drop = DroppedUDP("ip", parley.media_port).__enter__()
    driver = chromium()
    try:
        driver.get(parley.base + "/?autostart=1")
        state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 50, 30, "audio over TCP")
        tcp_local = state["stats"]["localAddress"]
        time.sleep(10)  # long past Chromium's first UDP checks: the UDP pair has failed by now
        drop.__exit__()
        lifted = time.time()
        # By itself: Chromium keeps checking the UDP pair it could not use, and nominates it once it answers.
        state = wait_for(driver, lambda s: s["stats"]["localAddress"] != tcp_local, 15, "Chromium moving to UDP by itself")
        how = f"by itself after {time.time() - lifted:.1f} s"
        assert state.get("iceRestarts", 0) == 0
        pair = driver.execute_script("""
            const report = await window.parley.pc.getStats();
            for (const s of report.values()) if (s.type === "transport" && s.selectedCandidatePairId)
                return report.get(report.get(s.selectedCandidatePairId).remoteCandidateId).protocol;""")
        assert pair == "udp", pair
        received = state["stats"]["packetsReceived"]
        state = wait_for(driver, lambda s: s["stats"]["packetsReceived"] > received + 50, 10, "audio over UDP")
        assert parley.get_json(f"/v1/realtime/calls/{state['callId']}")["transport"] == "udp"
        print(f"TCP -> UDP once UDP got through: {how}")
    finally:
        driver.quit()


def test_a_tcp_port_someone_holds_leaves_ice_tcp_out_with_a_warning(tmp_path):
    """`parley dev` takes TCP on its UDP port's number; when something else holds it, dev starts
    anyway (UDP only, no TCP candidate), says so in its log, and stops cleanly."""
    from conftest import ParleyProcess
    media_port = free_port(socket.SOCK_DGRAM)
    holder = socket.socket()
    holder.bind(("127.0.0.1", media_port))
    holder.listen()
    parley = ParleyProcess(free_port(), media_port, tmp_path / "parley.log")
    try:
        from test_signaling import CHROME
        status, _, answer = parley.post_offer(CHROME)
        assert status == 201
        assert [transport for _, transport, *_ in candidates(answer)] == ["udp"], answer
        assert "ICE-TCP is off" in parley.logs()
    finally:
        parley.stop()
        holder.close()
    assert parley.process.returncode is not None


def test_a_tcp_call_outlives_the_consent_timeout(parley_with):
    """Consent over TCP (RFC 7675, as over UDP): Chromium's checks on the connection keep a call
    past the 30 s consent timeout; Parley's own checks reach Chromium as frames and are answered."""
    parley = parley_with()
    with DroppedUDP("ip", parley.media_port):
        driver = chromium()
        try:
            driver.get(parley.base + "/?autostart=1")
            state = wait_for(driver, lambda s: s["stats"].get("packetsReceived", 0) >= 50, 30, "audio over TCP")
            call_id = state["callId"]
            started = parley.get_json(f"/v1/realtime/calls/{call_id}")
            assert started["transport"] == "tcp"
            time.sleep(35)
            state = driver.execute_script("return window.parley")
            assert state["state"] == "connected", state["state"]
            call = parley.get_json(f"/v1/realtime/calls/{call_id}")
            assert call["state"] == "connected" and call["transport"] == "tcp"
            assert call["checksAnswered"] > started["checksAnswered"] + 5, "Chromium kept checking over TCP"
            assert call["rtpReceived"] > started["rtpReceived"] + 35 * 40
        finally:
            driver.quit()
