"""What of a status as read the operator trusts (lft_operator.status.trust, pure)."""

from __future__ import annotations

from lft_api.contract import OPERATOR_FIELD_MANAGER, TRAINER_FIELD_MANAGER
from lft_operator.status import reverted, trusted_status


def managed(manager: str, *fields: str) -> dict:
    return {"manager": manager, "operation": "Update", "fieldsV1": {"f:status": {f"f:{f}": {} for f in fields}}}


def body(status: dict, *entries: dict, uid: str = "u-1") -> dict:
    return {"metadata": {"uid": uid, "managedFields": list(entries)}, "status": status}


def test_owned_fields_written_by_another_manager_are_put_back_or_dropped() -> None:
    raw = {"phase": "Succeeded", "conditions": [], "attempts": 1, "progress": {"step": 3}, "trainerUid": "u-1"}
    b = body(raw, managed(OPERATOR_FIELD_MANAGER, "attempts"),
             managed(TRAINER_FIELD_MANAGER, "phase", "conditions", "progress", "trainerUid"))
    t = trusted_status(b, remembered={"phase": "Running", "attempts": 1})
    assert t.status["phase"] == "Running"  # the operator's own last value
    assert "conditions" not in t.status  # not remembered (e.g. after a restart): unset
    assert t.status["attempts"] == 1 and t.status["progress"] == {"step": 3}  # the trainer's fields, its UID
    assert t.foreign == {"phase": [TRAINER_FIELD_MANAGER], "conditions": [TRAINER_FIELD_MANAGER]}
    assert t.stale == ()
    message = reverted(t.foreign, t.stale, {"phase": "Running"})
    assert "status.phase written by lft-trainer" in message and "conditions" not in message


def test_trainer_fields_under_another_uid_or_none_are_ignored() -> None:
    raw = {"phase": "Running", "progress": {"step": 29}, "metrics": {"loss": 1.0}, "trainerUid": "u-earlier"}
    t = trusted_status(body(raw, managed(OPERATOR_FIELD_MANAGER, "phase")))
    assert t.status == {"phase": "Running"} and t.stale == ("progress", "metrics", "trainerUid")
    assert "another" not in reverted({}, (), {}) and reverted({}, t.stale, {})
    no_uid = trusted_status(body({"progress": {"step": 1}}))
    assert no_uid.stale == ("progress",) and no_uid.status == {}


def test_the_operators_own_writes_are_trusted_as_they_are() -> None:
    raw = {"phase": "Running", "progress": {"step": 3}, "trainerUid": "u-1"}
    t = trusted_status(body(raw, managed(OPERATOR_FIELD_MANAGER, "phase"), managed(TRAINER_FIELD_MANAGER, "progress")))
    assert t.status == raw and not t.foreign and not t.stale


def test_a_memory_another_replica_outdated_is_not_used() -> None:
    """After a failover and back, this replica's last write is not the newest: its memory must not win."""
    raw = {"phase": "Succeeded", "attempts": 2, "message": "forged"}
    b = body(raw, managed(OPERATOR_FIELD_MANAGER, "phase", "attempts"), managed(TRAINER_FIELD_MANAGER, "message"))
    t = trusted_status(b, remembered={"phase": "Running", "attempts": 1, "message": "Attempt 1 running."})
    assert t.status == {"phase": "Succeeded", "attempts": 2} and t.foreign == {"message": [TRAINER_FIELD_MANAGER]}


def test_status_written_before_the_operator_named_its_field_manager_is_kept() -> None:
    """An upgrade: the previous version's writes carry aiohttp's default manager name."""
    raw = {"phase": "Succeeded", "attempts": 1}
    t = trusted_status(body(raw, managed("Python", "phase", "attempts")))
    assert t.status == raw and not t.foreign
