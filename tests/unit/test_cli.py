"""`kubectl lft`: what status and wait print, the exit codes, durations, arguments, the sha256 check (pure)."""

from __future__ import annotations

import hashlib
import json

import pytest

from lft_api.contract import FileDigest
from lft_cli import fetch, main, render
from lft_cli.render import EXIT_ERROR, EXIT_FAILED, EXIT_OK

FULL = {
    "metadata": {"name": "bot", "namespace": "team"},
    "status": {
        "phase": "Succeeded",
        "message": "Training completed; adapter at s3://b/runs/bot/adapter.",
        "progress": {"step": 200, "totalSteps": 200, "epoch": 2.5, "display": "200/200 (100%)", "eta": "0s"},
        "metrics": {"loss": 1.5059, "evalLoss": 1.6677, "evalLossBefore": 7.3217, "perplexity": 5.2998,
                    "evalLossChange": -5.654},
        "attempts": 2, "failedAttempts": 1,
        "adapter": {"uri": "s3://b/runs/bot/adapter", "files": [{"name": "a", "size": 1, "sha256": "x"}]},
        "artifacts": {"adapter": "s3://b/runs/bot/adapter", "lossPlot": "s3://b/runs/bot/loss.png"},
        "conditions": [
            {"type": "Succeeded", "status": "True", "reason": "Completed", "message": "Training completed.",
             "lastTransitionTime": "2026-11-30T22:35:37Z"},
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Job created.",
             "lastTransitionTime": "2026-11-30T22:35:01Z"},
        ],
    },
}


def test_status_shows_phase_progress_eval_before_after_artifacts_and_conditions_newest_last() -> None:
    text = render.format_status(FULL)
    assert "Phase:       Succeeded" in text
    assert "Progress:    200/200 (100%), epoch 2.5, ETA 0s" in text
    assert "Eval loss:   7.3217 before -> 1.6677 after (change -5.6540: better)" in text
    assert "Perplexity:  5.2998" in text
    assert "Attempts:    2 (1 failed)" in text
    assert "s3://b/runs/bot/adapter (1 files with sha256)" in text
    assert "  lossPlot  s3://b/runs/bot/loss.png" in text
    conditions = text.split("Conditions (newest last):\n")[1].splitlines()
    assert conditions[0].split() == ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]
    assert conditions[1].split()[0] == "Accepted" and conditions[2].split()[0] == "Succeeded"
    assert conditions[2].endswith("Training completed.")


def test_status_shows_the_kueue_queue() -> None:
    queued = {"metadata": {"name": "x"}, "status": {"phase": "Pending", "queue": {
        "name": "team-a", "state": "Queued", "workload": "job-x-trainer-1a2b3", "display": "Queued (team-a)"}}}
    assert "Queue:       Queued in LocalQueue team-a (Workload job-x-trainer-1a2b3)" in render.format_status(queued)
    admitted = {"metadata": {"name": "x"}, "status": {"queue": {"name": "team-a", "state": "Admitted",
                                                                "clusterQueue": "gpus"}}}
    assert "Queue:       Admitted in LocalQueue team-a, ClusterQueue gpus" in render.format_status(admitted)
    assert "Queue:" not in render.format_status(FULL)


def test_status_of_a_fresh_resource_and_a_change_computed_when_missing() -> None:
    assert "Phase:       Pending (not reconciled yet)" in render.format_status({"metadata": {"name": "x"}})
    worse = {"metadata": {"name": "x"}, "status": {"metrics": {"evalLoss": 2.0, "evalLossBefore": 1.5}}}
    assert "1.5 before -> 2 after (change +0.5000: not better)" in render.format_status(worse)
    only_before = {"metadata": {"name": "x"}, "status": {"metrics": {"evalLossBefore": 3.25}}}
    assert "Eval loss:   3.25 before -> - after" in render.format_status(only_before)


@pytest.mark.parametrize(("phase", "code"), [("Succeeded", EXIT_OK), ("Failed", EXIT_FAILED), ("Running", None),
                                             ("Suspended", None), ("Pending", None), (None, None)])
def test_wait_outcome_exit_code_by_phase(phase, code) -> None:
    obj = {"metadata": {"name": "bot"}, "status": {"phase": phase} if phase else {}}
    outcome = render.wait_outcome(obj)
    assert (outcome.code if outcome else None) == code


def test_wait_outcome_says_why_it_failed_and_where_the_adapter_is() -> None:
    failed = {"metadata": {"name": "bot"}, "status": {
        "phase": "Failed", "message": "train.jsonl row 7: messages[1].role 'robot' is not allowed",
        "conditions": [{"type": "Failed", "status": "True", "reason": "InvalidDataset", "message": "x"}]}}
    assert render.wait_outcome(failed).message == \
        "bot Failed (InvalidDataset): train.jsonl row 7: messages[1].role 'robot' is not allowed"
    assert render.wait_outcome(FULL).message == "bot Succeeded (Completed): adapter at s3://b/runs/bot/adapter"


def test_timeout_message_names_the_phase_progress_and_newest_condition() -> None:
    obj = {"metadata": {"name": "bot"}, "status": {"phase": "Pending", "progress": {"display": "0/?"}, "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Running", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes: Insufficient cpu",
         "lastTransitionTime": "2026-01-01T00:00:05Z"}]}}
    assert render.timeout_message(obj, 90) == ("timed out after 90s waiting for bot (phase Pending, 0/?; "
                                               "Running=False (Unschedulable): 0/1 nodes: Insufficient cpu)")
    assert render.timeout_message({"metadata": {"name": "b"}}, 5) == \
        "timed out after 5s waiting for b (phase not reconciled yet)"


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400),
                                               ("2m30s", 150), ("0.5s", 0.5)])
def test_parse_duration(text, seconds) -> None:
    assert render.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m", "-3s", "1d"])
def test_parse_duration_rejects(text) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        render.parse_duration(text)


def test_kubectl_flags_before_or_after_the_subcommand() -> None:
    parser = main.build_parser()
    assert parser.parse_args(["-n", "a", "status", "x"]).namespace == "a"
    assert parser.parse_args(["status", "x", "-n", "b"]).namespace == "b"
    assert parser.parse_args(["status", "x"]).namespace is None
    args = parser.parse_args(["wait", "x", "--timeout", "10m", "--context", "c"])
    assert (args.timeout, args.context) == ("10m", "c")
    assert parser.parse_args(["plot", "x"]).file is None


def test_usage_errors_exit_3_not_2_which_is_a_wait_timeout(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["pull", "x"])  # DIR missing
    assert exc.value.code == EXIT_ERROR
    assert "the following arguments are required: dir" in capsys.readouterr().err


def test_bad_timeout_is_a_clear_error(capsys, monkeypatch) -> None:
    monkeypatch.setattr(main, "connect", lambda *a: (None, "default"))
    assert main.main(["wait", "x", "--timeout", "soon"]) == EXIT_ERROR
    assert "--timeout: invalid duration 'soon'" in capsys.readouterr().err


def _digest(name: str, data: bytes) -> FileDigest:
    return FileDigest(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_verify_names_missing_resized_changed_and_unlisted_files(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "ok.json").write_bytes(b"{}")
    (tmp_path / "sub" / "w.bin").write_bytes(b"abcd")
    (tmp_path / "short").write_bytes(b"ab")
    manifest = [_digest("ok.json", b"{}"), _digest("sub/w.bin", b"abce"), _digest("short", b"abc"),
                _digest("gone", b"z")]
    problems = fetch.verify(tmp_path, manifest)
    assert problems == ["sub/w.bin: sha256 mismatch", "short: size 2 != 3", "gone: missing"]
    assert fetch.verify(tmp_path, [manifest[0], _digest("short", b"ab")], "the list") == ["sub/w.bin: not in the list"]


def test_artifacts_fall_back_to_status_adapter() -> None:
    assert fetch.artifacts({"adapter": {"uri": "s3://b/a"}}).adapter == "s3://b/a"
    assert fetch.artifacts({"artifacts": {"lossPlot": "s3://b/l.png"}}).loss_plot == "s3://b/l.png"
    assert fetch.artifacts({}).adapter is None


def test_samples_one_line_each_and_cut() -> None:
    rows = [{"prompt": "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", "reference": "4", "baseOutput": "x" * 400,
             "tunedOutput": None}, {"prompt": "p2", "tunedOutput": " "}]
    text = render.format_samples(rows, 1, limit=50)
    assert text.splitlines() == ["sample 1 of 2", "  prompt:    <|user|> What is 2+2?<|end|> <|assistant|>",
                                 "  reference: 4", f"  base:      {'x' * 47}...", "  tuned:     -"]
    assert render.format_samples(rows, 5).count("sample ") == 2
    assert render.format_samples(rows, 5).splitlines()[-1] == "  tuned:     (empty)"  # ended its turn at once
    assert render.format_samples([], 1).startswith("no samples")


def _pod(name: str, created: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": labels}}


def test_logs_follow_the_newest_attempt_and_node_0_of_a_multi_node_run() -> None:
    from lft_operator.views import ATTEMPT_LABEL, NODE_RANK_LABEL

    assert render.current_pod([]) is None
    # Single-pod run: the newest pod (the Job's retry).
    single = [_pod("a", "2026-12-01T10:00:00Z"), _pod("b", "2026-12-01T10:05:00Z")]
    assert render.current_pod(single)["metadata"]["name"] == "b"
    # Multi-node: node 1's pod was created after node 0's, but rank 0 logs the run; attempt 2 wins over 1.
    gang = [_pod("n0-a1", "2026-12-01T10:00:00Z", **{ATTEMPT_LABEL: "1", NODE_RANK_LABEL: "0"}),
            _pod("n1-a1", "2026-12-01T10:00:01Z", **{ATTEMPT_LABEL: "1", NODE_RANK_LABEL: "1"})]
    assert render.current_pod(gang)["metadata"]["name"] == "n0-a1"
    gang.append(_pod("n1-a2", "2026-12-01T10:09:00Z", **{ATTEMPT_LABEL: "2", NODE_RANK_LABEL: "1"}))
    assert render.current_pod(gang)["metadata"]["name"] == "n1-a2"  # node 0's pod of attempt 2 not made yet
    gang.append(_pod("n0-a2", "2026-12-01T10:08:59Z", **{ATTEMPT_LABEL: "2", NODE_RANK_LABEL: "0"}))
    assert render.current_pod(gang)["metadata"]["name"] == "n0-a2"


# -- pull: the real command, a real file:// bucket, the verification itself not replaced -----------------------
ADAPTER = {"adapter_config.json": b'{"r": 16}', "adapter_model.safetensors": bytes(range(256)) * 16,
           "README.md": b"# LoRA adapter\n", "tokenizer/special_tokens_map.json": b"{}"}


class _FakeCluster:
    """What `pull` reads from Kubernetes: the resource; no ConfigMap, Job or Secret (the storage is file://)."""

    def __init__(self, obj: dict) -> None:
        self.obj = obj

    def lft(self, name: str) -> dict:
        assert name == self.obj["metadata"]["name"]
        return self.obj

    def trainer_config(self, name: str) -> None:
        return None

    def job_secret_names(self, job_name: str | None) -> list[str]:
        return []


def _bucket(tmp_path, files: dict[str, bytes], summary: dict[str, bytes] | None = None) -> str:
    """The run's output prefix as the trainer leaves it: adapter/ and training_summary.json (listing `summary`)."""
    out = tmp_path / "bucket" / "runs" / "bot"
    for name, data in files.items():
        (out / "adapter" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "adapter" / name).write_bytes(data)
    listed = files if summary is None else summary
    (out / "training_summary.json").write_text(json.dumps({"files": [_digest(n, d).to_wire()
                                                                     for n, d in listed.items()]}))
    return f"file://{out}"


def _resource(output: str, status_files: dict[str, bytes] | None) -> dict:
    adapter = {"uri": f"{output}/adapter"}
    if status_files is not None:
        adapter["files"] = [_digest(n, d).to_wire() for n, d in status_files.items()]
    return {"metadata": {"name": "bot", "namespace": "team"}, "spec": {}, "status": {
        "phase": "Succeeded", "adapter": adapter,
        "artifacts": {"adapter": f"{output}/adapter", "summary": f"{output}/training_summary.json"}}}


def _pull(monkeypatch, obj: dict, dest) -> int:
    monkeypatch.setattr(main, "connect", lambda *a: (None, "team"))
    monkeypatch.setattr(main, "Cluster", lambda api, namespace: _FakeCluster(obj))
    return main.main(["pull", "bot", str(dest)])


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_pull_checks_each_file_against_status_adapter_files(tmp_path, monkeypatch, capsys) -> None:
    output = _bucket(tmp_path, ADAPTER)
    dest = tmp_path / "here" / "adapter"
    assert _pull(monkeypatch, _resource(output, ADAPTER), dest) == EXIT_OK
    out = capsys.readouterr()
    assert _tree(dest) == ADAPTER
    assert f"{dest}: 4 files from {output}/adapter; 4 verified against the sha256 manifest (status.adapter.files" \
        in out.out
    assert "warning" not in out.err
    assert sorted(p.name for p in dest.parent.iterdir()) == ["adapter"]  # no temporary folder left


def test_pull_refuses_a_tampered_adapter_whose_storage_summary_was_rewritten_to_match(tmp_path, monkeypatch,
                                                                                      capsys) -> None:
    """Whoever can write the output prefix swaps the weights and rewrites training_summary.json to match: the
    digests the operator recorded in status.adapter.files still tell."""
    tampered = {**ADAPTER, "adapter_model.safetensors": bytes(reversed(ADAPTER["adapter_model.safetensors"]))}
    output = _bucket(tmp_path, tampered)  # the summary lists the tampered digests
    dest = tmp_path / "adapter"
    assert _pull(monkeypatch, _resource(output, ADAPTER), dest) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "adapter_model.safetensors: sha256 mismatch" in err
    assert "status.adapter.files" in err and f"nothing was written to {dest}" in err
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bucket"]  # no temporary folder left either


@pytest.mark.parametrize(("change", "problem"), [
    ({"extra.txt": b"not in the list"}, "extra.txt: not in status.adapter.files"),
    ({"tokenizer/added.json": b"{}"}, "tokenizer/added.json: not in status.adapter.files"),
    ({"README.md": b"# LoRA"}, "README.md: size 6 != 15"),
    ({"README.md": None}, "README.md: missing"),
])
def test_pull_refuses_an_extra_missing_or_resized_file(tmp_path, monkeypatch, capsys, change, problem) -> None:
    files = {n: d for n, d in {**ADAPTER, **change}.items() if d is not None}
    output = _bucket(tmp_path, files)  # the summary agrees with the bucket
    dest = tmp_path / "adapter"
    dest.mkdir()
    (dest / "mine.txt").write_bytes(b"was here before")
    assert _pull(monkeypatch, _resource(output, ADAPTER), dest) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"  {problem}\n" in err
    assert _tree(dest) == {"mine.txt": b"was here before"}  # nothing of the adapter, what was there kept


@pytest.mark.parametrize("status_files", [None, {}])
def test_pull_without_status_adapter_files_falls_back_to_the_summary_with_a_warning(tmp_path, monkeypatch, capsys,
                                                                                    status_files) -> None:
    output = _bucket(tmp_path, ADAPTER)
    dest = tmp_path / "adapter"
    assert _pull(monkeypatch, _resource(output, status_files), dest) == EXIT_OK
    out = capsys.readouterr()
    assert _tree(dest) == ADAPTER
    assert f"verified against the sha256 manifest ({output}/training_summary.json" in out.out
    assert out.err.startswith("warning: bot has no status.adapter.files")
    assert f"checked against {output}/training_summary.json" in out.err
    assert "whoever can write" in out.err


def test_pull_fallback_still_refuses_what_the_summary_does_not_list(tmp_path, monkeypatch, capsys) -> None:
    output = _bucket(tmp_path, {**ADAPTER, "extra.txt": b"x"}, summary=ADAPTER)
    dest = tmp_path / "adapter"
    assert _pull(monkeypatch, _resource(output, None), dest) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"  extra.txt: not in {output}/training_summary.json\n" in err
    assert not dest.exists()


def test_pull_without_any_list_of_digests_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    output = _bucket(tmp_path, ADAPTER, summary={})
    dest = tmp_path / "adapter"
    assert _pull(monkeypatch, _resource(output, None), dest) == EXIT_ERROR
    assert "no sha256 list to check" in capsys.readouterr().err
    assert not dest.exists()
