#!/usr/bin/env python3
"""Seeds the fuzz corpora (Fuzz/corpus-<target>/) with real inputs, so libFuzzer starts from
packets that parse: the test fixtures, and record inputs for the stateful harnesses (a record is
a kind byte, a 16-bit big-endian length, then the bytes; see Fuzz/Sources/FuzzSupport/Records.swift).
A corpus that already has inputs is left as it is. Usage: scripts/fuzz_seeds.py FUZZ_DIR target…
"""
import os
import struct
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIXTURES = os.path.join(ROOT, "Tests", "ParleyWireTests", "Fixtures")


def record(kind, data):
    return bytes([kind]) + struct.pack(">H", len(data)) + data


def rtp(sequence, timestamp, payload=b"\xf8\xff\xfe", marker=False, ssrc=0x0C11E47):
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | 111, sequence, timestamp, ssrc) + payload


def rtcp_receiver_report(ssrc=0x0C11E47, about=0xABCD0001):
    block = struct.pack(">IIIIII", about, 0, 1000, 5, 0x12345678, 655)
    return struct.pack(">BBHI", 0x81, 201, 7, ssrc) + block


def sctp_data(tsn, stream=0, ssn=0, ppid=51, payload=b"hello", flags=0x03):
    body = struct.pack(">IHHI", tsn, stream, ssn, ppid) + payload
    chunk = struct.pack(">BBH", 0, flags, 4 + len(body)) + body
    return chunk + b"\0" * (-len(chunk) % 4)


def sctp_sack(cumulative, gaps=((2, 3),)):
    body = struct.pack(">IIHH", cumulative, 1 << 20, len(gaps), 0) + b"".join(struct.pack(">HH", *g) for g in gaps)
    return struct.pack(">BBH", 3, 0, 4 + len(body)) + body


def sctp_forward_tsn(tsn, streams=((0, 1),)):
    body = struct.pack(">I", tsn) + b"".join(struct.pack(">HH", *s) for s in streams)
    return struct.pack(">BBH", 192, 0, 4 + len(body)) + body


def dcep_open(label=b"oai-events"):
    return struct.pack(">BBHIHH", 3, 0, 256, 0, len(label), 0) + label


def stun_attribute(kind, value):
    return struct.pack(">HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def seeds(target):
    if target == "stun":
        for name in sorted(os.listdir(os.path.join(FIXTURES, "rfc5769"))):
            if name.endswith(".hex"):
                yield name[:-4], bytes.fromhex(open(os.path.join(FIXTURES, "rfc5769", name)).read())
    elif target == "sdp":
        for name in sorted(os.listdir(FIXTURES)):
            if name.endswith(".sdp"):
                yield name, open(os.path.join(FIXTURES, name), "rb").read()
    elif target == "token":
        output = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "routing-token-reference.py")],
                                capture_output=True, text=True, check=True).stdout
        for line in output.splitlines():
            name, token = line.split()
            yield name, token.encode()
    elif target == "tunnel":
        yield "ipv4", b"\xd1\x00\x01\x02\xd4\x31\xcb\x00\x71\x07payload"
        yield "ipv6", b"\xd1\x06\x00\x03\x13\x88" + bytes(range(16)) + b"payload"
    elif target == "sctp":
        yield "data", b"\x13\x88\x13\x88\x00\x00\x00\x01\x00\x00\x00\x00" + sctp_data(1)
        yield "sack", b"\x13\x88\x13\x88\x00\x00\x00\x01\x00\x00\x00\x00" + sctp_sack(5)
    elif target == "rtp":
        yield "stream", b"".join(record(0, rtp((65530 + i) % 65536, 960 * i)) for i in range(10)) + record(2, b"\0\0\0\1")
        yield "reports", record(1, rtcp_receiver_report()) + record(0, rtp(1, 0)) + record(2, b"")
    elif target == "resp":
        for name, reply in [("ok", b"+OK\r\n"), ("bulk", b"$14\r\n10.0.0.1:40000\r\n"), ("nil", b"$-1\r\n"),
                            ("array", b"*2\r\n$1\r\na\r\n:1\r\n"), ("error", b"-ERR wrong\r\n")]:
            yield name, reply
    elif target == "association":
        yield "open-and-data", (record(2, b"\0\0" + dcep_open()) + record(2, b"\0\0\x01hello")
                                + record(3, b"\x00\x64") + record(2, b"\0\x02\x02unordered"))
        yield "chunks", record(0, sctp_data(1)) + record(0, sctp_sack(0)) + record(0, sctp_forward_tsn(3)) + record(3, b"\x03\xe8")
    elif target == "agent":
        for name, text in [("accept", b'{"type":"session.accept","sample_rate":16000}'),
                           ("send", b'{"type":"data_channel.send","label":"oai-events","data":"aGk=","binary":true}'),
                           ("clear", b'{"type":"audio.clear"}'), ("hangup", b'{"type":"session.hangup","reason":"bye"}')]:
            yield name, b"\x00" + text
        yield "audio", b"\x01" + b"\x10\x00" * 320
    elif target == "jitter":
        packets = b"".join(record(0, struct.pack(">H", 1000 + i) + b"\xf8\xff\xfe") + record(1, b"\x14") for i in range(20))
        yield "steady", packets
        yield "reordered", record(0, b"\x00\x05\xf8\xff\xfe") + record(0, b"\x00\x03\xf8\xff\xfe") + record(1, b"\x50")
    elif target in ("session", "client"):
        audio = b"".join(record(0, rtp(1000 + i, 960 * i, marker=i == 0)) for i in range(5))
        yield "audio", audio + record(6, b"\x00\x14")
        yield "reports", record(1, rtcp_receiver_report()) + record(6, b"\x13\x88")
        yield "sctp", record(2, sctp_data(0)) + record(2, sctp_sack(0))
        if target == "session":
            yield "data-channel", record(5, b"\x00{\"type\":\"response.create\"}") + record(5, b"\x01\x00\x01\x02")
            yield "checks", record(4, stun_attribute(0x0025, b"") + stun_attribute(0x0024, b"\x6e\xff\xff\xff")) + record(7, b"")
        else:
            yield "checks", record(4, stun_attribute(0x8029, b"\0" * 8)) + record(5, b"\0\0\0\1")
    elif target == "signaling":
        yield "api-key", b"\x00Bearer sk_fuzz_0123456789abcdef"
        yield "secret", b"\x00Bearer ek_AQEqKioqKioqKioqKipBQS6pTsa-vmJO9JeM0nUA-0tQ4x0NaWmp_n7_km4OcFXSSFUiKARepwAqwN0MucPB9rJIlMwRRX4g78ql6nXt8x7RwEW5Ug5gpGjhaocRotGgkKYaok9x1qjgkjoSqotecubn0r00AyWA8zE4O4jwZyzfix1HWp6Yo5sO38wh78FIO50t9g"
        yield "sideband-send", b'\x02{"type":"call.send","event":{"type":"x"}}'
        yield "sideband-update", b'\x02{"type":"session.update","session":{"instructions":"hi"}}'
        yield "session", b'\x03{"agent":"parrot","type":"realtime","tools":[{"n":1}]}'
        yield "forwarded", b"\x04198.51.100.1, 10.0.0.1\n[2001:db8::1]:80"
        yield "key-file", b"\x051 " + b"ab" * 32 + b"\n2 " + b"cd" * 32 + b" current\n"
        yield "multipart", (b'\x06--b\r\nContent-Disposition: form-data; name="sdp"\r\n\r\nv=0\r\n'
                            b'--b\r\nContent-Disposition: form-data; name="session"\r\n\r\n{}\r\n--b--\r\n')
    elif target == "routing":
        # A forwarded flow at the edge: the check, the owner's check and answer, the client's answer.
        txn = b"\x00" + bytes(range(1, 13))
        stun_answer = struct.pack(">HHI", 0x0101, 0, 0x2112A442) + bytes(range(1, 13))
        yield "forwarded", (record(1, txn) + record(2, b"\x04" + stun_answer) + record(0, b"\x00" + stun_answer)
                            + record(0, b"\x00" + rtp(1, 960)) + record(3, b"\x27\x10"))
        yield "owner", record(6, txn) + record(5, b"\x00" + stun_answer) + record(4, b"\x00" + stun_answer) + record(9, b"\x01")
        yield "store", record(7, b"\x00") + record(0, b"\x00" + rtp(2, 1920)) + record(8, b"") + record(1, b"\x01" + bytes(12))
    elif target == "tcp":
        # A connection's check (framed, valid token), the worker's check and answer, the client's
        # answer as a frame cut in two, media; then a stranger's HTTP and a connection that stays silent.
        stun_answer = struct.pack(">HHI", 0x0101, 0, 0x2112A442) + bytes(range(1, 13))
        framed = struct.pack(">H", len(stun_answer)) + stun_answer
        yield "routed", (record(4, b"\x00") + record(1, b"\x00" + bytes(range(1, 13))) + record(2, b"\x00" + stun_answer)
                         + record(0, b"\x00" + framed[:7]) + record(0, b"\x00" + framed[7:])
                         + record(0, b"\x00" + struct.pack(">H", 15) + rtp(1, 960)) + record(3, b"\x13\x88"))
        yield "hostile", record(4, b"\x01") + record(0, b"\x01GET / HTTP/1.1\r\n") + record(4, b"\x02") + record(3, b"\x13\x88")
    else:
        raise SystemExit(f"no seeds for {target}")


def main():
    directory, targets = sys.argv[1], sys.argv[2:]
    for target in targets:
        corpus = os.path.join(directory, f"corpus-{target}")
        os.makedirs(corpus, exist_ok=True)
        if os.listdir(corpus):
            continue
        for name, data in seeds(target):
            with open(os.path.join(corpus, f"seed-{name}"), "wb") as output:
                output.write(data)


if __name__ == "__main__":
    main()
