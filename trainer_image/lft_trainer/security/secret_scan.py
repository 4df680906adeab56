"""No secret of the pod in the output: every byte bound for the output is searched for them before it is written.

Storage checks each upload (upload_file, upload_dir, put_json; the only ways it writes) against
scrubbing.secret_variants(): the values of the pod's Secrets, its credential variables, the GCS key and the
ServiceAccount token, raw, JSON-escaped, percent-encoded, in base64 at any alignment and in hex. A tenant
cannot read them, but a chat template, a dataset or a model file that makes the trainer copy a pod-local
file into the adapter could carry one out; the bucket may be readable by more people than the Secret.

A match ends the run for good (InvalidInput SecretInOutput, exit 3: a retry would write the same bytes),
with a message that names the file and never the value; nothing of that upload is written. There is no
setting to skip the scan. Files are read in chunks (CHUNK) that overlap by the longest form less one byte,
so a form cut by a chunk boundary is still found; a GB-sized merged model is never held in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lft_api.conditions import Reason

from ..errors import InvalidInput
from . import scrubbing

# 1 MiB: each form is searched for in turn, so a chunk that stays in the CPU cache scans fastest.
CHUNK = 1 << 20


def patterns() -> tuple[bytes, ...]:
    """The forms to search for, longest first: the values known now (a rotated token included)."""
    return _encoded(tuple(scrubbing.secret_variants()))


@functools.lru_cache(maxsize=8)
def _encoded(variants: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(v.encode() for v in variants)


def holds_secret(chunks: Iterable[bytes], forms: tuple[bytes, ...]) -> bool:
    """Whether the concatenation of chunks contains one of forms (pure)."""
    if not forms:
        return False
    overlap = max(len(f) for f in forms) - 1
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        if any(f in window for f in forms):
            return True
        tail = window[-overlap:] if overlap else b""
    return False


def file_chunks(path: Path, on_chunk: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
    """path's bytes, CHUNK at a time; on_chunk sees each (e.g. a hash, so the file is read once)."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk


def secret_in_output(name: str) -> InvalidInput:
    return InvalidInput(Reason.SECRET_IN_OUTPUT,
                        f"{name} holds the value of one of this pod's secrets (as it is, or encoded), which must "
                        "not reach the output: nothing of this upload was written. It came from what the run was "
                        "given (the chat template, the dataset or the model's files)", file=name)


def check_bytes(data: bytes, name: str, forms: tuple[bytes, ...] | None = None) -> None:
    """Raise secret_in_output(name) when data holds a secret. name: the file's name under the output."""
    if holds_secret([data], patterns() if forms is None else forms):
        raise secret_in_output(name)


def check_file(path: Path, name: str, forms: tuple[bytes, ...] | None = None,
               on_chunk: Callable[[bytes], None] | None = None) -> None:
    """Like check_bytes, for a local file read in chunks; on_chunk sees every chunk when none matched."""
    chunks = file_chunks(path, on_chunk)
    try:
        if holds_secret(chunks, patterns() if forms is None else forms):
            raise secret_in_output(name)
        for _ in chunks:  # without any form holds_secret reads nothing: a caller's on_chunk still sees it all
            pass
    finally:
        chunks.close()
