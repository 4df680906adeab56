"""What of a status as read the operator may trust (pure).

RBAC cannot keep a trainer to its own status fields: its Role may patch its resource's whole status.
So the operator checks what it reads:
- A field the operator owns, recorded in metadata.managedFields as written by another field manager
  than the operator's (contract.OPERATOR_FIELD_MANAGER), is foreign: decisions take the operator's
  own last value (remembered from its last write) or, without one (a restart), treat it as unset,
  and the next status write puts the operator's value back.
  Field managers are names a client gives, not identities: this keeps the trainer program (and any
  client that does not claim the operator's name) out of the operator's fields; a trainer pod whose
  code deliberately sends fieldManager=lft-operator is not caught (only a status the trainer cannot
  write at all would be: progress on an object of its own).
- The trainer's fields count only under this resource's UID (status.trainerUid, the LFT_UID the
  trainer sends with each patch). Under another UID, or none, they are ignored and removed: a pod
  of an earlier resource of the same name must not report into this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lft_api.contract import OPERATOR_FIELD_MANAGER
from lft_api.resource import TRAINER_OWNED_STATUS_FIELDS

from .model import OWNED_FIELDS

TRAINER_UID = "trainerUid"
# The operator's writes: its field manager, and "Python" (aiohttp's User-Agent), the name the API server
# gave the writes of operator versions that named no field manager, so that an upgrade keeps their status.
OPERATOR_MANAGERS = frozenset({OPERATOR_FIELD_MANAGER, "Python"})


@dataclass(frozen=True)
class Trusted:
    status: dict[str, Any]  # what decisions use
    foreign: dict[str, list[str]] = field(default_factory=dict)  # owned field -> the other managers that wrote it
    stale: tuple[str, ...] = ()  # trainer fields under another UID: removed by the next write


def reverted(foreign: dict[str, list[str]], stale: tuple[str, ...], patch: dict[str, Any]) -> str:
    """The Event message for what a status patch undoes, "" when it undoes nothing (a foreign value that
    equals the operator's own needs no revert)."""
    parts = [f"status.{k} written by {', '.join(v)}" for k, v in foreign.items() if k in patch]
    if stale:
        parts.append(f"{', '.join('status.' + k for k in stale)} written without this run's UID")
    return f"Reverted {'; '.join(parts)}: only the operator writes them." if parts else ""


def status_writers(managed_fields: list[dict[str, Any]] | None) -> dict[str, set[str]]:
    """{top-level status field: field managers that last wrote it}, from metadata.managedFields."""
    out: dict[str, set[str]] = {}
    for entry in managed_fields or []:
        fields = (entry.get("fieldsV1") or {}).get("f:status") or {}
        for key in fields:
            if key.startswith("f:"):
                out.setdefault(key[2:], set()).add(entry.get("manager") or "?")
    return out


def trusted_status(body: dict[str, Any], remembered: dict[str, Any] | None = None) -> Trusted:
    """The status of `body` as the operator may use it. `remembered`: the owned fields as the operator
    last wrote them (None: not known, e.g. after a restart)."""
    meta = body.get("metadata") or {}
    status = dict(body.get("status") or {})
    writers = status_writers(meta.get("managedFields"))
    foreign = {k: sorted(writers.get(k, set()) - OPERATOR_MANAGERS) for k in OWNED_FIELDS if k in status}
    foreign = {k: v for k, v in foreign.items() if v}
    if remembered is not None and any(status.get(k) != remembered.get(k) for k in OWNED_FIELDS if k not in foreign):
        remembered = None  # another operator replica wrote since (HA): this one's memory is out of date
    for key in foreign:
        if remembered is not None and key in remembered:
            status[key] = remembered[key]
        else:
            del status[key]
    stale: tuple[str, ...] = ()
    present = tuple(k for k in TRAINER_OWNED_STATUS_FIELDS if k in status)
    if present and status.get(TRAINER_UID) != meta.get("uid"):
        stale = present
        for key in present:
            del status[key]
    return Trusted(status, foreign, stale)
