"""Auth tokens at rest: a SHA-256 hash to check a presented token, and a Fernet ciphertext to sign
callbacks with (the token itself is the HMAC key, so it must be recoverable; a hash alone would not do).

Keys come from AUTH_TOKEN_KEYS: comma-separated Fernet keys, the first encrypts, all decrypt, so a
key is rotated by putting a new one first and re-encrypting (`summaries accounts reencrypt`).
Unset, and only with the embedded PostgreSQL, a key is generated once into the data directory (one
machine's database, one machine's key); with DATABASE_URL set every process must be given the keys.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

from cryptography.fernet import Fernet, MultiFernet

from shared.platform.config import get_settings, require_keys

KEY_FILE = "auth-token.keys"


def token_hash(token: str) -> str:
    # Tokens are 128 random bits: a fast hash is enough, there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _keys() -> list[bytes]:
    settings = get_settings()
    require_keys(settings)
    if settings.auth_token_keys:
        return [key.encode() for key in settings.auth_token_keys]
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(Fernet.generate_key())
    return [line.strip() for line in path.read_bytes().splitlines() if line.strip()]


def keys_setting() -> str:
    """The keys as AUTH_TOKEN_KEYS spells them: `summaries up` hands its children the data
    directory's key, so that they, given DATABASE_URL, need not (and may not) find it themselves."""
    return ",".join(key.decode("ascii") for key in _keys())


@functools.cache
def cipher() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in _keys()])


def encrypt(token: str) -> str:
    return cipher().encrypt(token.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> str:
    return _decrypt(ciphertext, cipher())


@functools.lru_cache(maxsize=4096)
def _decrypt(ciphertext: str, keys: MultiFernet) -> str:
    # A ciphertext always decrypts to the same token, and a rotated token (or key) has a new one:
    # cached by ciphertext (and key set), nothing goes stale, and a busy account's every signed
    # request stops paying for a Fernet decryption.
    return keys.decrypt(ciphertext.encode("ascii")).decode("utf-8")


def reencrypt(ciphertext: str) -> str:
    """With the first (newest) key, whichever key encrypted it."""
    return cipher().rotate(ciphertext.encode("ascii")).decode("ascii")


def derived_keys(purpose: str) -> list[bytes]:
    """A key per AUTH_TOKEN_KEYS key for another use (`purpose`: the console's session cookies), newest
    first: one secret to configure and rotate, and nothing signed for one purpose verifies for another."""
    return [hmac.new(key, f"call-feedback-summaries {purpose}".encode(), hashlib.sha256).digest() for key in _keys()]
