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

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lft_api.contract import Artifacts, FileDigest
from lft_api.spec import StorageSpec
from lft_trainer.errors import InvalidInput, StorageError
from lft_trainer.retry import RetryPolicy
from lft_trainer.storage import Storage, local_files, mismatches

from .kube import CREDENTIAL_KEYS, CliError, Cluster

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


def run_storage(cluster: Cluster, obj: dict[str, Any], endpoint_url: str | None = None) -> RunStorage:
    spec = storage_spec(cluster, obj, endpoint_url)
    ref = (obj.get("spec") or {}).get("storageSecretRef") or {}
    names = [ref["name"]] if ref.get("name") else cluster.job_secret_names((obj.get("status") or {}).get("jobName"))
    for name in names:
        try:
            creds = cluster.credentials(name)
        except CliError as exc:
            if os.environ.get("AWS_ACCESS_KEY_ID"):
                print(f"note: {exc}; using the AWS_* credentials of your environment", file=sys.stderr)
                return RunStorage(spec, os.environ, "your environment")
            raise CliError(f"{exc} (the trainer's storage credentials; or set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY in your environment)") from exc
        if creds:
            return RunStorage(spec, creds, f'Secret "{name}"')
    return RunStorage(spec, os.environ, "your environment")


def _split(uri: str) -> tuple[str, str]:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return parent, name


def _storage_call(store: RunStorage, what: str, fn):
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


def adapter_manifest(store: RunStorage, status: dict[str, Any]) -> tuple[list[FileDigest], str]:
    """The adapter's files with their sha256, and where the list came from: training_summary.json (every
    file), else status.adapter.files (the termination message may have shortened it)."""
    summary_uri = (status.get("artifacts") or {}).get("summary")
    if summary_uri:
        parent, name = _split(summary_uri)
        summary = _storage_call(store, f"reading {summary_uri}", lambda: store.storage(parent).get_json(name))
        if summary.get("files"):
            return [FileDigest.model_validate(f) for f in summary["files"]], summary_uri
    files = (status.get("adapter") or {}).get("files") or []
    return [FileDigest.model_validate(f) for f in files], "status.adapter.files"


def verify(local_dir: Path, manifest: list[FileDigest]) -> list[str]:
    """What does not match the manifest (missing files, other sizes or sha256): the trainer's own check of a
    checkpoint. Empty when all match."""
    return mismatches(local_dir, manifest)


def unlisted(local_dir: Path, names: list[str], manifest: list[FileDigest]) -> list[str]:
    """Downloaded files the manifest does not list (kept, reported)."""
    listed = {f.name for f in manifest}
    present = {p.relative_to(local_dir).as_posix() for p in local_files(local_dir)}
    return sorted(n for n in names if n not in listed and n in present)


def artifacts(status: dict[str, Any]) -> Artifacts:
    """status.artifacts, with the adapter from status.adapter when the trainer's patch is missing."""
    found = Artifacts.model_validate(status.get("artifacts") or {})
    adapter = (status.get("adapter") or {}).get("uri")
    return found.merged_with(Artifacts(adapter=adapter)) if adapter and not found.adapter else found
