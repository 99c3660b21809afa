"""Encryption keys: the key file, key ids, which key seals and which may open.

The key file (a mounted Secret) holds base64-encoded 32-byte keys, one per line; blank lines and
`#` comments are ignored. The first key seals new checkpoints; every key may open one. That is
how keys rotate: put the new key first, keep the old one below it until no checkpoint sealed
with it is left. A key id is derived from its key (HMAC-SHA256 of a fixed label, 8 bytes), so
headers and manifests say which key sealed them without revealing anything about it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
from pathlib import Path

from crikpy.errors import ConfigError
from crikpy.files import UnfitFile, read_small

KEY_BYTES = 32
KEY_ID_BYTES = 8
SETTING = "--encryption-key-file (CRIKPY_ENCRYPTION_KEY_FILE, encryptionKeyFile)"


def key_id(key: bytes) -> bytes:
    return hmac.new(key, b"crikpy key id v1", hashlib.sha256).digest()[:KEY_ID_BYTES]


@dataclasses.dataclass(frozen=True)
class KeyRing:
    keys: tuple[bytes, ...]  # the first seals; all open

    @property
    def sealing_key(self) -> bytes:
        return self.keys[0]

    @property
    def sealing_id(self) -> bytes:
        return key_id(self.keys[0])

    def find(self, wanted: bytes) -> bytes | None:
        return next((k for k in self.keys if hmac.compare_digest(key_id(k), wanted)), None)

    def only(self, wanted: bytes) -> "KeyRing":
        """The ring holding just the key of id `wanted` (none, if this ring lacks it)."""
        key = self.find(wanted)
        return KeyRing(() if key is None else (key,))

    def __repr__(self) -> str:  # never print a key, even in a traceback
        return f"KeyRing(ids={[key_id(k).hex() for k in self.keys]})"


def load(path: str | Path) -> KeyRing:
    """The keys in `path`; ConfigError naming the line for anything else."""
    try:
        text = read_small(path, limit=64 * 1024).decode("utf-8-sig")  # a BOM is no key
    except OSError as e:
        raise ConfigError(f"encryption key file {path} cannot be read: {e.strerror}; check "
                          f"{SETTING} and the Secret mounted there") from e
    except UnfitFile as e:
        raise ConfigError(f"encryption key file {path} {e}; check {SETTING} and the Secret "
                          "mounted there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"encryption key file {path} is not text; write one base64 key per "
                          "line") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"encryption key file {path}, line {number}: not base64; write "
                              "one key per line, e.g. from `head -c 32 /dev/urandom | base64`")
        if len(key) != KEY_BYTES:
            raise ConfigError(f"encryption key file {path}, line {number}: a key must be "
                              f"{KEY_BYTES} bytes, this one is {len(key)}")
        keys.append(key)
    if not keys:
        raise ConfigError(f"encryption key file {path} holds no key; put at least one "
                          "base64-encoded 32-byte key in it")
    return KeyRing(tuple(keys))
