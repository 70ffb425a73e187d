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
            assert call["state"] == "connected"
            state = wait_for(driver, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
            print(f"ICE-TCP setup (ms since Call): {state['timings']}, wall {time.time() - started:.1f} s")
            results = driver.execute_async_script(
                "const done = arguments[0]; window.parley.echoTest(%s).then(done, (e) => done(String(e)))" % json.dumps(SIZES))
            assert results == ECHOED, results
            before = driver.execute_script("return window.parley.stats.packetsReceived")
            time.sleep(1.5)
            assert driver.execute_script("return window.parley.stats.packetsReceived") > before + 50, "audio keeps flowing"
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
    from marionette_driver import marionette
    from test_firefox import FIREFOX, PAGE, PREFS, wait_for as firefox_wait_for
    parley = parley_with()
    with DroppedUDP("ip", parley.media_port) as drop:
        client = marionette.Marionette(host="127.0.0.1", port=PREFS["marionette.port"], bin=FIREFOX, headless=True,
                                       prefs=PREFS, startup_timeout=90, gecko_log=str(tmp_path / "gecko.log"))
        try:
            client.start_session()
            client.timeout.script = 60
            client.navigate(parley.base + "/?autostart=1")
            state = firefox_wait_for(client, lambda s: s["stats"].get("packetsReceived", 0) >= 100, 30,
                                     "2 s of echoed audio over TCP")
            assert state["error"] is None
            assert drop.dropped() > 0, "Firefox tried UDP first"
            time.sleep(1.2)  # the relay publishes its counts once a second
            assert tcp_routes(parley) == 1, parley.metrics()
            firefox_wait_for(client, lambda s: s["channelState"] == "open", 10, "the oai-events channel open")
            results = client.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                f"{PAGE}.echoTest({json.dumps(SIZES)}).then((r) => done(JSON.parse(JSON.stringify(r))), (e) => done(String(e)))")
            assert results == ECHOED, results
        finally:
            try:
                client.delete_session()
            except Exception:
                pass
            client.cleanup()


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
        # 16 connections from one address, not 17.
        held = [socket.create_connection(address) for _ in range(16)]
        extra = socket.create_connection(address)
        assert closed_by_peer(extra, 2)
        assert not closed_by_peer(held[0], 0.3)
        for connection in held + [extra]:
            connection.close()
        time.sleep(1.2)
        values = relay.metrics()
        from test_hostile import metric
        # ("GE" announces an 18,245-byte frame: an HTTP request is closed as a frame too long.)
        assert metric(values, "parley_relay_tcp_closed_total", reason="first_frame_refused") == 2, values
        assert metric(values, "parley_relay_tcp_closed_total", reason="frame_too_long") == 2
        assert metric(values, "parley_relay_tcp_closed_total", reason="first_frame_timeout") == 1
        assert metric(values, "parley_relay_tcp_closed_total", reason="too_many_from_address") == 1

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
        assert dropped > 10_000, values
        assert received < 20_000_000
        assert grown < 16 << 20, grown
        client.close()
    finally:
        relay.stop()
        print(open(relay.log_path).read()[-3000:])
