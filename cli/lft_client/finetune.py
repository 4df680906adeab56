"""The pure parts: a spec checked with the API's own models before it is sent, and FineTune, the resource as the
API server returned it with its status typed by lft_api (plain dicts in, models out; no cluster)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from lft_api import contract
from lft_api.contract import Metrics, Progress
from lft_api.errors import format_validation_errors
from lft_api.resource import MAX_NAME_LENGTH, LoRAFineTuneSpec, LoRAFineTuneStatus
from lft_cli import render

from .errors import InvalidSpec, LftError

API_VERSION = f"{contract.API_GROUP}/{contract.API_VERSION}"
PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
ENDED = ("Succeeded", "Failed")
# A DNS-1123 subdomain (what the API server requires of a custom resource's name), at most MAX_NAME_LENGTH (the
# CRD's own limit: the Job is <name>-trainer, and its name goes into a 63-character label).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _problems(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    return [(".".join([prefix, *(str(p) for p in e.get("loc", ()) if p != "__root__")]), str(e.get("msg")))
            for e in exc.errors(include_url=False, include_input=False)]


def check_name(name: str) -> None:
    """InvalidSpec naming metadata.name unless the API server and the operator would take it."""
    why = None
    if not isinstance(name, str) or not name:
        why = "a name is required"
    elif len(name) > MAX_NAME_LENGTH:
        why = f"at most {MAX_NAME_LENGTH} characters (the Job is <name>-trainer), not {len(name)}"
    elif not _NAME.match(name):
        why = "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
    if why:
        raise InvalidSpec(f"metadata.name {name!r}: {why}", [("metadata.name", why)])


def spec_body(spec: Mapping[str, Any] | LoRAFineTuneSpec, validate: bool = True) -> dict[str, Any]:
    """The spec to send, checked with LoRAFineTuneSpec first: InvalidSpec naming each refused field (wire names,
    'spec.training.epochs: Input should be greater than 0'), input values left out. Sent are the fields the user
    set, in the API's camelCase (snake_case keys are accepted, as the models take them), so the server's defaults
    and the operator's settings apply to the rest exactly as with `kubectl apply`.

    validate=False sends a dict as it is (a client older than the cluster's CRD): the API server still checks
    every field (strict field validation) and the CEL rules, and its refusal is raised as ApiRefused."""
    if isinstance(spec, BaseModel):
        raw = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    elif isinstance(spec, Mapping):
        raw = dict(spec)
    else:
        raise TypeError(f"spec: a dict or a LoRAFineTuneSpec, not {type(spec).__name__}")
    if not validate:
        return raw
    try:
        model = LoRAFineTuneSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpec(f"invalid spec (nothing was sent): {format_validation_errors(exc, prefix='spec')}",
                          _problems(exc, "spec")) from None
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def manifest(name: str, spec: dict[str, Any], labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The LoRAFineTune object to create."""
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = {str(k): str(v) for k, v in labels.items()}
    return {"apiVersion": API_VERSION, "kind": contract.KIND, "metadata": meta, "spec": spec}


@dataclass(frozen=True)
class FineTune:
    """A LoRAFineTune as the API server returned it (`raw`), read through the API's models.

    `status` is lft_api's LoRAFineTuneStatus (phase, conditions, progress, metrics, attempts, adapter with its
    files' sha256, artifacts...); `phase`, `progress`, `metrics` and `adapter_uri` are shortcuts. A snapshot:
    Client.get() or Client.wait() returns a newer one."""

    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.raw["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.raw["metadata"].get("namespace") or ""

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.raw["metadata"].get("labels") or {})

    @property
    def uid(self) -> str | None:
        return self.raw["metadata"].get("uid")

    @cached_property
    def spec(self) -> LoRAFineTuneSpec:
        try:
            return LoRAFineTuneSpec.model_validate(self.raw.get("spec") or {})
        except ValidationError as exc:
            raise LftError(f"the spec of {self.namespace}/{self.name} does not parse with this client's models (a "
                           f"newer CRD?): {format_validation_errors(exc, prefix='spec')}") from None

    @cached_property
    def status(self) -> LoRAFineTuneStatus:
        """The typed status (empty before the operator's first reconcile: phase None)."""
        try:
            return LoRAFineTuneStatus.model_validate(self.raw.get("status") or {})
        except ValidationError as exc:
            raise LftError(f"the status of {self.namespace}/{self.name} does not parse with this client's models (an "
                           f"operator newer than this client?): {format_validation_errors(exc, prefix='status')}"
                           ) from None

    @property
    def phase(self) -> str | None:
        """Pending, Running, Suspended, Succeeded, Failed; None before the operator's first reconcile."""
        return (self.raw.get("status") or {}).get("phase")

    @property
    def progress(self) -> Progress | None:
        return self.status.progress

    @property
    def metrics(self) -> Metrics | None:
        return self.status.metrics

    @property
    def adapter_uri(self) -> str | None:
        """Where the adapter is, once the run succeeded (status.adapter, else the trainer's status.artifacts)."""
        status = self.status
        if status.adapter is not None:
            return status.adapter.uri
        return status.artifacts.adapter if status.artifacts is not None else None

    @property
    def ended(self) -> bool:
        return self.phase in ENDED

    def summary(self) -> str:
        """One line: 'name: Running, 120/300 (40%), epoch 1.2, ETA 3m20s, loss 1.2345' (what is known)."""
        parts = [self.phase or "Pending (not reconciled yet)"]
        status = self.status
        if status.queue is not None and status.queue.state != "Admitted" and self.phase not in ENDED:
            parts.append(f"{status.queue.state} in {status.queue.name}")
        if status.progress is not None:
            parts.append(render.progress_line(status.progress))
        if status.metrics is not None and status.metrics.loss is not None:
            parts.append(f"loss {status.metrics.loss:g}")
        if self.phase in ("Failed", "Suspended", "Succeeded") and status.message:
            parts.append(" ".join(status.message.split()))
        return f"{self.name}: " + ", ".join(parts)

    def describe(self) -> str:
        """What `kubectl lft status` prints: phase, progress, eval loss before/after, artifacts, conditions."""
        return render.format_status(self.raw)

    def __hash__(self) -> int:  # equal FineTunes (the same raw object) hash alike; raw itself is a dict
        meta = self.raw["metadata"]
        return hash((meta.get("namespace"), meta["name"], meta.get("resourceVersion")))

    def __repr__(self) -> str:
        progress = (self.raw.get("status") or {}).get("progress") or {}
        shown = f", progress={progress['display']!r}" if progress.get("display") else ""
        return f"FineTune({self.name!r}, namespace={self.namespace!r}, phase={self.phase!r}{shown})"
