"""Output ownership (one live run per output prefix), unknown fields, and what triggers re-checks (pure)."""

from __future__ import annotations

import asyncio

import pytest

from lft_api.conditions import Reason
from lft_operator.ownership import OutputClaim, normalize_uri, output_conflict, overlaps, uri_root
from lft_operator.reconcile import Reconciler, resource_fingerprint
from lft_operator.settings import Settings
from lft_operator.status import newest_failed_create
from lft_operator.validation import validate

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}


def claim(name: str, uri: str, created: str = T0, finished: bool = False, namespace: str = "ns") -> OutputClaim:
    return OutputClaim(namespace, name, f"uid-{namespace}-{name}", created, normalize_uri(uri), finished)


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
    first = claim("first", theirs, T0, namespace="team-a")
    later = claim("later", mine, T1)
    problem = output_conflict(later, False, [first, later])
    assert problem is not None and problem.reason == Reason.OUTPUT_IN_USE
    assert where in problem.message and "team-a/first" in problem.message and "another output.uri" in problem.message
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
    def __init__(self, claims: list[OutputClaim]) -> None:
        self.claims = claims

    def outputs(self, root: str) -> list[OutputClaim]:
        return [c for c in self.claims if uri_root(c.uri) == root]


def test_releasing_an_output_requeues_the_later_resources_on_it():
    first, later, elsewhere = claim("first", "s3://b/run"), claim("later", "s3://b/run/x", T1), claim("o", "s3://c", T1)
    older = claim("older", "s3://b/run", "2025-01-01T00:00:00Z")

    async def build() -> Reconciler:
        return Reconciler(kube=None, settings=Settings(metrics_port=0), cache=Claims([first, later, elsewhere, older]))  # type: ignore[arg-type]

    reconciler = asyncio.run(build())
    triggered: list = []
    reconciler.trigger = lambda ns, name: triggered.append((ns, name))  # type: ignore[method-assign]
    reconciler.on_output_released(first)
    assert triggered == [("ns", "later")]


def test_one_pending_pod_recheck_per_resource():
    added: list = []

    async def run() -> None:
        reconciler = Reconciler(kube=None, settings=Settings(metrics_port=0), cache=None)  # type: ignore[arg-type]
        reconciler.queue.add = lambda key, urgent=False: added.append(key)  # type: ignore[method-assign]
        reconciler.known.add(("ns", "r"))
        for _ in range(3):
            reconciler._recheck_later(("ns", "r"), 0.01)
        await asyncio.sleep(0.05)
        reconciler._recheck_later(("ns", "r"), 0.01)  # due again once the last one ran
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert added == [("ns", "r"), ("ns", "r")]
