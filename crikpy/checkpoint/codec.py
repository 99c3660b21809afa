"""The codec stack of a checkpoint's files, in one place: compressed (zstd frames, framed.py),
then sealed (sealed.py) on the way up; opened, then decompressed, on the way down. A stored
file's manifest entry names its codec; sealing is recorded once, in the manifest."""

from __future__ import annotations

from crikpy.checkpoint.framed import CODEC, Compressed, Decompressed
from crikpy.checkpoint.keys import KeyRing
from crikpy.checkpoint.sealed import Binding, OpenedFile, SealedFile
from crikpy.stores.base import Sink, Source, as_sink, as_source


def encode(source: "str | Source", keys: KeyRing | None, binding: Binding,
           compress: bool) -> Source:
    """What is stored for `source`: compressed if asked, then sealed if a key is set."""
    source = as_source(source)
    if compress:
        source = Compressed(source)
    if keys is not None:
        source = SealedFile(source, keys, binding)
    return source


def codec_of(compress: bool) -> str | None:
    """The codec a manifest entry records for a file encoded with `compress`."""
    return CODEC if compress else None


def decode(sink: "str | Sink", keys: KeyRing | None, binding: Binding, codec: str | None,
           what: str) -> Sink:
    """Where stored bytes go to become `sink`'s file: opened under `keys`, then decompressed
    when the entry's `codec` says so. `what` names the file in errors."""
    sink = as_sink(sink)
    if codec is not None:
        sink = Decompressed(sink, what)
    if keys is not None:
        sink = OpenedFile(sink, keys, binding)
    return sink
