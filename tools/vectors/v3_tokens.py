#!/usr/bin/env python3
"""Makes the `v3.` server token vectors (heartbeat-core/tests/vectors/v3-tokens.json) with
Python's `cryptography` (OpenSSL) and a postcard encoder written here from the layout in
docs/spec.md ("The v3 server token"): an implementation independent of the Rust crates
(RustCrypto's AES-GCM-SIV, the postcard crate) that the tests check against.

    python3 tools/vectors/v3_tokens.py > heartbeat-core/tests/vectors/v3-tokens.json
"""
import base64
import datetime
import json
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SALT = b"heartbeat token v3"


def hkdf(shared_key, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=SALT, info=info).derive(
        shared_key.encode()
    )


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(n):
    return varint((n << 1) ^ (n >> 63) if n < 0 else n << 1)


def text(s):
    raw = s.encode()
    return varint(len(raw)) + raw


def option(value, encode):
    return b"\x00" if value is None else b"\x01" + encode(value)


def ident(value):
    # Variant 0: an integer (zigzag varint); variant 1: text.
    return b"\x00" + zigzag(value) if isinstance(value, int) else b"\x01" + text(value)


def f64(x):
    return struct.pack("<d", float(x))


def boolean(b):
    return b"\x01" if b else b"\x00"


def payload(fields):
    """The compact payload: each field in the order docs/spec.md lists them."""
    limits = fields.get("family_limits")
    return b"".join(
        [
            ident(fields["user_id"]),
            ident(fields["asset_id"]),
            option(fields.get("session_id"), text),
            f64(fields["heartbeat_cycle"]),
            f64(fields.get("cycle_lower_tolerance", 0)),
            f64(fields["cycle_upper_tolerance"]),
            option(fields.get("reject_strategy"), text),
            option(fields.get("timestamp_ms"), zigzag),
            option(fields.get("started_at_ms"), zigzag),
            option(fields.get("session_limit"), varint),
            option(fields.get("checking_threshold"), varint),
            option(fields.get("sessions_edge"), varint),
            option(fields.get("device"), text),
            option(fields.get("device_family"), text),
            option(
                limits,
                lambda m: varint(len(m)) + b"".join(text(k) + varint(v) for k, v in m),
            ),
            option(fields.get("asset_limit"), varint),
            option(fields.get("enforce"), boolean),
            boolean(fields.get("legacy", False)),
            text(fields.get("extra", "")),
        ]
    )


def seal(shared_key, nonce, plaintext, associated_data=b"v3"):
    key = hkdf(shared_key, b"aes-256-gcm-siv key", 32)
    key_id = base64.urlsafe_b64encode(hkdf(shared_key, b"key id", 3)).decode()
    sealed = AESGCMSIV(key).encrypt(nonce, plaintext, associated_data)
    body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
    return key.hex(), key_id, f"v3.{key_id}.{body}"


CASES = [
    (
        "a session token",
        "topsecret",
        "5a1e0c3b9d2f41a7c08e6b13",
        {
            "user_id": 13,
            "asset_id": "movie/14",
            "session_id": "3f7c2a2e-54a4-4c5e-9a51-0c1d2b3e4f50",
            "heartbeat_cycle": 30,
            "cycle_upper_tolerance": 10,
            "timestamp_ms": 1_765_108_800_000,
            "started_at_ms": 1_765_108_770_000,
            "session_limit": 2,
            "checking_threshold": 1,
            "sessions_edge": 12,
            "device": "Living-room TV",
        },
    ),
    (
        "a legacy-begun session with every other field",
        "a longer shared key, with ünïcode",
        "ffffffffffffffffffffffff",
        {
            "user_id": -7,
            "asset_id": 123456789012,
            "session_id": "s",
            "heartbeat_cycle": 2.5,
            "cycle_lower_tolerance": 0.25,
            "cycle_upper_tolerance": 0.8,
            "reject_strategy": "MOST_RECENT",
            "timestamp_ms": -62_167_219_200_000,
            "session_limit": 0,
            "device_family": "tv",
            "family_limits": [("mobile", 1), ("tv", 4_294_967_295)],
            "asset_limit": 300,
            "enforce": False,
            "legacy": True,
            "extra": '{"tenant":"acme"}',
        },
    ),
]


def iso(millis):
    """An instant as the server writes it: ISO 8601 in UTC with milliseconds. Python's
    dates start at the year 1, so an instant in the year 0 is dated 400 years later (the
    Gregorian calendar repeats every 400 years: 146,097 days) and the year put back."""
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    years = 400 if millis < -62_135_596_800_000 else 0
    at = epoch + (datetime.timedelta(milliseconds=millis, days=146_097 * years // 400))
    return f"{at.year - years:04d}-{at:%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def data_of(fields):
    """The heartbeat data (as JSON) that `fields`, the payload's input, encode."""
    data = {}
    for name, value in fields.items():
        if name in ("timestamp_ms", "started_at_ms"):
            data[name.removesuffix("_ms")] = iso(value)
        elif name == "family_limits":
            data[name] = dict(value)
        elif name == "legacy":
            if value:
                data["provenance"] = "legacy"
        elif name == "extra":
            data.update(json.loads(value))
        else:
            data[name] = value
    return data


def main():
    tokens = []
    for name, shared_key, nonce_hex, fields in CASES:
        plaintext = payload(fields)
        key_hex, key_id, token = seal(shared_key, bytes.fromhex(nonce_hex), plaintext)
        tokens.append(
            {
                "name": name,
                "shared_key": shared_key,
                "key_hex": key_hex,
                "key_id": key_id,
                "nonce_hex": nonce_hex,
                "payload_hex": plaintext.hex(),
                "data": data_of(fields),
                "token": token,
            }
        )
    first = CASES[0]
    nonce = bytes.fromhex(first[2])
    plaintext = payload(first[3])
    _, key_id, good = seal(first[1], nonce, plaintext)
    _, _, other_ad = seal(first[1], nonce, plaintext, associated_data=b"v2")
    _, _, trailing = seal(first[1], nonce, plaintext + b"\x00")
    _, _, zero_cycle = seal(first[1], nonce, payload({**first[3], "heartbeat_cycle": 0}))
    _, _, shadowing = seal(
        first[1], nonce, payload({**first[3], "extra": '{"provenance":"legacy"}'})
    )
    body = good.split(".", 2)[2]
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    refused = [
        ("the tag changed", f"v3.{key_id}.{flipped}"),
        ("sealed with the associated data v2", other_ad),
        ("no key id", f"v3.{body}"),
        ("another key's id", f"v3.AAAA.{body}"),
        ("truncated", good[:-4]),
        ("a byte after the payload", trailing),
        ("a heartbeat_cycle of 0", zero_cycle),
        ("extra holding a known field's name", shadowing),
        ("the body as a b1 token", f"b1.{body}"),
    ]
    print(
        json.dumps(
            {
                "format": "v3 (docs/spec.md, The v3 server token)",
                "made_by": "python3 cryptography (OpenSSL), tools/vectors/v3_tokens.py",
                "tokens": tokens,
                "refused": [
                    {"why": why, "shared_key": first[1], "token": token}
                    for why, token in refused
                ],
            },
            indent=2,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
