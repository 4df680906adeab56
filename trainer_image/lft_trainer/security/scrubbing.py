"""Secret scrubbing in the trainer: by value and by pattern, wherever output goes.

At start (install()) the trainer reads the secret values it received: every file of the Secrets the
operator mounts for this purpose (contract.ENV_SECRET_DIRS: the storage Secret and the Secrets of
secretKeyRef variables, whatever their keys are called, and the podTemplate's Secret volumes), the
variables whose names say credential (HF_TOKEN, AZURE_STORAGE_KEY, ..._SECRET..., ..._TOKEN, ...),
the GCS credentials file and the pod's ServiceAccount token. It then wraps sys.stdout and sys.stderr, so
logs and tracebacks are masked too; status patches (progress.KubeStatusClient) and the termination
message (__main__) go through scrub()/scrub_tree(). lft_api.scrub adds the patterns (signed URLs,
connection strings...).

secret_values() are the values, secret_variants() every form they are looked for in: raw, JSON-escaped,
percent-encoded, base64 (standard and URL-safe, at any alignment inside a longer encoded blob) and hex.
secret_scan.py searches the files bound for the output for the same variants.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from lft_api import contract
from lft_api import scrub as patterns

MIN_LENGTH = 6  # shorter values are no credentials, and masking them would garble every line
MIN_ENCODED = 8  # a shorter base64 middle (a short value at an awkward alignment) matches too much by chance
MAX_FILE = 64 * 1024
# The bound ServiceAccount token the operator mounts (lft_operator.builders: _api_access_volume at
# SERVICE_ACCOUNT_DIR); the kubelet rotates it, so it is read again whenever the values are asked for.
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_URL_SAFE = str.maketrans("+/", "-_")
SECRET_NAME = re.compile(r"(?i)(SECRET|TOKEN|PASSW|CREDENTIAL|API_?KEY|ACCESS_KEY|ACCOUNT_KEY|STORAGE_KEY|SAS|"
                         r"CONNECTION_STRING|PRIVATE_KEY|SIGNATURE)")
# Settings, not credentials, even where they come from a credentials Secret.
# Identities (user and account names) are not credentials either: a user name such as "trainer" is in every
# path of the image, and the output scan (secret_scan.py) would refuse every checkpoint for it.
NOT_SECRET = re.compile(r"(?i)(REGION|ENDPOINT|TOKENIZERS_PARALLELISM|^LFT_|USERNAME|USER_NAME|ACCOUNT_NAME)")
JSON_SECRET_KEYS = ("private_key", "private_key_id", "client_secret", "refresh_token", "access_token")


def _variants(value: str) -> list[str]:
    """The value as it may appear in output: itself, JSON-escaped, percent-encoded, base64, hex, its lines."""
    value = value.strip()
    if len(value) < MIN_LENGTH:
        return []
    out = {value, json.dumps(value)[1:-1], quote(value, safe="")} | _encodings(value.encode())
    out |= {line.strip() for line in value.splitlines() if len(line.strip()) >= 16}
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if isinstance(doc, dict):  # e.g. a GCS service-account key
        for key in JSON_SECRET_KEYS:
            if isinstance(doc.get(key), str) and doc[key] != value:
                out |= set(_variants(doc[key]))
    return sorted(out, key=len, reverse=True)


def _encodings(raw: bytes) -> set[str]:
    """raw in hex (both cases) and in base64 (standard and URL-safe) wherever it sits in a longer blob.

    base64 turns 3 bytes into 4 characters, so the characters raw becomes depend on its offset mod 3 in the
    blob. For each shift s only the characters made of raw's bits alone are kept: the blob's neighbouring
    bytes change the others. raw's bits are 8s .. 8(s+n); character i holds bits 6i .. 6i+6.
    """
    out = {raw.hex(), raw.hex().upper()}
    for shift in range(3):
        first, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
        middle = base64.b64encode(b"\0" * shift + raw)[first:end].decode()
        if len(middle) >= MIN_ENCODED:
            out |= {middle, middle.translate(_URL_SAFE)}
    return out


def _files(dirs: Iterable[str]) -> Iterable[tuple[str, str]]:
    for top in dirs:
        for root, subdirs, files in os.walk(top, followlinks=True):
            subdirs[:] = [d for d in subdirs if not d.startswith("..")]  # a Secret volume's ..data copies
            for name in files:
                if name.startswith(".."):
                    continue
                try:
                    with open(os.path.join(root, name), "rb") as f:
                        yield name, f.read(MAX_FILE).decode("utf-8", "replace")
                except OSError:
                    continue


def _received(environ: Mapping[str, str]) -> list[str]:
    """The secret values environ and the files it points to hold now (see the module's docstring)."""
    named: list[tuple[str, str]] = [(k, v) for k, v in environ.items() if SECRET_NAME.search(k)]
    dirs = [d for d in environ.get(contract.ENV_SECRET_DIRS, "").split(":") if d]
    named += list(_files(dirs))
    creds = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if creds:
        named += [("GOOGLE_APPLICATION_CREDENTIALS", text) for _, text in _files_of(creds)]
    named += [("token", text) for _, text in _files_of(SERVICE_ACCOUNT_TOKEN)]
    return [value.strip() for name, value in named if not NOT_SECRET.search(name) and len(value.strip()) >= MIN_LENGTH]


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value this process knows, as received, longest first: those read at install() and
    those of environ now (default os.environ: a variable set later, a token the kubelet rotated)."""
    now = _received(os.environ if environ is None else environ)
    return sorted(set(now) | set(_installed_values), key=len, reverse=True)


def secret_variants(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every form of secret_values(environ) to look for in output (_variants), longest first."""
    return list(_variants_of(tuple(secret_values(environ))))


@functools.lru_cache(maxsize=8)
def _variants_of(values: tuple[str, ...]) -> tuple[str, ...]:
    out = {v for value in values for v in _variants(value)}
    return tuple(sorted(out, key=len, reverse=True))


def _files_of(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, "rb") as f:
            return [(path, f.read(MAX_FILE).decode("utf-8", "replace"))]
    except OSError:
        return []


class Scrubber:
    def __init__(self, values: Iterable[str]):
        self.values = tuple(values)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Scrubber:
        return cls(secret_variants(environ))

    def __call__(self, text: str) -> str:
        return patterns.scrub(text, self.values)


_installed: Scrubber | None = None
_installed_values: tuple[str, ...] = ()  # secret_values() at install()


def _current() -> Scrubber:
    """The values read at install() and those of the environment now (set later, or never installed)."""
    return Scrubber(secret_variants())


def scrub(text: str) -> str:
    """`text` without secrets."""
    return _current()(text)


def scrub_tree(obj: Any, scrubber: Scrubber | None = None) -> Any:
    """Every string in a JSON-like value scrubbed."""
    scrubber = scrubber or _current()
    if isinstance(obj, str):
        return scrubber(obj)
    if isinstance(obj, dict):
        return {k: scrub_tree(v, scrubber) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_tree(v, scrubber) for v in obj]
    return obj


class ScrubbingStream(io.TextIOBase):
    """A text stream that writes whole lines, scrubbed, to another (a secret split over two writes,
    as print() and tracebacks do, is still masked); a flush writes the partial line too."""

    def __init__(self, target: Any, scrubber: Scrubber):
        self.target, self.scrubber, self._pending = target, scrubber, ""

    def write(self, text: str) -> int:
        self._pending += text
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if cut >= 0:
            self.target.write(self.scrubber(self._pending[: cut + 1]))
            self._pending = self._pending[cut + 1:]
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(self.scrubber(self._pending))
            self._pending = ""
        self.target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


def install(environ: Mapping[str, str] | None = None) -> Scrubber:
    """Read the secret values now and mask them (and the patterns) in everything written to
    sys.stdout and sys.stderr from here on, tracebacks included."""
    global _installed, _installed_values
    _installed_values = tuple(secret_values(environ))
    _installed = Scrubber(_variants_of(_installed_values))
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, ScrubbingStream):
            setattr(sys, name, ScrubbingStream(stream, _installed))
    return _installed
