"""lft_client's pure parts: the spec checked before sending (errors name the field), the typed status, what wait()
shows, log lines, the API server's refusals as exceptions; and a Client against an address where nothing listens
(so any request it sent would fail with a connection error, not the exception asserted)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from lft_api.resource import MAX_NAME_LENGTH, LoRAFineTuneSpec, LoRAFineTuneStatus
from lft_client import AlreadyExists, ApiRefused, Client, FineTune, InvalidSpec, LftError, iter_lines
from lft_client.client import api_refused
from lft_client.finetune import check_name, manifest, spec_body
from lft_client.progress import PrintProgress, change_key, reporter

REPO = Path(__file__).resolve().parents[2]
SPEC = {"model": {"name": "microsoft/Phi-3-mini-4k-instruct"}, "dataset": {"uri": "s3://b/data/train.jsonl"},
        "output": {"uri": "s3://b/runs/bot"}, "training": {"epochs": 1, "maxSteps": 30}}
RUN = {
    "apiVersion": "finetune.dev/v1alpha1", "kind": "LoRAFineTune",
    "metadata": {"name": "bot", "namespace": "team", "uid": "u-1", "labels": {"team": "a"}},
    "spec": SPEC,
    "status": {
        "phase": "Succeeded", "message": "Training completed; adapter at s3://b/runs/bot/adapter.",
        "progress": {"step": 200, "totalSteps": 200, "epoch": 2.5, "percent": 100.0, "display": "200/200 (100%)",
                     "eta": "0s"},
        "metrics": {"loss": 1.5059, "evalLoss": 1.6677, "evalLossBefore": 7.3217},
        "attempts": 1, "fieldOfANewerOperator": {"x": 1},
        "adapter": {"uri": "s3://b/runs/bot/adapter", "files": [{"name": "adapter_config.json", "size": 3,
                                                                  "sha256": "ab" * 32}]},
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed",
                        "lastTransitionTime": "2026-01-01T00:05:00Z"}],
    },
}


# -- the spec, checked before anything is sent ------------------------------------------------------
def test_a_valid_dict_is_sent_as_the_user_set_it_in_wire_names() -> None:
    assert spec_body(SPEC) == SPEC  # no defaults filled in: the server's and the operator's apply, as with kubectl
    snake = {**SPEC, "training": {"epochs": 1, "max_steps": 30}, "storage_secret_ref": {"name": "s3"}}
    assert spec_body(snake) == {**SPEC, "storageSecretRef": {"name": "s3"}}


def test_the_pydantic_model_is_sent_as_the_fields_it_was_given() -> None:
    model = LoRAFineTuneSpec.model_validate(SPEC)
    assert spec_body(model) == SPEC


@pytest.mark.parametrize("path", ["examples/tiny-finetune.yaml", "examples/serving/phi3-finetune.yaml"])
def test_the_examples_round_trip_unchanged(path: str) -> None:
    spec = next(d for d in yaml.safe_load_all((REPO / path).read_text()) if d.get("kind") == "LoRAFineTune")["spec"]
    assert spec_body(spec) == spec


@pytest.mark.parametrize(("change", "field", "why"), [
    ({"training": {"epochs": -1}}, "spec.training.epochs", "greater than 0"),
    ({"lora": {"rnak": 4}}, "spec.lora.rnak", "Extra inputs are not permitted"),
    ({"dataset": {}}, "spec.dataset", "dataset.uri or dataset.mixture is required"),
    ({"tolerations": [{"key": "a", "operator": "Bogus"}]}, "spec.tolerations.0.operator", "'Exists' or 'Equal'"),
])
def test_an_invalid_dict_is_refused_naming_the_field(change: dict, field: str, why: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        spec_body({**SPEC, **change})
    assert str(refused.value).startswith("invalid spec (nothing was sent): ")
    assert f"{field}: " in str(refused.value) and why in str(refused.value)
    assert [p for p, _ in refused.value.problems] == [field]
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, LftError)


def test_refused_values_are_not_echoed() -> None:
    """Only the field and why: an input value could be a credential the user pasted by mistake."""
    uri = "http://alice:hunter2-secret@mlflow:5000"
    with pytest.raises(InvalidSpec) as refused:
        spec_body({**SPEC, "training": {"reportTo": ["mlflow"], "mlflow": {"trackingUri": uri}}})
    assert "spec.training.mlflow.trackingUri: Value error, must not contain credentials" in str(refused.value)
    assert "hunter2" not in str(refused.value) and refused.value.__cause__ is None and \
        refused.value.__suppress_context__


def test_validate_false_sends_the_dict_as_it_is_and_other_types_are_refused() -> None:
    newer = {**SPEC, "fieldOfANewerCrd": True}
    assert spec_body(newer, validate=False) == newer
    with pytest.raises(TypeError, match="a dict or a LoRAFineTuneSpec, not list"):
        spec_body([SPEC])  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "why"), [
    ("a" * 56, "at most 55 characters (the Job is <name>-trainer), not 56"),
    ("Phi3", "lower-case letters"), ("-x", "lower-case letters"), ("", "a name is required")])
def test_names_the_api_server_or_the_operator_would_refuse(name: str, why: str) -> None:
    with pytest.raises(InvalidSpec, match="metadata.name") as refused:
        check_name(name)
    assert why in str(refused.value) and refused.value.problems[0][0] == "metadata.name"


def test_names_that_pass_and_the_manifest() -> None:
    for name in ("a", "phi3-support.v2", "a" * MAX_NAME_LENGTH):
        check_name(name)
    body = manifest("bot", SPEC, {"team": "a", "try": 2})  # type: ignore[dict-item]
    assert body == {"apiVersion": "finetune.dev/v1alpha1", "kind": "LoRAFineTune",
                    "metadata": {"name": "bot", "labels": {"team": "a", "try": "2"}}, "spec": SPEC}
    assert "labels" not in manifest("bot", SPEC)["metadata"]


# -- FineTune: the status typed by lft_api ----------------------------------------------------------------
def test_status_is_typed_by_the_apis_model() -> None:
    ft = FineTune(RUN)
    assert (ft.name, ft.namespace, ft.uid, ft.labels) == ("bot", "team", "u-1", {"team": "a"})
    assert isinstance(ft.status, LoRAFineTuneStatus) and ft.phase == "Succeeded" and ft.ended
    assert (ft.progress.step, ft.progress.total_steps) == (200, 200)
    assert (ft.metrics.eval_loss_before, ft.metrics.eval_loss) == (7.3217, 1.6677)
    assert ft.status.adapter.files[0].sha256 == "ab" * 32 and ft.adapter_uri == "s3://b/runs/bot/adapter"
    assert ft.status.conditions[0].reason == "Completed"
    assert ft.spec.training.epochs == 1
    assert repr(ft) == "FineTune('bot', namespace='team', phase='Succeeded', progress='200/200 (100%)')"
    assert "Eval loss:   7.3217 before -> 1.6677 after" in ft.describe()
    assert ft == FineTune(RUN) and len({ft, FineTune(RUN)}) == 1 and ft.status is ft.status  # parsed once


def test_a_new_resource_has_no_status_yet() -> None:
    ft = FineTune({"metadata": {"name": "new", "namespace": "team"}, "spec": SPEC})
    assert (ft.phase, ft.progress, ft.metrics, ft.adapter_uri, ft.ended) == (None, None, None, None, False)
    assert ft.status.attempts == 0 and ft.status.conditions == []
    assert ft.summary() == "new: Pending (not reconciled yet)"


def test_the_adapter_uri_falls_back_to_the_trainers_artifacts() -> None:
    status = {"phase": "Running", "artifacts": {"adapter": "s3://b/runs/bot/adapter"}}
    assert FineTune({**RUN, "status": status}).adapter_uri == "s3://b/runs/bot/adapter"


def test_a_status_this_client_cannot_read_says_which_field() -> None:
    ft = FineTune({**RUN, "status": {"phase": "Hibernating"}})
    assert ft.phase == "Hibernating"  # the raw phase is still there
    with pytest.raises(LftError, match=r"status of team/bot does not parse .*status\.phase: Input should be"):
        ft.status  # noqa: B018


def test_summary_lines() -> None:
    running = {"phase": "Running", "progress": {"step": 120, "totalSteps": 300, "epoch": 1.2, "display": "120/300 (40%)",
                                                "eta": "3m20s"}, "metrics": {"loss": 1.2345}}
    assert FineTune({**RUN, "status": running}).summary() == \
        "bot: Running, 120/300 (40%), epoch 1.2, ETA 3m20s, loss 1.2345"
    queued = {"phase": "Pending", "queue": {"name": "team-a", "state": "Queued"}}
    assert FineTune({**RUN, "status": queued}).summary() == "bot: Pending, Queued in team-a"
    failed = {"phase": "Failed", "message": "CUDA out of memory\n at micro-batch 8"}
    assert FineTune({**RUN, "status": failed}).summary() == "bot: Failed, CUDA out of memory at micro-batch 8"


# -- what wait() shows ---------------------------------------------------------------------------------
def test_a_change_is_a_new_phase_step_queue_state_or_message() -> None:
    base = FineTune({**RUN, "status": {"phase": "Running", "progress": {"step": 1, "totalSteps": 9}}})
    same = FineTune({**RUN, "status": {"phase": "Running", "progress": {"step": 1, "totalSteps": 9, "eta": "9s"}}})
    later = FineTune({**RUN, "status": {"phase": "Running", "progress": {"step": 2, "totalSteps": 9}}})
    assert change_key(base) == change_key(same) != change_key(later)


def test_print_progress_writes_one_line() -> None:
    out = io.StringIO()
    PrintProgress(out)(FineTune(RUN))
    line = out.getvalue()
    assert line.count("\n") == 1 and line.split(" ", 1)[1].startswith("bot: Succeeded, 200/200 (100%)")


def test_tqdm_progress_lines_until_the_first_step_then_a_bar_over_the_steps(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("tqdm")
    from lft_client import TqdmProgress

    bar = TqdmProgress()
    bar(FineTune({**RUN, "status": {"phase": "Pending", "queue": {"name": "team-a", "state": "Queued"}}}))
    assert bar.bar is None and "bot: Pending, Queued in team-a" in capsys.readouterr().out
    bar(FineTune({**RUN, "status": {"phase": "Running", "progress": {"step": 3, "totalSteps": 9, "eta": "6s"},
                                    "metrics": {"loss": 2.5}}}))
    assert (bar.bar.n, bar.bar.total) == (3, 9) and "loss=2.5" in capsys.readouterr().err
    bar(FineTune(RUN))
    assert (bar.bar.n, bar.bar.total) == (200, 200) and "bot: Succeeded" in capsys.readouterr().out
    bar.close()


def test_reporter_choices() -> None:
    def mine(ft: FineTune) -> None:
        return None

    assert reporter(None) is None and reporter(mine) is mine
    assert isinstance(reporter("print"), PrintProgress)
    with pytest.raises(ValueError, match="on_progress"):
        reporter("bar")  # type: ignore[arg-type]


# -- logs, refusals ---------------------------------------------------------------------------------------
def test_log_lines_from_chunks_cut_anywhere() -> None:
    text = "step 1 loss 2.0\r\nétape 2 ✓\n\nlast without newline".encode()
    chunks = [text[i:i + 3] for i in range(0, len(text), 3)]  # cuts through the multi-byte characters
    assert list(iter_lines(chunks)) == ["step 1 loss 2.0", "étape 2 ✓", "", "last without newline"]
    assert list(iter_lines([b"a\n"])) == ["a"] and list(iter_lines([])) == []


def _api_exception(status: int, reason: str, body: dict) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(body)
    return exc


def test_the_api_servers_refusal_keeps_its_message_and_causes() -> None:
    message = ('LoRAFineTune.finetune.dev "bot" is invalid: spec.lora.quantization: Invalid value: "object": '
               "lora.quantization 4bit (QLoRA, bitsandbytes) needs a GPU")
    exc = _api_exception(422, "Unprocessable Entity", {
        "kind": "Status", "reason": "Invalid", "message": message,
        "details": {"causes": [{"field": "spec.lora.quantization", "message": "needs a GPU"}]}})
    refused = api_refused(exc, "creating lorafinetune team/bot")
    assert type(refused) is ApiRefused and (refused.status, refused.reason) == (422, "Invalid")
    assert refused.message == message and refused.causes == [("spec.lora.quantization", "needs a GPU")]
    assert str(refused) == f"creating lorafinetune team/bot: 422 Invalid: {message}"
    taken = api_refused(_api_exception(409, "Conflict", {"reason": "AlreadyExists", "message": "already exists"}), "x")
    assert isinstance(taken, AlreadyExists) and str(taken) == "x: 409 AlreadyExists: already exists"
    odd = ApiException(status=500, reason="Internal Server Error")  # no JSON body
    assert str(api_refused(odd, "x")) == "x: 500 Internal Server Error: Internal Server Error"


# -- a Client whose API server does not answer: what must fail before any request -------------------------
@pytest.fixture
def offline_kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "mine",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t0ken-not-shown"}}],
        "contexts": [{"name": "mine", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
                     {"name": "other", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


def test_client_takes_the_contexts_namespace_and_leaves_the_default_configuration(offline_kubeconfig: str) -> None:
    before = k8s.Configuration.get_default_copy().host
    assert Client(offline_kubeconfig).namespace == "team-a"
    assert Client(offline_kubeconfig, context="other").namespace == "default"
    c = Client(offline_kubeconfig, namespace="team-b")
    assert c.namespace == "team-b" and repr(c) == "Client(host='https://127.0.0.1:1', namespace='team-b')"
    assert k8s.Configuration.get_default_copy().host == before
    with pytest.raises(LftError, match="no usable kubeconfig"):
        Client(offline_kubeconfig, context="absent")


def test_create_refuses_an_invalid_spec_or_name_before_sending(offline_kubeconfig: str) -> None:
    c = Client(offline_kubeconfig)
    with pytest.raises(InvalidSpec, match="spec.training.epochs"):
        c.create("bot", {**SPEC, "training": {"epochs": 0}})
    with pytest.raises(InvalidSpec, match="metadata.name"):
        c.create("Bot", SPEC)
    with pytest.raises(ValueError, match="until: phases among Pending, Running"):
        c.wait("bot", until="Done")
