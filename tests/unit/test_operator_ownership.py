"""Output ownership (one live run per output prefix), unknown fields, and what triggers re-checks (pure)."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from lft_api.conditions import Reason
from lft_api.contract import OPERATOR_FIELD_MANAGER
from lft_api.resource import LoRAFineTuneSpec
from lft_operator import handlers
from lft_operator.ownership import OutputClaim, Standing, normalize_uri, output_conflict, overlaps, uri_root
from lft_operator.reconcile import Reconciler, resource_fingerprint
from lft_operator.status import newest_failed_create
from lft_operator.validation import validate
from lft_operator.views import JobView
from tests.support.reconciler import make_reconciler

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}


def claim(name: str, uri: str, created: str = T0, finished: bool = False, namespace: str = "ns",
          standing: str = Standing.CONTENDING) -> OutputClaim:
    return OutputClaim(namespace, name, f"uid-{namespace}-{name}", created, normalize_uri(uri), finished, standing)


def test_uris_are_normalized_and_overlap_only_at_directory_boundaries():
    assert normalize_uri("s3://b/run/") == "s3://b/run" and normalize_uri(" /data/out// ") == "/data/out"
    assert uri_root("s3://b/run/x") == "s3://b" and uri_root("/data/out") == "data"
    assert overlaps("s3://b/run", "s3://b/run") and overlaps("s3://b/run", "s3://b/run/child")
    assert overlaps("s3://b/run/child", "s3://b/run")
    assert not overlaps("s3://b/run", "s3://b/run2") and not overlaps("s3://b/run", "s3://c/run")


@pytest.mark.parametrize(
    ("mine", "theirs", "where"),
    [("s3://b/run/", "s3://b/run", "equals"), ("s3://b/run/a", "s3://b/run", "is inside"),
     ("s3://b/run", "s3://b/run/a", "contains")],
)
def test_a_later_resource_on_an_overlapping_prefix_is_refused(mine, theirs, where):
    first = claim("first", theirs, T0)
    later = claim("later", mine, T1)
    problem = output_conflict(later, False, [first, later])
    assert problem is not None and problem.reason == Reason.OUTPUT_IN_USE
    assert where in problem.message and "ns/first" in problem.message and "another output.uri" in problem.message
    # The earlier one is unaffected.
    assert output_conflict(first, False, [first, later]) is None


def test_ties_go_by_name_and_other_prefixes_do_not_matter():
    a, b = claim("a", "s3://b/run", T0), claim("b", "s3://b/run", T0)
    assert output_conflict(a, False, [a, b]) is None and output_conflict(b, False, [a, b]) is not None
    assert output_conflict(claim("c", "s3://b/other", T1), False, [a, b]) is None


def test_overwrite_bypasses_a_finished_resource_but_never_a_live_one():
    done, live = claim("done", "s3://b/run", T0, finished=True), claim("live", "s3://b/run", T0)
    later = claim("later", "s3://b/run", T1)
    refused = output_conflict(later, False, [done, later])
    assert refused is not None and "output.overwrite: true" in refused.message and "finished" in refused.message
    assert output_conflict(later, True, [done, later]) is None
    refused = output_conflict(later, True, [live, later])
    assert refused is not None and "does not apply while it runs" in refused.message


def test_claims_from_bodies():
    body = {
        "metadata": {"namespace": "ns", "name": "r", "uid": "u", "creationTimestamp": T0},
        "spec": {"output": {"uri": "s3://b/run/"}},
        "status": {"phase": "Succeeded"},
    }
    assert OutputClaim.from_body(body) == OutputClaim("ns", "r", "u", T0, "s3://b/run", True)
    assert OutputClaim.from_body({"metadata": {}, "spec": {}}) is None


def test_unknown_fields_are_refused_with_their_paths():
    spec, problems = validate({**BASE, "lora": {"rank": 4}}, "run")
    assert spec is None and [p.reason for p in problems] == [Reason.UNKNOWN_FIELD]
    assert "spec.lora.rank" in problems[0].message
    _, problems = validate({**BASE, "lora": {"rank": 4, "r": -1}, "extra": 1}, "run")
    assert [p.reason for p in problems] == [Reason.UNKNOWN_FIELD, Reason.INVALID_SPEC]
    assert "spec.lora.rank" in problems[0].message and "spec.extra" in problems[0].message
    assert "spec.lora.r" in problems[1].message
    # Free-form Kubernetes objects keep whatever they hold.
    spec, problems = validate({**BASE, "affinity": {"nodeAffinity": {"anything": 1}}}, "run")
    assert spec is not None and problems == []


def test_checkpoint_health_changes_trigger_a_reconcile_progress_does_not():
    def body(**status) -> dict:
        return {"metadata": {"uid": "u", "generation": 1}, "status": {"phase": "Running", **status}}

    base = resource_fingerprint(body())
    assert resource_fingerprint(body(progress={"step": 3})) == base
    failing = resource_fingerprint(body(checkpointHealth={"healthy": False, "message": "denied"}))
    assert failing != base
    assert resource_fingerprint(body(checkpointHealth={"healthy": True})) not in (base, failing)


def test_newest_failed_create_event():
    events = [
        {"message": "old", "lastTimestamp": T0},
        {"message": "new", "lastTimestamp": T1},
    ]
    newest = newest_failed_create(events)
    assert newest is not None and (newest.message, newest.last_seen) == ("new", T1)
    assert newest_failed_create([]) is None


class Claims:
    """The reconciler's caches: output claims by (namespace, root), Jobs by resource."""

    def __init__(self, claims: list[OutputClaim], jobs: dict | None = None) -> None:
        self.claims = claims
        self._jobs = jobs or {}

    def outputs(self, namespace: str, root: str) -> list[OutputClaim]:
        return [c for c in self.claims if c.namespace == namespace and uri_root(c.uri) == root]

    def jobs(self, namespace: str, name: str) -> list[JobView]:
        return self._jobs.get((namespace, name), [])

    def pods(self, namespace: str, name: str) -> list:
        return []


def reconciler_on(cache: Claims) -> tuple[Reconciler, list]:
    reconciler, _, _ = make_reconciler(cache=cache)
    triggered: list = []
    reconciler.trigger = lambda ns, name: triggered.append((ns, name))  # type: ignore[method-assign]
    return reconciler, triggered


def test_releasing_an_output_requeues_the_resources_waiting_in_its_namespace():
    first = claim("first", "s3://b/run", standing=Standing.ACCEPTED)
    later, elsewhere = claim("later", "s3://b/run/x", T1), claim("o", "s3://c", T1)
    # Earlier but waiting: an accepted later resource may have been what held it back.
    older = claim("older", "s3://b/run", "2025-01-01T00:00:00Z")
    running = claim("running", "s3://b/run2", T1, standing=Standing.ACCEPTED)
    refused = claim("refused", "s3://b/run", T1, standing=Standing.REFUSED)
    other_ns = claim("later", "s3://b/run", T1, namespace="other")
    reconciler, triggered = reconciler_on(Claims([first, later, elsewhere, older, running, refused, other_ns]))
    reconciler.on_output_released(first)
    assert sorted(triggered) == [("ns", "later"), ("ns", "older")]


# -- a claim counts only for an accepted resource, and only in its namespace --------------------------
def test_claims_count_only_within_the_namespace_and_messages_name_no_other_namespace():
    theirs = claim("secret-project", "s3://b/run", "2025-01-01T00:00:00Z", namespace="other-team",
                   standing=Standing.ACCEPTED)
    mine = claim("mine", "s3://b/run", T1)
    assert output_conflict(mine, False, [theirs, mine]) is None
    own = claim("own", "s3://b/run/x", T0)
    problem = output_conflict(mine, False, [theirs, own, mine])
    assert problem is not None and "ns/own" in problem.message
    assert "other-team" not in problem.message and "secret-project" not in problem.message


def test_a_resource_that_was_refused_claims_nothing():
    squatter = claim("squatter", "s3://b", T0, standing=Standing.REFUSED)  # e.g. PolicyViolation: never runs
    invalid = claim("invalid", "s3://b/run", T0, finished=True, standing=Standing.REFUSED)  # JobInvalid: Failed
    later = claim("later", "s3://b/run", T1)
    assert output_conflict(later, False, [squatter, invalid, later]) is None


def test_two_resources_created_at_once_the_earlier_goes_first_whichever_is_checked_first():
    # At their first reconciles neither has a Job or Accepted=True: an undecided claim counts by order.
    a, b = claim("a", "s3://b/run", T0), claim("b", "s3://b/run", T1)
    assert output_conflict(b, False, [a, b]) is not None
    assert output_conflict(a, False, [a, b]) is None


def test_an_accepted_resource_holds_its_prefix_even_against_an_earlier_one():
    # An earlier resource refused (say, by the policy) and fixed after a later one started must not start beside it.
    early = claim("early", "s3://b/run", T0)
    running = claim("running", "s3://b/run", T1, standing=Standing.ACCEPTED)
    problem = output_conflict(early, False, [early, running])
    assert problem is not None and "ns/running" in problem.message and "does not apply while it runs" in problem.message
    done = claim("running", "s3://b/run", T1, finished=True, standing=Standing.ACCEPTED)
    assert output_conflict(early, False, [early, done]) is not None
    assert output_conflict(early, True, [early, done]) is None


def with_accepted(status: str | None, reason: str = "", manager: str = OPERATOR_FIELD_MANAGER, **extra) -> dict:
    conditions = [] if status is None else [{"type": "Accepted", "status": status, "reason": reason}]
    managed = [{"manager": manager, "operation": "Update", "subresource": "status",
                "fieldsV1": {"f:status": {"f:conditions": {}, "f:phase": {}}}}]
    return {
        "metadata": {"namespace": "ns", "name": "r", "uid": "u", "creationTimestamp": T0, "managedFields": managed},
        "spec": {"output": {"uri": "s3://b/run"}},
        "status": {"conditions": conditions, **extra},
    }


def test_the_standing_of_a_claim_from_its_accepted_condition():
    def standing(body: dict) -> str:
        c = OutputClaim.from_body(body)
        assert c is not None
        return c.standing

    assert standing(with_accepted("True", Reason.ACCEPTED)) == Standing.ACCEPTED
    assert standing(with_accepted("False", Reason.POLICY_VIOLATION)) == Standing.REFUSED
    assert standing(with_accepted("False", Reason.JOB_INVALID, phase="Failed")) == Standing.REFUSED
    # Waiting for the prefix, or not decided yet: in line, by order.
    assert standing(with_accepted("False", Reason.OUTPUT_IN_USE)) == Standing.CONTENDING
    assert standing(with_accepted(None)) == Standing.CONTENDING
    # Written by someone else than the operator (its trainer may patch its status): not believed.
    forged = with_accepted("False", Reason.POLICY_VIOLATION, manager="trainer", phase="Succeeded")
    assert standing(forged) == Standing.CONTENDING and OutputClaim.from_body(forged).finished is False  # type: ignore[union-attr]


def test_the_index_keys_claims_by_namespace_and_root():
    body = kopf.Body(with_accepted(None))
    indexed = asyncio.run(handlers.lft_outputs(body=body, namespace="ns"))
    assert list(indexed) == [("ns", "s3://b")]


OUT = LoRAFineTuneSpec.model_validate(BASE)


def body_of(c: OutputClaim) -> dict:
    return {"metadata": {"namespace": c.namespace, "name": c.name, "uid": c.uid, "creationTimestamp": c.created},
            "spec": {"output": {"uri": c.uri}}}


def test_a_resource_with_a_job_or_one_just_being_created_holds_its_prefix():
    # Refused by the policy, fixed now: its status still says so until its reconcile.
    early = claim("early", "s3://b/p", T0, standing=Standing.REFUSED)
    # Its Job exists (the watch saw it) but its status does not say Accepted yet.
    started = claim("started", "s3://b/p", T1)
    job = JobView(name="started-trainer", uid="j", owner_uid=started.uid)
    reconciler, _ = reconciler_on(Claims([early, started], {("ns", "started"): [job]}))
    problems = reconciler.children.output_problems(body_of(early), OUT)
    assert [p.reason for p in problems] == [Reason.OUTPUT_IN_USE] and "ns/started" in problems[0].message
    # Two checks in a row (concurrent reconciles): the one that passed holds the prefix before any watch event.
    reconciler, _ = reconciler_on(Claims([early, started]))
    assert reconciler.children.output_problems(body_of(started), OUT) == []
    assert [p.reason for p in reconciler.children.output_problems(body_of(early), OUT)] == [Reason.OUTPUT_IN_USE]
    reconciler.forget("ns", "started")
    assert reconciler.children.output_problems(body_of(early), OUT) == []


def test_one_pending_pod_recheck_per_resource():
    added: list = []

    async def run() -> None:
        reconciler, queue, _ = make_reconciler()
        queue.added = added
        reconciler.memory.known.add(("ns", "r"))
        for _ in range(3):
            reconciler.children.recheck_later(("ns", "r"), 0.01)
        await asyncio.sleep(0.05)
        reconciler.children.recheck_later(("ns", "r"), 0.01)  # due again once the last one ran
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert added == [("ns", "r"), ("ns", "r")]
