"""Sealed objects: what crikpy stores when a key is set. AES-256-GCM, chunk by chunk, streaming.

    header   MAGIC (8 bytes) | key id (8) | salt (32)
    chunk i  AES-256-GCM ciphertext of up to CHUNK plaintext bytes | tag (16)

Every object has at least one chunk; an empty plaintext is one empty chunk. Each object has its
own key, HKDF-SHA256(master key, salt), so the nonce of chunk i can simply be i. The associated
data of chunk i binds it to its place: the header, the workload (`namespace/name`), the
checkpoint id, the object's name in the checkpoint, i, and whether it is the last chunk. So a
chunk moved, reordered, dropped or added, a truncated object, or an object copied to another
name, checkpoint or workload fails authentication. docs/format.md specifies it.
"""

from __future__ import annotations

import dataclasses
import io
import secrets
import struct
from typing import BinaryIO

from crikpy.checkpoint.chunked import TransformedReader
from crikpy.checkpoint.keys import KEY_ID_BYTES, SETTING, KeyRing
from crikpy.errors import ConfigError, CorruptCheckpoint
from crikpy.stores.base import Sink, Source, as_sink, as_source

MAGIC = b"CRKPYS\x00\x01"
SALT_BYTES = 32
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + SALT_BYTES
TAG_BYTES = 16
CHUNK = 1024 * 1024
CIPHER = "AES-256-GCM"


class AuthenticationFailed(CorruptCheckpoint):
    """A sealed object that does not open under its key and place: never restored."""


def _aead():
    # cryptography loads only when a key is set, so crikpy without one never imports it.
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415
    return AESGCM, HKDF, hashes, InvalidTag


@dataclasses.dataclass(frozen=True)
class Binding:
    """Where a sealed object belongs: it opens only there."""

    workload: str
    checkpoint_id: str
    name: str  # e.g. "manifest.json", "files/images/pages-1.img"

    def associated_data(self, header: bytes, index: int, last: bool) -> bytes:
        parts = [b"crikpy sealed v1", header, self.workload.encode(), self.checkpoint_id.encode(),
                 self.name.encode()]
        return b"".join(struct.pack(">I", len(p)) + p for p in parts) + struct.pack(
            ">Q?", index, last)


def sealed_size(plain_size: int) -> int:
    chunks = max(1, -(-plain_size // CHUNK))
    return HEADER_BYTES + plain_size + chunks * TAG_BYTES


def is_sealed(data: bytes) -> bool:
    return data.startswith(MAGIC)


def sealing_key_id(data: bytes) -> bytes:
    """The id of the key a sealed object's header names."""
    return data[len(MAGIC):len(MAGIC) + KEY_ID_BYTES]


def encryption_record(key: bytes) -> dict:
    """What a manifest sealed under the key of id `key` says of its sealing."""
    return {"cipher": CIPHER, "key_id": key.hex(), "chunk_bytes": CHUNK}


def _object_cipher(master: bytes, salt: bytes):
    AESGCM, HKDF, hashes, _ = _aead()
    subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                  info=b"crikpy object key v1").derive(master)
    return AESGCM(subkey)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


class _Sealer:
    def __init__(self, ring: KeyRing, binding: Binding) -> None:
        self.header = MAGIC + ring.sealing_id + secrets.token_bytes(SALT_BYTES)
        self._cipher = _object_cipher(ring.sealing_key, self.header[-SALT_BYTES:])
        self._binding = binding

    def seal(self, index: int, plain: bytes, last: bool) -> bytes:
        ad = self._binding.associated_data(self.header, index, last)
        return self._cipher.encrypt(_nonce(index), plain, ad)


class _Opener:
    def __init__(self, ring: KeyRing | None, binding: Binding, header: bytes) -> None:
        # An unknown key id is this pod's configuration (no key, or the wrong one): ConfigError,
        # never a quarantine; a repository that opened the manifest treats it as tampering.
        if not header.startswith(MAGIC):
            raise AuthenticationFailed(f"authentication failed: {binding.name} of checkpoint "
                                       f"{binding.checkpoint_id} is not sealed, but a key is set")
        wanted = sealing_key_id(header)
        key = ring.find(wanted) if ring else None
        if key is None:
            held = "no key is set" if ring is None else "the key file does not hold that key"
            raise ConfigError(f"checkpoint {binding.checkpoint_id} is encrypted with key id "
                              f"{wanted.hex()} and {held}; set {SETTING} to a file that holds "
                              "it (rotated keys stay in the file below the new one)")
        self.header, self._binding = header, binding
        self._cipher = _object_cipher(key, header[-SALT_BYTES:])
        _, _, _, self._invalid = _aead()

    def open(self, index: int, sealed: bytes, last: bool) -> bytes:
        try:
            return self._cipher.decrypt(_nonce(index), sealed,
                                        self._binding.associated_data(self.header, index, last))
        except self._invalid:
            raise AuthenticationFailed(
                f"authentication failed: {self._binding.name} of checkpoint "
                f"{self._binding.checkpoint_id}, chunk {index}, does not open under its key, "
                f"workload {self._binding.workload} and place (tampered, truncated or moved)"
            ) from None


def seal_bytes(data: bytes, ring: KeyRing, binding: Binding) -> bytes:
    sealer = _Sealer(ring, binding)
    return TransformedReader(io.BytesIO(data), CHUNK, sealer.seal, prefix=sealer.header).read()


def open_bytes(data: bytes, ring: KeyRing | None, binding: Binding) -> bytes:
    sink = _OpeningStream(ring, binding, _Collect())
    sink.write(data)
    sink.close()
    return sink.target.data


class SealedFile:
    """A store's upload source: the sealed bytes of a local file, or of a stream of unknown
    length (`plain` a Source with size None), made as they are read."""

    def __init__(self, plain: "str | Source", ring: KeyRing, binding: Binding) -> None:
        self._plain = as_source(plain)
        self._ring, self._binding = ring, binding
        self.path = self._plain.path
        plain_size = self._plain.size
        self.size = None if plain_size is None else sealed_size(plain_size)

    def open(self) -> BinaryIO:
        sealer = _Sealer(self._ring, self._binding)
        return TransformedReader(self._plain.open(), CHUNK, sealer.seal, prefix=sealer.header)


class OpenedFile:
    """A store's download sink: sealed bytes in, plaintext out to a local file (or to another
    sink, such as a decompressing one)."""

    def __init__(self, target: "str | Sink", ring: KeyRing | None, binding: Binding) -> None:
        self._target, self._ring, self._binding = as_sink(target), ring, binding
        self.path = self._target.path

    def open(self):
        return _OpeningStream(self._ring, self._binding, self._target.open())


class _Collect:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


class _OpeningStream:
    """Writable: holds back one whole chunk, since only the end says which chunk is last."""

    def __init__(self, ring: KeyRing | None, binding: Binding, target) -> None:
        self._ring, self._binding, self.target = ring, binding, target
        self._opener: _Opener | None = None
        self._buffer = bytearray()
        self._index = 0
        self._closed = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        view, at = memoryview(self._buffer), 0
        if self._opener is None:
            if len(view) < HEADER_BYTES:
                return len(data)
            self._opener = _Opener(self._ring, self._binding, bytes(view[:HEADER_BYTES]))
            at = HEADER_BYTES
        whole = CHUNK + TAG_BYTES
        while len(view) - at > whole:  # more follows, so this chunk is not the last
            self.target.write(self._opener.open(self._index, view[at:at + whole], False))
            at += whole
            self._index += 1
        rest = bytearray(view[at:])  # at most one chunk, held until more comes or the end
        view.release()
        self._buffer = rest
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._opener is None:
                raise AuthenticationFailed(f"authentication failed: {self._binding.name} of "
                                           f"checkpoint {self._binding.checkpoint_id} is "
                                           "shorter than a sealed header")
            self.target.write(self._opener.open(self._index, bytes(self._buffer), True))
        except BaseException as e:
            # The target (a decompressor) must not check a stream cut short here: its own
            # complaint would hide this one, which names the real fault.
            _close_unchecked(self.target, e)
            raise
        self.target.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:  # the download failed already: close the file, check nothing
            self._closed = True
            _close_unchecked(self.target, exc[0] if exc else None)


def _close_unchecked(target, error: BaseException | None) -> None:
    """Close a target after a failure, without the checks its normal close makes."""
    leave = getattr(target, "__exit__", None)
    if leave is None:
        target.close()
    else:
        leave(type(error) if error else RuntimeError, error, None)
