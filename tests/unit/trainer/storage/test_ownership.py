"""Run identity, who owns an output prefix, and the resume point (file:// storage: real files, no mocks)."""

from __future__ import annotations

import json
import os

import pytest

from lft_api.contract import CHECKPOINT_MANIFEST, RunIdentity
from lft_api.spec import TrainerConfig
from lft_trainer.errors import InvalidInput
from lft_trainer.run.resume import find_resume_point
from lft_trainer.storage.checkpoints import checkpoint_rel, file_digests, manifest_from_digests
from lft_trainer.storage.ownership import Artifact, check_output, decide_ownership, inspect_output, run_identity
from lft_trainer.storage.store import Storage

A = RunIdentity(namespace="team", name="ft-a", uid="uid-a", spec_hash="h1")
B = RunIdentity(namespace="team", name="ft-b", uid="uid-b", spec_hash="h1")


def cfg(out: str, **output) -> TrainerConfig:
    return TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d.jsonl"},
                                         "output": {"uri": out, **output}})


def put_checkpoint(st: Storage, tmp_path, step: int, identity: RunIdentity | None, complete: bool = True) -> None:
    src = tmp_path / f"src-{step}-{os.urandom(3).hex()}"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(os.urandom(64))
    (src / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    st.upload_dir(src, checkpoint_rel(step))
    if complete:
        st.put_json(f"{checkpoint_rel(step)}/{CHECKPOINT_MANIFEST}",
                    manifest_from_digests(step, file_digests(src), identity))


# -- identity ---------------------------------------------------------------------------------
def test_run_identity_from_the_environment_and_the_settings():
    c = cfg("s3://b/p")
    me = run_identity(c, {"LFT_NAMESPACE": "team", "LFT_NAME": "ft-b", "LFT_UID": "uid-b"})
    assert me == RunIdentity(namespace="team", name="ft-b", uid="uid-b", spec_hash=c.result_hash())
    assert run_identity(c, {}) == RunIdentity(spec_hash=c.result_hash())  # outside Kubernetes
    assert "ft-b" in me.describe() and "uid-b" in me.describe()


# -- the ownership decision (pure) ----------------------------------------------------------------
def test_an_empty_prefix_or_own_artifacts_are_fine():
    assert decide_ownership(B, [], "s3://b/p", overwrite=False).action == "ok"
    own = [Artifact("checkpoints/checkpoint-10", B), Artifact("training_summary.json", B)]
    assert decide_ownership(B, own, "s3://b/p", overwrite=False).action == "ok"


def test_another_runs_artifacts_are_refused_naming_the_run_and_the_fixes():
    found = [Artifact("checkpoints/checkpoint-40", A), Artifact("training_summary.json", A),
             Artifact("adapter", A)]
    d = decide_ownership(B, found, "s3://b/p", overwrite=False)
    assert d.action == "refuse" and d.foreign == found
    assert A.describe() in d.message and "checkpoints/checkpoint-40" in d.message
    for fix in ("another output.uri", "output.overwrite: true", "output.resumeFrom"):
        assert fix in d.message


def test_artifacts_without_identity_count_as_foreign():
    d = decide_ownership(B, [Artifact("training_summary.json", None)], "s3://b/p", overwrite=False)
    assert d.action == "refuse" and "recorded no identity" in d.message


def test_overwrite_plans_to_delete_only_the_foreign_artifacts():
    found = [Artifact("checkpoints/checkpoint-10", B), Artifact("checkpoints/checkpoint-40", A),
             Artifact("adapter", None)]
    d = decide_ownership(B, found, "s3://b/p", overwrite=True)
    assert d.action == "overwrite" and d.foreign == found[1:] and d.replaced == [A]


def test_adopting_a_checkpoint_under_the_prefix_is_not_refused():
    d = decide_ownership(B, [Artifact("checkpoints/checkpoint-40", A)], "s3://b/p", overwrite=False, adopting=True)
    assert d.action == "ok"


# -- against a real prefix (file://) -----------------------------------------------------------------
def test_check_output_refuses_and_leaves_everything_in_place(tmp_path):
    out = Storage(str(tmp_path / "out"))
    put_checkpoint(out, tmp_path, 40, A)
    out.put_json("training_summary.json", {"runIdentity": A.to_wire()})
    out.put_json("adapter/lft_run.json", A.to_wire())
    found = inspect_output(out)
    assert [a.path for a in found] == ["checkpoints/checkpoint-40", "training_summary.json", "adapter"]
    assert all(a.identity == A for a in found)
    with pytest.raises(InvalidInput) as err:
        check_output(cfg(out.base_uri), out, B)
    assert err.value.reason == "OutputInUse" and err.value.field == "output.uri"
    assert out.exists("checkpoints/checkpoint-40/manifest.json") and out.exists("training_summary.json")


def test_check_output_with_overwrite_deletes_the_other_runs_artifacts(tmp_path):
    out = Storage(str(tmp_path / "out"))
    put_checkpoint(out, tmp_path, 40, A)
    put_checkpoint(out, tmp_path, 10, B)
    out.put_json("training_summary.json", {"outcome": "succeeded"})  # an old summary, no identity
    out.put_json("adapter/adapter_config.json", {})  # an adapter without lft_run.json
    out.put_json("merged/config.json", {})
    out.put_json("tensorboard/events.out.tfevents.1.host", {})  # reportTo tensorboard / wandb offline of run A
    out.put_json("wandb/offline-run-1/run-1.wandb", {})
    d = check_output(cfg(out.base_uri, overwrite=True), out, B)
    assert d.action == "overwrite" and d.replaced == [A]
    assert out.list_dirs("checkpoints") == ["checkpoint-10"]
    assert not out.exists("training_summary.json") and not out.exists("adapter") and not out.exists("merged")
    assert not out.exists("tensorboard") and not out.exists("wandb")


# -- the resume point ------------------------------------------------------------------------------
def test_resume_from_own_newest_checkpoint_never_a_foreign_or_anonymous_one(tmp_path):
    out = Storage(str(tmp_path / "out"))
    put_checkpoint(out, tmp_path, 10, B)
    put_checkpoint(out, tmp_path, 20, A)
    put_checkpoint(out, tmp_path, 30, None)
    point = find_resume_point(cfg(out.base_uri), out, B, tmp_path / "local")
    assert point.step == 10 and point.adopted_from is None and (point.path / "trainer_state.json").is_file()
    assert find_resume_point(cfg(out.base_uri), out, RunIdentity(uid="uid-c", spec_hash="h1"),
                             tmp_path / "l2") is None


def test_resume_from_names_exactly_one_checkpoint_of_another_run(tmp_path):
    old = Storage(str(tmp_path / "old"))
    put_checkpoint(old, tmp_path, 400, A)
    put_checkpoint(old, tmp_path, 500, A)
    out = Storage(str(tmp_path / "out"))
    uri = old.uri(checkpoint_rel(400))
    point = find_resume_point(cfg(out.base_uri, resumeFrom=uri), out, B, tmp_path / "local")
    assert (point.step, point.uri, point.adopted_from) == (400, uri, A)
    put_checkpoint(out, tmp_path, 410, B)  # once this run has its own checkpoint, that one wins
    assert find_resume_point(cfg(out.base_uri, resumeFrom=uri), out, B, tmp_path / "l2").step == 410


@pytest.mark.parametrize(("damage", "why"), [
    ("missing", "no manifest.json"), ("incomplete", "no manifest.json"), ("corrupt", "incomplete or corrupt"),
    ("garbled", "not valid JSON")])
def test_an_unusable_resume_from_is_invalid_input_naming_the_field(tmp_path, damage, why):
    old = Storage(str(tmp_path / "old"))
    if damage != "missing":
        put_checkpoint(old, tmp_path, 400, A, complete=damage != "incomplete")
    if damage == "corrupt":
        (tmp_path / "old" / checkpoint_rel(400) / "adapter_model.safetensors").write_bytes(b"changed")
    if damage == "garbled":
        (tmp_path / "old" / checkpoint_rel(400) / CHECKPOINT_MANIFEST).write_text("{not json")
    out = Storage(str(tmp_path / "out"))
    uri = old.uri(checkpoint_rel(400))
    with pytest.raises(InvalidInput) as err:
        find_resume_point(cfg(out.base_uri, resumeFrom=uri), out, B, tmp_path / "local")
    assert err.value.field == "output.resumeFrom" and why in err.value.message and uri in err.value.message


def test_preflight_refuses_another_runs_output_before_reading_the_model_or_dataset(tmp_path):
    from lft_trainer.run import preflight

    out = Storage(str(tmp_path / "out"))
    out.put_json("training_summary.json", {"runIdentity": A.to_wire()})
    c = TrainerConfig.model_validate({"model": {"name": str(tmp_path / "no-model")},
                                      "dataset": {"uri": str(tmp_path / "no-data.jsonl")},
                                      "output": {"uri": out.base_uri}})
    with pytest.raises(InvalidInput) as err:  # not ModelNotFound / DatasetNotFound: the output comes first
        preflight.run_checks(c, tmp_path / "work", cuda=False, identity=B, check_output=True)
    assert err.value.reason == "OutputInUse" and A.describe() in err.value.message
