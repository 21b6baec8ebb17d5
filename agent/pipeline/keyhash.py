"""A salted hash prefix of the credential a call used; never the credential.

The salt is random per host and kept in the state directory, so hashes are
stable across restarts (a report can group by key) but cannot be compared
with any other host's, nor brute-forced from a list of leaked keys without
the salt.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SALT_BYTES = 32
HASH_HEX_CHARS = 16  # 64 bits: plenty to tell a host's keys apart
# Query parameters that carry an API key: Google's ?key=, Azure-style and
# gateway ?api-key= (and its spellings).
QUERY_CREDENTIALS = ("key", "api-key", "api_key", "apikey")


def load_or_create_salt(state_dir: Path) -> bytes:
    path = state_dir / "key-salt"
    try:
        salt = path.read_bytes()
        if len(salt) == SALT_BYTES:
            return salt
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    salt = secrets.token_bytes(SALT_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(salt)
    return salt


def credential(headers: Mapping[str, str], target: str) -> str | None:
    """The API credential of a request, from wherever its provider puts it."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip():
            return value.strip()
        if scheme == "aws4-hmac-sha256":
            # SigV4: the access key id names the credential; the signature changes per call.
            for part in value.split(","):
                part = part.strip()
                if part.startswith("Credential="):
                    return part[len("Credential=") :].split("/", 1)[0]
        return auth.strip()
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if value := headers.get(name):
            return value.strip()
    if "key=" in target.lower():
        query = {name.lower(): values for name, values in parse_qs(urlsplit(target).query).items()}
        for name in QUERY_CREDENTIALS:
            if keys := query.get(name):
                return keys[0]
    return None


def hash_credential(secret: str, salt: bytes) -> str | None:
    if secret in ("[redacted]", "Bearer [redacted]"):  # from a recording: no key to hash
        return None
    return hashlib.sha256(salt + secret.encode("utf-8", "replace")).hexdigest()[:HASH_HEX_CHARS]
