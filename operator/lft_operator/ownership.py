"""Who owns an output.uri: one live run per output prefix, within a namespace (pure, but for OutputClaims).

Two LoRAFineTunes of one namespace whose output.uri are equal, or one inside the other, would write the
same checkpoints and adapter. A claim on a prefix counts only against resources of its own namespace (the
check must not let one tenant refuse, or learn the names of, another namespace's runs: across namespaces,
the trainer's pre-flight ownership check of the prefix's artifacts is what stops one run from taking
another's output), and only according to its resource's standing:

- accepted (the operator created its Job): it holds the prefix, whatever its creation order;
- contending (not decided yet, or refused only because of this very rule: OutputInUse): it waits its
  turn, so it holds the prefix against later resources only (creationTimestamp, then name);
- refused (anything else: PolicyViolation, InvalidSpec, JobInvalid, ...): it claims nothing, as it
  will never run.

A resource that a holder blocks is refused before anything is created (Accepted=False, OutputInUse):
- while the holder is live (not Succeeded or Failed): always, output.overwrite included
  (the two trainers would delete and overwrite each other's checkpoints while both run);
- once the holder has finished: unless the later one sets output.overwrite: true, which
  asks the trainer to replace the earlier run's artifacts.

Why contending claims count by order: two resources created at once both have neither a Job nor
Accepted=True at their first reconciles; counting only accepted claims would let both start. The earlier
one goes first whichever is checked first. Why accepted claims count whatever their order: an earlier
resource refused for another reason (its policy) and fixed after a later one started must not start
beside it.

The operator learns every resource's claim from its watch (a kopf index: handlers.lft_outputs, keyed by
namespace and URI root), so the check costs no API call. Deleting, finishing or refusing a claim's
resource re-queues the others of its namespace that wait for the prefix (Reconciler.on_output_released).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from lft_api.conditions import ACCEPTED, TERMINAL_PHASES, Reason

from .status import Problem, trusted_status
from .views import JobView


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


class Standing:
    """Where a claim's resource stands (see the module docstring)."""

    ACCEPTED = "accepted"  # its Job was created: holds the prefix
    CONTENDING = "contending"  # not decided yet, or Accepted=False for OutputInUse: holds it against later ones
    REFUSED = "refused"  # Accepted=False for any other reason: holds nothing


def standing_of(status: dict[str, Any]) -> str:
    """The standing a (trusted) status records: its Accepted condition. What it misses, a Job created but not
    yet recorded, OutputClaims.on adds."""
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ACCEPTED:
            if cond.get("status") == "True":
                return Standing.ACCEPTED
            if cond.get("status") == "False" and cond.get("reason") != Reason.OUTPUT_IN_USE:
                return Standing.REFUSED
            break
    return Standing.CONTENDING


@dataclass(frozen=True)
class OutputClaim:
    namespace: str
    name: str
    uid: str
    created: str  # creationTimestamp
    uri: str  # normalized
    finished: bool  # Succeeded or Failed
    standing: str = Standing.CONTENDING

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
        # As the operator wrote it: a condition or phase another client wrote (the trainer may patch its
        # resource's status) is not believed (status/trust.py).
        status = trusted_status(body).status
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            created=meta.get("creationTimestamp") or "",
            uri=normalize_uri(uri),
            finished=status.get("phase") in TERMINAL_PHASES,
            standing=standing_of(status),
        )


def holds(other: OutputClaim, me: OutputClaim) -> bool:
    """Whether `other` holds a prefix `me` needs (see the module docstring)."""
    if other.uid == me.uid or other.namespace != me.namespace or not overlaps(other.uri, me.uri):
        return False
    if other.standing == Standing.REFUSED:
        return False
    return other.standing == Standing.ACCEPTED or other.order < me.order


def output_conflict(me: OutputClaim, overwrite: bool, claims: Iterable[OutputClaim]) -> Problem | None:
    """OutputInUse when another resource of the namespace holds an overlapping output.uri (see the module
    docstring). The message names only a resource of `me`'s namespace."""
    holders = sorted((c for c in claims if holds(c, me)), key=lambda c: c.order)
    blocking = [c for c in holders if not c.finished or not overwrite]
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
    when = "created earlier" if other.order < me.order else "accepted earlier"
    state = "finished" if other.finished else "not finished"
    return Problem(
        Reason.OUTPUT_IN_USE,
        f"spec.output.uri {me.uri} {where} the output.uri {other.uri} of LoRAFineTune {other.ref} "
        f"({when}, {state}): both would write the same checkpoints and adapter. To proceed, {fix}.",
    )


class ClaimIndexes(Protocol):
    """What OutputClaims reads of the watch caches (handlers.IndexCache; reconcile.Cache)."""

    def jobs(self, namespace: str, name: str) -> list[JobView]: ...

    def outputs(self, namespace: str, root: str) -> list[OutputClaim]: ...


class OutputClaims:
    """The claims as the reconciler sees them: the kopf index's (`cache.outputs(namespace, root)`), with the
    acceptance it learns before the index does.

    Which signal of acceptance is reliable when another resource is checked: the Accepted=True condition is
    written by the reconcile after the one that created the Job (reconcile.py defers it) and reaches the index
    with that write's watch event; the Job's own watch event comes earlier, but still after the create call
    returned. So a claim is accepted on any of: its status (Accepted=True as the operator wrote it: durable,
    survives restarts; standing_of), a Job it controls in the Job index (`cache.jobs(namespace, name)`: filled
    before the first reconcile after a restart, and covers a crash between Job creation and the status write),
    or this reconciler's record of the claims it let through (check; immediate, and set before the caller's
    first await: covers the moment between the check and those watch events, when a concurrent reconcile of
    another resource looks). A refused claim is not upgraded by a Job: the operator never creates one for it,
    so such a Job is not its."""

    def __init__(self, cache: ClaimIndexes) -> None:
        self.cache = cache
        self._let_through: dict[tuple[str, str], str] = {}  # uid by (namespace, name)

    def on(self, namespace: str, root: str) -> list[OutputClaim]:
        """The namespace's claims on URIs under `root`."""
        out = []
        for claim in self.cache.outputs(namespace, root):
            if claim.standing == Standing.CONTENDING and (
                self._let_through.get((claim.namespace, claim.name)) == claim.uid
                or any(job.owner_uid == claim.uid for job in self.cache.jobs(claim.namespace, claim.name))
            ):
                claim = replace(claim, standing=Standing.ACCEPTED)
            out.append(claim)
        return out

    def check(self, body: dict[str, Any], overwrite: bool) -> Problem | None:
        """OutputInUse, or None: then the caller creates the resource's Job(s) at once, and its claim holds the
        prefix from now on (forget it if that creation fails)."""
        me = OutputClaim.from_body(body)
        if me is None:
            return None
        conflict = output_conflict(me, overwrite, self.on(me.namespace, uri_root(me.uri)))
        if conflict is None:
            self._let_through[(me.namespace, me.name)] = me.uid
        return conflict

    def waiting_on(self, released: OutputClaim) -> list[OutputClaim]:
        """The resources of its namespace that may wait for a claim that was released (deleted, finished,
        refused): earlier ones too, as an accepted claim holds its prefix whatever its order."""
        return [c for c in self.on(released.namespace, uri_root(released.uri))
                if c.uid != released.uid and not c.finished and c.standing == Standing.CONTENDING]

    def forget(self, key: tuple[str, str]) -> None:
        self._let_through.pop(key, None)
