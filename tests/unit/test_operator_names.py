"""Names the operator wants for a run's objects: whose is an object answering to one (views.name_holder), what a
refused create means (classify_create_error), and the ConfigMap's record of the run it was written for."""

from __future__ import annotations

import json

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.resource import LoRAFineTuneSpec
from lft_operator import builders
from lft_operator.builders import Owner
from lft_operator.settings import Settings
from lft_operator.status import classify_create_error
from lft_operator.views import name_holder

OWNER = Owner(namespace="team", name="ft", uid="uid-new")
WANTED = builders.service_account(OWNER)["metadata"]


def meta(*refs: dict) -> dict:
    return {"name": "ft-trainer", "ownerReferences": list(refs)}


def test_the_runs_own_object_is_its_own():
    assert name_holder("ServiceAccount", "ft-trainer", WANTED, WANTED) is None


def test_an_earlier_namesakes_object_is_transient():
    old = meta({"kind": contract.KIND, "name": "ft", "uid": "uid-old", "controller": True})
    transient, message = name_holder("ServiceAccount", "ft-trainer", WANTED, old)
    assert transient and "uid-old" in message and "being deleted" in message


def test_an_object_nobody_or_something_else_owns_is_refused_for_good():
    transient, message = name_holder("ConfigMap", "ft-trainer-config", WANTED, meta())
    assert not transient and "ConfigMap ft-trainer-config exists" in message and "(no owner)" in message
    other = meta({"kind": "Deployment", "name": "web", "uid": "u", "controller": True})
    transient, message = name_holder("ConfigMap", "ft-trainer-config", WANTED, other)
    assert not transient and "owned by Deployment web" in message


def test_only_the_operators_name_taken_conflict_is_classified():
    problem = classify_create_error(409, "ServiceAccount x exists", Reason.NAME_TAKEN)
    assert problem is not None and problem.reason == Reason.NAME_TAKEN and "ServiceAccount x" in problem.message
    assert classify_create_error(409, "AlreadyExists", "AlreadyExists") is None


def test_the_configmap_records_the_run_it_was_written_for():
    spec = LoRAFineTuneSpec.model_validate({"model": {"name": "m"}, "dataset": {"uri": "/d.jsonl"},
                                            "output": {"uri": "s3://b/p"}})
    cm = builders.config_map(OWNER, spec, Settings())
    assert cm["data"][contract.CONFIG_OWNER_FILE] == "uid-new"
    assert "uid" not in json.loads(cm["data"]["config.json"])  # the config itself is unchanged
