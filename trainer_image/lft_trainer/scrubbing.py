"""Secret scrubbing in the trainer: by value and by pattern, wherever output goes.

At start (install()) the trainer reads the secret values it received: every file of the Secrets the
operator mounts for this purpose (contract.ENV_SECRET_DIRS: the storage Secret and the Secrets of
secretKeyRef variables, whatever their keys are called, and the podTemplate's Secret volumes), the
variables whose names say credential (HF_TOKEN, AZURE_STORAGE_KEY, ..._SECRET..., ..._TOKEN, ...),
and the GCS credentials file. It then wraps sys.stdout and sys.stderr, so logs and tracebacks are
masked too; status patches (progress.KubeStatusClient) and the termination message (__main__) go
through scrub()/scrub_tree(). lft_api.scrub adds the patterns (signed URLs, connection strings...).
"""

from __future__ import annotations

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
MAX_FILE = 64 * 1024
SECRET_NAME = re.compile(r"(?i)(SECRET|TOKEN|PASSW|CREDENTIAL|API_?KEY|ACCESS_KEY|ACCOUNT_KEY|STORAGE_KEY|SAS|"
                         r"CONNECTION_STRING|PRIVATE_KEY|SIGNATURE)")
# Settings, not credentials, even where they come from a credentials Secret.
NOT_SECRET = re.compile(r"(?i)(REGION|ENDPOINT|TOKENIZERS_PARALLELISM|^LFT_)")
JSON_SECRET_KEYS = ("private_key", "private_key_id", "client_secret", "refresh_token", "access_token")


def _variants(value: str) -> list[str]:
    """The value as it may appear in output: itself, JSON-escaped, percent-encoded, its lines."""
    value = value.strip()
    if len(value) < MIN_LENGTH:
        return []
    out = {value, json.dumps(value)[1:-1], quote(value, safe="")}
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


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Every secret value this process received, with its variants, longest first."""
    named: list[tuple[str, str]] = [(k, v) for k, v in environ.items() if SECRET_NAME.search(k)]
    dirs = [d for d in environ.get(contract.ENV_SECRET_DIRS, "").split(":") if d]
    named += list(_files(dirs))
    creds = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if creds:
        named += [("GOOGLE_APPLICATION_CREDENTIALS", text) for _, text in _files_of(creds)]
    values = {v for name, value in named if not NOT_SECRET.search(name) for v in _variants(value)}
    return sorted(values, key=len, reverse=True)


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
        return cls(secret_values(os.environ if environ is None else environ))

    def __call__(self, text: str) -> str:
        return patterns.scrub(text, self.values)


_installed: Scrubber | None = None


def _current() -> Scrubber:
    """The values read at install() and those of the environment now (set later, or never installed)."""
    now = secret_values(os.environ)
    if _installed is None:
        return Scrubber(now)
    return Scrubber(sorted(set(_installed.values) | set(now), key=len, reverse=True))


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
    global _installed
    _installed = Scrubber.from_environment(environ)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, ScrubbingStream):
            setattr(sys, name, ScrubbingStream(stream, _installed))
    return _installed
