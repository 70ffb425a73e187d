"""`parley relay` against a real Redis in production form: an ACL user with a password (given in
PARLEY_REDIS_URL, percent-encoded, with a database), a wrong password and a missing one reported
once in the log and counted on /metrics while the relay still serves, and TLS (rediss://) with a
CA and server certificate made here with openssl, trusted through --redis-ca and refused without
it or for another host name. Calls are aiortc's (test_hostile.AiortcCall) through the relay."""
import asyncio
import socket
import subprocess
import time

import pytest

from conftest import free_port
from test_hostile import AiortcCall
from test_relay_recovery import Stack, metric, metrics_eventually

ADMIN_PASSWORD = "admin-Pa55"
# A password with characters a URL reserves; PARLEY_REDIS_URL carries it percent-encoded.
ACL_PASSWORD = "p@ss:w/rd%"
ACL_PASSWORD_ENCODED = "p%40ss%3Aw%2Frd%25"


def redis_cli(port, *command, password=ADMIN_PASSWORD, tls_ca=None, database=0):
    arguments = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "-n", str(database), "--no-auth-warning"]
    if password:
        arguments += ["-a", password]
    if tls_ca:
        arguments += ["--tls", "--cacert", str(tls_ca)]
    result = subprocess.run(arguments + list(command), capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def wait_redis(port, **options):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if redis_cli(port, "PING", **options) == ["PONG"]:
                return
        except AssertionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("redis-server did not answer")


def lines(process, text):
    return [line for line in process.log_path.read_text().splitlines() if text in line]


async def frames_within(call, seconds, after):
    """Waits up to `seconds` for echoed frames that arrived after `after` (time.monotonic());
    returns how long after `after` the third came, or None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        later = [t for t in call.frames if t > after]
        if len(later) >= 3:
            return later[2] - after
        await asyncio.sleep(0.05)
    return None


@pytest.fixture
def password_stack(tmp_path):
    port = free_port(socket.SOCK_STREAM)
    stack = Stack(tmp_path, redis_args=["--port", str(port), "--requirepass", ADMIN_PASSWORD], redis_port=port)
    wait_redis(port)
    yield stack
    stack.stop()
    print(stack.logs())


def test_an_acl_user_stores_routes_in_its_database_and_a_call_survives_a_relay_restart(password_stack):
    stack = password_stack
    # The least a relay needs: GET and SET on its own keys, PING, and SELECT.
    assert redis_cli(stack.redis_port, "ACL", "SETUSER", "parley", "on", f">{ACL_PASSWORD}", "~parley:route:*",
                     "-@all", "+get", "+set", "+ping", "+select") == ["OK"]
    url = f"redis://parley:{ACL_PASSWORD_ENCODED}@127.0.0.1:{stack.redis_port}/2"
    environment = {"PARLEY_REDIS_URL": url}  # the password stays off the command line
    relay = stack.relay(redis="", env=environment)
    metrics_eventually(relay.metrics_port, r"^parley_relay_store_connected 1(\.0)?$")
    assert metric(relay.metrics_port, 'parley_relay_store_state{state="connected"}') == 1

    async def scenario():
        call = await AiortcCall(stack).start()
        try:
            assert await frames_within(call, 5, call.connected_at) is not None, "no echoed audio through the relay"
            await asyncio.sleep(0.5)  # the route reaches Redis asynchronously
            client_port = call.local_address[1]
            keys = await asyncio.to_thread(redis_cli, stack.redis_port, "KEYS", "parley:route:*", database=2)
            assert keys == [f"parley:route:127.0.0.1:{client_port}"], keys
            worker = await asyncio.to_thread(redis_cli, stack.redis_port, "GET", keys[0], database=2)
            assert len(worker) == 1 and worker[0].startswith("127.0.0.1:"), worker
            assert await asyncio.to_thread(redis_cli, stack.redis_port, "KEYS", "*") == [], "nothing in database 0"

            # Killed and replaced: the new relay authenticates the same way and recovers the call
            # from its route in Redis, long before a check could rebuild it.
            nonlocal relay
            relay.kill()
            relay.wait()
            await asyncio.sleep(0.3)
            relay = await asyncio.to_thread(stack.relay, redis="", env=environment)
            took = await frames_within(call, 1.5, stack.relay_started)
            assert took is not None, "audio did not resume within 1.5 s of the new relay"
            print(f"audio resumed {took * 1000:.0f} ms after the new relay started")
            assert lines(relay, "route recovered from the store"), "recovered by Redis, not by a later check"
        finally:
            await call.close()

    asyncio.run(scenario())
    for process in (p for p in stack.processes if getattr(p, "metrics_port", None)):
        log = process.log_path.read_text()
        assert ACL_PASSWORD not in log and ACL_PASSWORD_ENCODED not in log, "the password reached the log"
        assert f"redis://parley:***@127.0.0.1:{stack.redis_port}/2" in log


def test_a_wrong_or_missing_password_is_logged_once_and_counted_while_the_relay_serves(password_stack):
    stack = password_stack
    wrong = stack.relay(redis=f"redis://:not-the-Pa55word@127.0.0.1:{stack.redis_port}")
    # A second relay (its own public port, no calls) that gives no password at all: NOAUTH.
    missing = stack.relay(redis=f"127.0.0.1:{stack.redis_port}", public_port=free_port(socket.SOCK_DGRAM))

    async def scenario():
        call = await AiortcCall(stack).start()
        try:
            return await frames_within(call, 5, call.connected_at)
        finally:
            await call.close()

    assert asyncio.run(scenario()) is not None, "the relay stopped serving calls when Redis refused it"
    # Retried with backoff (100 ms doubling to 2 s) since it started, each attempt counted ...
    time.sleep(max(0, 3.5 - (time.monotonic() - stack.relay_started)))
    failures = metric(wrong.metrics_port, "parley_relay_store_auth_failures_total")
    assert failures is not None and failures >= 3, failures
    assert metric(wrong.metrics_port, 'parley_relay_store_state{state="auth_failed"}') == 1
    assert metric(wrong.metrics_port, "parley_relay_store_connected") == 0
    assert metric(wrong.metrics_port, "parley_relay_store_tls_failures_total") == 0
    assert metric(missing.metrics_port, "parley_relay_store_auth_failures_total") >= 1
    assert metric(missing.metrics_port, 'parley_relay_store_state{state="auth_failed"}') == 1
    # ... and logged once, with the server's reason and the URL redacted, never the password.
    reported = lines(wrong, "route store authentication failed")
    assert len(reported) == 1, reported
    assert "WRONGPASS" in reported[0] and f"redis://:***@127.0.0.1:{stack.redis_port}" in reported[0], reported
    assert "not-the-Pa55word" not in wrong.log_path.read_text()
    reported = lines(missing, "route store authentication failed")
    assert len(reported) == 1 and "NOAUTH" in reported[0], reported
    assert redis_cli(stack.redis_port, "KEYS", "*") == [], "nothing was stored"


def make_ca(directory):
    key, cert = directory / "ca.key", directory / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", *EC, "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=parley test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)
    return key, cert


def make_server_certificate(directory, name, ca, names):
    """A server certificate the CA signs for `names` (subjectAltName entries such as IP:127.0.0.1)."""
    ca_key, ca_cert = ca
    key, csr, cert, extensions = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    subprocess.run(["openssl", "req", *EC, "-keyout", key, "-out", csr, "-subj", f"/CN={name}"], check=True, capture_output=True)
    extensions.write_text(f"subjectAltName={','.join(names)}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                    "-days", "1", "-extfile", extensions], check=True, capture_output=True)
    return cert, key


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def tls_redis(port, cert, key, ca):
    return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--requirepass", ADMIN_PASSWORD]


def test_rediss_with_the_ca_stores_routes_and_an_untrusted_or_misnamed_certificate_is_refused(tmp_path):
    ca = make_ca(tmp_path)
    _, ca_pem = ca
    # One Redis whose certificate names its address, one whose certificate names only redis.test.
    by_address = make_server_certificate(tmp_path, "address", ca, ["IP:127.0.0.1"])
    by_name = make_server_certificate(tmp_path, "name", ca, ["DNS:redis.test"])
    port, named_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    stack = Stack(tmp_path, redis_port=port, redis_args=tls_redis(port, *by_address, ca_pem))
    try:
        stack.spawn("redis-named", ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                    *tls_redis(named_port, *by_name, ca_pem)])
        wait_redis(port, tls_ca=ca_pem)
        wait_redis(named_port, tls_ca=ca_pem)
        url, named_url = (f"rediss://:{ADMIN_PASSWORD}@127.0.0.1:{p}" for p in (port, named_port))
        other_port = lambda: free_port(socket.SOCK_DGRAM)  # relays that carry no call
        trusted = stack.relay(redis=url, extra=["--redis-ca", str(ca_pem)])
        # The system's roots do not know the test CA.
        untrusted = stack.relay(redis=url, public_port=other_port())
        # The certificate names redis.test, not the address connected to: refused, unless that is
        # the name checked; and another name is refused.
        unnamed = stack.relay(redis=named_url, public_port=other_port(), extra=["--redis-ca", str(ca_pem)])
        named = stack.relay(redis=named_url, public_port=other_port(),
                            extra=["--redis-ca", str(ca_pem), "--redis-tls-server-name", "redis.test"])
        misnamed = stack.relay(redis=named_url, public_port=other_port(),
                               extra=["--redis-ca", str(ca_pem), "--redis-tls-server-name", "other.test"])
        metrics_eventually(trusted.metrics_port, r"^parley_relay_store_connected 1(\.0)?$")
        metrics_eventually(named.metrics_port, r"^parley_relay_store_connected 1(\.0)?$")

        async def scenario():
            call = await AiortcCall(stack).start()
            try:
                assert await frames_within(call, 5, call.connected_at) is not None
                await asyncio.sleep(0.5)
                return call.local_address[1]
            finally:
                await call.close()

        client_port = asyncio.run(scenario())
        assert redis_cli(port, "KEYS", "parley:route:*", tls_ca=ca_pem) == [f"parley:route:127.0.0.1:{client_port}"]
        for refused in (untrusted, unnamed, misnamed):
            metrics_eventually(refused.metrics_port, r"^parley_relay_store_tls_failures_total [1-9]")
            assert metric(refused.metrics_port, 'parley_relay_store_state{state="tls_failed"}') == 1
            assert metric(refused.metrics_port, "parley_relay_store_connected") == 0
            assert metric(refused.metrics_port, "parley_relay_store_auth_failures_total") == 0, "no AUTH before TLS"
            reported = lines(refused, "route store TLS handshake failed")
            assert len(reported) == 1, reported
            assert ADMIN_PASSWORD not in refused.log_path.read_text()
        print("\n".join(lines(refused, "TLS handshake failed")[0] for refused in (untrusted, unnamed, misnamed)))
        assert "does not chain to a trusted root" in lines(untrusted, "TLS handshake failed")[0]
        assert "does not name 127.0.0.1" in lines(unnamed, "TLS handshake failed")[0]
        assert "names neither other.test" in lines(misnamed, "TLS handshake failed")[0]
    finally:
        stack.stop()
        print(stack.logs())
