#!/usr/bin/env python3
"""An independent reference implementation of the v1 routing token (docs/protocol.md), written
from the document rather than from the Swift code. It prints the test vectors that the Swift tests
and the document must agree on: run it after any change to the format."""
import base64
import ipaddress
import struct


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & 0xFFFFFFFFFFFFFFFF


def siphash24(key: bytes, message: bytes) -> int:
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = 0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1
    v2, v3 = 0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1

    def rounds(n):
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & 0xFFFFFFFFFFFFFFFF; v1 = rotl(v1, 13) ^ v0; v0 = rotl(v0, 32)
            v2 = (v2 + v3) & 0xFFFFFFFFFFFFFFFF; v3 = rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & 0xFFFFFFFFFFFFFFFF; v3 = rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & 0xFFFFFFFFFFFFFFFF; v1 = rotl(v1, 17) ^ v2; v2 = rotl(v2, 32)

    tail = len(message) % 8
    for i in range(0, len(message) - tail, 8):
        m, = struct.unpack_from("<Q", message, i)
        v3 ^= m; rounds(2); v0 ^= m
    last = (len(message) & 0xFF) << 56
    for i, byte in enumerate(message[len(message) - tail:]):
        last |= byte << (8 * i)
    v3 ^= last; rounds(2); v0 ^= last
    v2 ^= 0xFF; rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def seal(secret: bytes, key_id: int, cluster: int, ip: str, port: int, issued_hour: int, nonce: int, purpose: int = 0) -> str:
    mac_key, enc_key = secret[:16], secret[16:]
    address = ipaddress.ip_address(ip)
    header = bytes([1 << 4 | key_id]) + struct.pack(">H", cluster)
    body = bytes([(1 if address.version == 6 else 0) | purpose << 1]) + address.packed + struct.pack(">HHI", port, issued_hour, nonce)
    tag = siphash24(mac_key, header + body)
    stream = b"".join(siphash24(enc_key, struct.pack(">Q", tag) + bytes([i])).to_bytes(8, "big")
                      for i in range((len(body) + 7) // 8))
    encrypted = bytes(a ^ b for a, b in zip(body, stream))
    return base64.b64encode(header + encrypted + struct.pack(">Q", tag)).decode()


if __name__ == "__main__":
    secret = bytes(range(32))
    print("ipv4", seal(secret, 1, 0x0102, "10.1.2.3", 40000, 0x0B2C, 0xA1B2C3D4))
    print("ipv6", seal(secret, 1, 7, "fd00::1:2", 50001, 0x0B2C, 1))
    # A call id: purpose 1 (signaling), the owner's HTTP endpoint, URL-safe base64 after "rtc_".
    call = seal(secret, 1, 0x0102, "10.1.2.3", 8080, 0x0B2C, 2, purpose=1)
    print("call-id", "rtc_" + call.replace("+", "-").replace("/", "_"))
