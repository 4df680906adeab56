"""Files of a run from its output storage: the trainer's own Storage code, with what the trainer gets.

Where and how (the way the trainer pod gets them):
- endpoint and region: the trainer's config (the run's ConfigMap, with the operator's default endpoint
  filled in), else spec.storage; `--endpoint-url` overrides both (a laptop may reach the store by
  another address than the pods).
- credentials: the Secret the trainer's container gets its environment from (spec.storageSecretRef, else
  the operator's default Secret, as the Job names it), read with the user's kube credentials. Without one,
  or when the user may not read it, the user's own AWS_* environment (a note on stderr says so).
Secret values stay in memory: never printed, and scrubbed from any error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lft_api.contract import Artifacts, FileDigest
from lft_api.spec import StorageSpec
from lft_trainer.errors import InvalidInput, StorageError
from lft_trainer.storage.retry import RetryPolicy
from lft_trainer.storage.store import Storage, local_files, mismatches

from .kube import CREDENTIAL_KEYS, CliError, Cluster

T = TypeVar("T")

# A command line gives up sooner than the trainer (120 s): a wrong endpoint should say so in seconds.
CLI_RETRY = RetryPolicy(total_seconds=20, initial_delay=0.5, max_delay=4.0, check_seconds=10)


@dataclass
class RunStorage:
    spec: StorageSpec
    env: Mapping[str, str]
    source: str  # where the credentials came from, for messages: 'Secret "x"' or 'your environment'

    def scrub(self, text: str) -> str:
        for key in CREDENTIAL_KEYS:
            value = self.env.get(key)
            if value and len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def storage(self, uri: str) -> Storage:
        return Storage(uri, self.spec, CLI_RETRY, env=self.env)


def storage_spec(cluster: Cluster, obj: dict[str, Any], endpoint_url: str | None) -> StorageSpec:
    config = cluster.trainer_config(obj["metadata"]["name"]) or {}
    raw = config.get("storage") or (obj.get("spec") or {}).get("storage") or {}
    spec = StorageSpec.model_validate(raw)
    return spec.model_copy(update={"endpoint_url": endpoint_url}) if endpoint_url else spec


def note_on_stderr(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def run_storage(cluster: Cluster, obj: dict[str, Any], endpoint_url: str | None = None,
                note: Callable[[str], None] = note_on_stderr) -> RunStorage:
    """Where and with which credentials the trainer reads the run's storage (see the module's docstring).
    note(text): told when the credentials fall back to the process environment (the CLI prints it)."""
    spec = storage_spec(cluster, obj, endpoint_url)
    ref = (obj.get("spec") or {}).get("storageSecretRef") or {}
    names = [ref["name"]] if ref.get("name") else cluster.job_secret_names((obj.get("status") or {}).get("jobName"))
    for name in names:
        try:
            creds = cluster.credentials(name)
        except CliError as exc:
            if os.environ.get("AWS_ACCESS_KEY_ID"):
                note(f"{exc}; using the AWS_* credentials of your environment")
                return RunStorage(spec, os.environ, "your environment")
            raise CliError(f"{exc} (the trainer's storage credentials; or set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY in your environment)") from exc
        if creds:
            return RunStorage(spec, creds, f'Secret "{name}"')
    return RunStorage(spec, os.environ, "your environment")


def _split(uri: str) -> tuple[str, str]:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return parent, name


def _storage_call(store: RunStorage, what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except FileNotFoundError as exc:
        raise CliError(store.scrub(f"{what}: not found ({exc})")) from exc
    except (InvalidInput, StorageError) as exc:
        raise CliError(store.scrub(f"{what} (credentials from {store.source}): {exc}")) from exc


def download_file(store: RunStorage, uri: str, dest: Path) -> Path:
    parent, name = _split(uri)
    return _storage_call(store, f"downloading {uri}", lambda: store.storage(parent).download_file(name, dest))


def download_dir(store: RunStorage, uri: str, dest: Path) -> list[str]:
    """Every file under uri into dest; the names (relative, sorted)."""
    files = _storage_call(store, f"listing {uri}", lambda: store.storage(uri).list_files())
    if not files:
        raise CliError(f"no files under {uri}")
    # Storage.download_dir refuses object names that leave dest (adapter/../../x) before writing anything.
    _storage_call(store, f"downloading {uri}", lambda: store.storage(uri).download_dir("", dest))
    return sorted(files)


def read_jsonl(store: RunStorage, uri: str) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file (samples.jsonl, metrics.jsonl)."""
    parent, name = _split(uri)
    data = _storage_call(store, f"reading {uri}", lambda: store.storage(parent).get_bytes(name))
    try:
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except ValueError as exc:
        raise CliError(f"{uri} is not JSON Lines: {exc}") from exc


STATUS_FILES = "status.adapter.files"


@dataclass(frozen=True)
class Manifest:
    """The adapter's files with their size and sha256, and where the list came from."""

    files: list[FileDigest]
    source: str  # STATUS_FILES, or the URI of training_summary.json
    trusted: bool  # from the operator's status, not from storage that whoever writes the prefix can change


def adapter_manifest(store: RunStorage, status: dict[str, Any]) -> Manifest:
    """status.adapter.files: the operator copies them from the successful trainer pod's termination message,
    and reverts any other writer of status.adapter. Without them (a resource from an older operator, or a
    result too large for the termination message), training_summary.json from the run's storage: whoever can
    write the output prefix can rewrite it along with the adapter (trusted=False)."""
    files = (status.get("adapter") or {}).get("files") or []
    if files:
        return Manifest([FileDigest.model_validate(f) for f in files], STATUS_FILES, trusted=True)
    summary_uri = (status.get("artifacts") or {}).get("summary")
    if summary_uri:
        parent, name = _split(summary_uri)
        summary = _storage_call(store, f"reading {summary_uri}", lambda: store.storage(parent).get_json(name))
        listed = summary.get("files") if isinstance(summary, dict) else None
        if listed:
            return Manifest([FileDigest.model_validate(f) for f in listed], summary_uri, trusted=False)
    return Manifest([], summary_uri or STATUS_FILES, trusted=False)


def adapter_uri(name: str, status: dict[str, Any]) -> str:
    """Where the adapter is: status.adapter is the operator's (it reverts other writers); status.artifacts is the
    trainer's patch. CliError while the run has none."""
    uri = (status.get("adapter") or {}).get("uri") or artifacts(status).adapter
    if not uri:
        raise CliError(f"{name} has no adapter yet (phase {status.get('phase') or 'not reconciled yet'}): it is "
                       "uploaded when the run succeeds")
    return uri


def pull_manifest(name: str, uri: str, store: RunStorage, status: dict[str, Any]) -> Manifest:
    """The manifest to check the adapter at uri against (adapter_manifest); CliError when there is nothing to check
    it against (then nothing is downloaded)."""
    manifest = adapter_manifest(store, status)
    if not manifest.files:
        raise CliError(f"{name}: no sha256 list to check the adapter at {uri} against ({STATUS_FILES} is "
                       "empty and there is no training_summary.json listing its files); nothing was downloaded")
    return manifest


def untrusted_warning(name: str, manifest: Manifest) -> str:
    """What to tell the user when the manifest came from storage rather than the operator's status."""
    return (f"{name} has no {STATUS_FILES} (an operator that predates them, or a result too large for the "
            f"trainer's termination message): the files are checked against {manifest.source}, which is in the "
            "run's storage: whoever can write the output prefix can change it along with the adapter, so this check "
            "finds damaged files, not tampered ones")


def verify(local_dir: Path, manifest: list[FileDigest], source: str = "the manifest") -> list[str]:
    """What does not match the manifest: listed files missing, of another size or sha256 (the trainer's own
    check of a checkpoint), then files under local_dir it does not list ('<name>: not in <source>'). Empty when
    all match."""
    listed = {f.name for f in manifest}
    extra = [n for n in (p.relative_to(local_dir).as_posix() for p in local_files(local_dir)) if n not in listed]
    return mismatches(local_dir, manifest) + [f"{n}: not in {source}" for n in extra]


class Mismatch(Exception):
    """The downloaded adapter does not match its manifest; nothing was written to the destination."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def pull_adapter(store: RunStorage, uri: str, dest: Path, manifest: Manifest) -> list[str]:
    """Every file under uri into dest, only once all of them match the manifest (the same names, sizes and
    sha256, nothing more): downloaded into a temporary folder next to dest, checked there, then moved into dest
    (a rename each: the same file system). On a mismatch (Mismatch) or an error, dest is left as it was: the
    temporary folder is removed, and so are the parent folders this call created. Returns the names (relative,
    sorted)."""
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest} exists and is not a directory")
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # innermost first
    tmp = None
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name or 'adapter'}.pull-", dir=dest.parent))
        except OSError as exc:
            raise CliError(f"cannot write next to {dest}: {exc}") from exc
        download_dir(store, uri, tmp)
        problems = verify(tmp, manifest.files, manifest.source)
        if problems:
            raise Mismatch(problems)
        names = [p.relative_to(tmp).as_posix() for p in local_files(tmp)]
        _move(tmp, names, dest)
        created = []
        return names
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # after a failure: only the (empty) ones this call made
            with contextlib.suppress(OSError):
                folder.rmdir()


def _move(tmp: Path, names: list[str], dest: Path) -> None:
    in_the_way = [n for n in names if (dest / n).is_dir() or any(
        p.exists() and not p.is_dir() for p in (dest / n).parents if p == dest or dest in p.parents)]
    if in_the_way:
        raise CliError(f"{dest}: something there is in the way of {', '.join(in_the_way[:5])}; nothing was written "
                       "(choose a new or empty DIR)")
    for name in names:
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, target)
        except OSError as exc:
            raise CliError(f"moving the verified adapter into {dest} ({name}): {exc}") from exc


def artifacts(status: dict[str, Any]) -> Artifacts:
    """status.artifacts, with the adapter from status.adapter when the trainer's patch is missing."""
    found = Artifacts.model_validate(status.get("artifacts") or {})
    adapter = (status.get("adapter") or {}).get("uri")
    return found.merged_with(Artifacts(adapter=adapter)) if adapter and not found.adapter else found
