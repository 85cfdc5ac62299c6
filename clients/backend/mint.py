"""Mints a heartbeat `b1.` backend token in Python with `cryptography` (AES-GCM) and the
standard library (HKDF is two HMAC-SHA256 calls). Format: docs/backends.md.

    from mint import mint_backend_token
    token = mint_backend_token(os.environ["SHARED_KEY"], {
        "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "session_limit": 2, "checking_threshold": 1, "sessions_edge": 12,
    })

As a command: `SHARED_KEY=... python3 mint.py < data.json` prints a token for the JSON on
stdin (sealed byte for byte as given); `--nonce <24 hex digits>` fixes the nonce, for
checking the test vectors only.
"""
import base64
import hashlib
import hmac
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SALT = b"heartbeat backend token b1"
INFO = b"aes-256-gcm key"


def backend_key(shared_key: str) -> bytes:
    """The AES-256-GCM key for `shared_key`: HKDF-SHA256 (RFC 5869), 32 bytes."""
    prk = hmac.new(SALT, shared_key.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(prk, INFO + b"\x01", hashlib.sha256).digest()


def seal_backend_token(key: bytes, plaintext: bytes, nonce: bytes = None) -> str:
    """Seals heartbeat_data JSON bytes as a `b1.` token."""
    nonce = os.urandom(12) if nonce is None else nonce
    sealed = AESGCM(key).encrypt(nonce, plaintext, b"b1")  # ciphertext and 16-byte tag
    return "b1." + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def mint_backend_token(shared_key: str, data: dict) -> str:
    """Mints a `b1.` token for `data` (heartbeat_data without `session_id`)."""
    return seal_backend_token(backend_key(shared_key), json.dumps(data).encode("utf-8"))


if __name__ == "__main__":
    shared_key = os.environ.get("SHARED_KEY")
    if not shared_key:
        sys.exit("mint.py: set SHARED_KEY to the server's shared key")
    nonce = None
    if "--nonce" in sys.argv:
        nonce = bytes.fromhex(sys.argv[sys.argv.index("--nonce") + 1])
        if len(nonce) != 12:
            sys.exit("mint.py: --nonce takes 24 hex digits (12 bytes)")
    plaintext = sys.stdin.read().strip()
    json.loads(plaintext)  # refuses what is not JSON before sealing it
    print(seal_backend_token(backend_key(shared_key), plaintext.encode("utf-8"), nonce))
