"""Benchmark: what sealing a checkpoint costs, per core, next to what every checkpoint pays anyway.

On one thread (so the figures are per core), over MIB MiB of random bytes (default 256): a plain
memory copy and sha256 (both already paid by every checkpoint, sealed or not), then crikpy's
sealing and opening as a store runs them (SealedFile / OpenedFile, 1 MiB AES-256-GCM chunks).
Prints a table; asserts nothing.

    .venv/bin/python -m tests.bench.sealing [MIB]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from crikpy.checkpoint.keys import KeyRing
from crikpy.checkpoint.sealed import CHUNK, Binding, OpenedFile, SealedFile


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:6.2f} GB/s"


def timed(fn) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mib", type=int, nargs="?", default=256)
    size = parser.parse_args().mib * 1024 * 1024
    ring = KeyRing((os.urandom(32),))
    binding = Binding("ns/bench", "20261123T000000.000Z-00000000", "files/images/pages-1.img")
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "pages.img"
        plain.write_bytes(os.urandom(size))
        data = plain.read_bytes()
        sealed_path = Path(tmp) / "sealed"

        def copy():
            view = memoryview(data)
            out = bytearray(CHUNK)
            for at in range(0, size, CHUNK):
                out[: len(view[at:at + CHUNK])] = view[at:at + CHUNK]

        def sha256():
            digest = hashlib.sha256()
            for at in range(0, size, CHUNK):
                digest.update(data[at:at + CHUNK])

        def cipher_alone():
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            aead = AESGCM(os.urandom(32))
            for i, at in enumerate(range(0, size, CHUNK)):
                aead.encrypt(i.to_bytes(12, "big"), data[at:at + CHUNK], b"")

        def seal():
            with SealedFile(str(plain), ring, binding).open() as src, open(sealed_path, "wb") as out:
                while chunk := src.read(8 * CHUNK):
                    out.write(chunk)

        def unseal():
            body = sealed_path.read_bytes()
            with OpenedFile(str(Path(tmp) / "opened"), ring, binding).open() as sink:
                for at in range(0, len(body), 8 * CHUNK):
                    sink.write(body[at:at + 8 * CHUNK])

        rows = [("memory copy (baseline)", timed(copy)), ("sha256 (paid by every checkpoint)",
                                                           timed(sha256)),
                ("AES-256-GCM alone, in memory", timed(cipher_alone)),
                ("seal: AES-256-GCM, from a file", timed(seal)),
                ("open: AES-256-GCM, to a file", timed(unseal))]
    print(f"sealing cost, one thread, {size // (1024 * 1024)} MiB of random bytes, best of 3")
    for label, seconds in rows:
        print(f"  {label:36} {rate(size, seconds)}   {seconds:.3f} s")


if __name__ == "__main__":
    main()
