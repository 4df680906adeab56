"""Who owns an output.uri: one live run per output prefix (pure).

Two LoRAFineTunes whose output.uri are equal, or one inside the other, would write the same
checkpoints and adapter. The earlier one (creationTimestamp, then name, then namespace) keeps
the prefix; a later one is refused before anything is created (Accepted=False, OutputInUse):

- while the earlier one is live (not Succeeded or Failed): always, output.overwrite included
  (the two trainers would delete and overwrite each other's checkpoints while both run);
- once the earlier one has finished: unless the later one sets output.overwrite: true, which
  asks the trainer to replace the earlier run's artifacts.

The operator learns every resource's claim from its watch (a kopf index: handlers.lft_outputs),
so the check costs no API call. Deleting or finishing the earlier one re-queues the later ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lft_api.conditions import TERMINAL_PHASES, Reason

from .status import Problem


def normalize_uri(uri: str) -> str:
    """Trailing slashes do not make another prefix: s3://b/run/ is s3://b/run."""
    uri = uri.strip()
    stripped = uri.rstrip("/")
    return stripped if stripped and not stripped.endswith(":") else uri


def uri_root(uri: str) -> str:
    """The part two overlapping URIs share for sure (scheme and bucket, or the first directory)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    return f"{scheme}{sep}{rest.lstrip('/').split('/', 1)[0]}"


def overlaps(a: str, b: str) -> bool:
    """Equal, or one is a prefix directory of the other."""
    return a == b or b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/")


@dataclass(frozen=True)
class OutputClaim:
    namespace: str
    name: str
    uid: str
    created: str  # creationTimestamp
    uri: str  # normalized
    finished: bool  # Succeeded or Failed

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.name, self.namespace)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> OutputClaim | None:
        meta = body.get("metadata") or {}
        uri = ((body.get("spec") or {}).get("output") or {}).get("uri")
        if not isinstance(uri, str) or not uri.strip():
            return None
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            created=meta.get("creationTimestamp") or "",
            uri=normalize_uri(uri),
            finished=(body.get("status") or {}).get("phase") in TERMINAL_PHASES,
        )


def output_conflict(me: OutputClaim, overwrite: bool, claims: Iterable[OutputClaim]) -> Problem | None:
    """OutputInUse when an earlier resource holds an overlapping output.uri (see the module docstring)."""
    earlier = sorted(
        (c for c in claims if c.uid != me.uid and c.order < me.order and overlaps(c.uri, me.uri)),
        key=lambda c: c.order,
    )
    blocking = [c for c in earlier if not c.finished or not overwrite]
    if not blocking:
        return None
    other = next((c for c in blocking if not c.finished), blocking[0])
    where = "equals" if other.uri == me.uri else ("is inside" if me.uri.startswith(other.uri) else "contains")
    if other.finished:
        fix = (
            f"use another output.uri, delete LoRAFineTune {other.ref}, or set output.overwrite: true to replace "
            "its artifacts"
        )
    else:
        fix = (
            f"use another output.uri, or delete LoRAFineTune {other.ref} (output.overwrite does not apply while "
            "it runs)"
        )
    state = "finished" if other.finished else "not finished"
    return Problem(
        Reason.OUTPUT_IN_USE,
        f"spec.output.uri {me.uri} {where} the output.uri {other.uri} of LoRAFineTune {other.ref} "
        f"(created earlier, {state}): both would write the same checkpoints and adapter. To proceed, {fix}.",
    )
