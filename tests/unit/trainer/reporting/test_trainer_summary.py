"""training_summary.json from plain facts (pure)."""

from __future__ import annotations

from lft_api.contract import FileDigest, RunIdentity
from lft_api.spec import TrainerConfig
from lft_trainer.reporting.summary import RunFacts, build_summary, last_train_loss

ME = RunIdentity(namespace="team", name="ft-b", uid="uid-b", spec_hash="h1")
OLD = RunIdentity(namespace="team", name="ft-a", uid="uid-a", spec_hash="h0")


def facts(**kw) -> RunFacts:
    base = dict(identity=ME, adapter_uri="s3://b/p/adapter", files=[FileDigest(name="a", size=1, sha256="0" * 64)],
                steps=40, total_steps=40, epochs=1.5, tokens_seen=1000,
                log_history=[{"loss": 2.0, "step": 20}, {"loss": 1.0, "step": 40}, {"eval_loss": 0.9, "step": 40}],
                train_rows=100, eval_rows=10, dataset={"format": "messages"}, trainable_parameters=5,
                total_parameters=50, device="cpu", dtype="float32", num_processes=1)
    return RunFacts(**{**base, **kw})


def test_summary_records_identity_metrics_and_files():
    config = TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}})
    s = build_summary(config, facts(eval_loss_before=3.0, eval_loss_after=1.0))
    assert s["runIdentity"] == {"namespace": "team", "name": "ft-b", "uid": "uid-b", "specHash": "h1"}
    assert s["metrics"]["trainLoss"] == 1.0 and s["metrics"]["evalLossImprovement"] == 2.0
    assert s["files"] == [{"name": "a", "size": 1, "sha256": "0" * 64}] and s["steps"] == 40
    assert s["resumedFromStep"] is None and s["resumedFrom"] is None and s["replacedRuns"] == []
    assert s["config"]["output"]["uri"] == "o"


def test_summary_says_what_was_replaced_and_resumed_from():
    config = TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}})
    s = build_summary(config, facts(replaced_runs=[OLD], resumed_from_step=400, resumed_from_run=OLD,
                                    resumed_from_uri="s3://b/old/checkpoints/checkpoint-400"))
    assert s["replacedRuns"] == [OLD.to_wire()]
    assert s["resumedFrom"] == {"uri": "s3://b/old/checkpoints/checkpoint-400", "run": OLD.to_wire()}
    assert s["metrics"]["evalLossImprovement"] is None  # no eval


def test_last_train_loss_skips_eval_entries():
    assert last_train_loss([{"loss": 2.0}, {"eval_loss": 1.0}]) == 2.0 and last_train_loss([]) is None


def test_summary_says_whether_vllm_can_serve_the_adapter_and_how_to_load_it():
    config = TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}})
    verdict = {"engine": "vLLM", "servable": False, "reasons": ["DoRA"], "notes": []}
    s = build_summary(config, facts(servability=verdict, how_to_load="from peft import PeftModel"))
    assert s["servability"] == verdict and s["howToLoad"] == "from peft import PeftModel"
    assert build_summary(config, facts())["servability"] is None


def test_summary_lists_the_artifacts_and_says_why_the_picture_is_missing():
    config = TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}})
    arts = {"adapter": "s3://b/p/adapter", "metrics": "s3://b/p/metrics.jsonl", "lossPlot": "s3://b/p/loss.png"}
    s = build_summary(config, facts(artifacts=arts))
    assert s["artifacts"] == arts and "lossPlotSkipped" not in s
    s = build_summary(config, facts(artifacts={"metrics": "s3://b/p/metrics.jsonl"},
                                    loss_plot_skipped="matplotlib is not installed"))
    assert "lossPlot" not in s["artifacts"] and s["lossPlotSkipped"] == "matplotlib is not installed"


def test_summary_records_nodes_processes_per_node_and_world_size():
    config = TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"},
                                           "training": {"nodes": 2, "numProcesses": 2}})
    s = build_summary(config, facts(num_processes=4, nodes=2, processes_per_node=2))
    assert (s["nodes"], s["processesPerNode"], s["worldSize"], s["numProcesses"]) == (2, 2, 4, 4)


def test_summary_records_the_resolved_sft_and_lora_config():
    import enum
    from types import SimpleNamespace

    from lft_trainer.reporting.summary import RESOLVED_LORA_KEYS, RESOLVED_SFT_KEYS, resolved_config

    class Optim(enum.Enum):
        SGD = "sgd"

    args = SimpleNamespace(optim=Optim.SGD, lr_scheduler_kwargs={"min_lr": 1e-5}, max_grad_norm=0.5)
    lora = SimpleNamespace(r=8, use_rslora=True, target_modules={"q_proj", "k_proj"}, init_lora_weights="gaussian")
    r = resolved_config(args, lora)
    assert set(r["sftConfig"]) == set(RESOLVED_SFT_KEYS) and set(r["loraConfig"]) == set(RESOLVED_LORA_KEYS)
    assert r["sftConfig"]["optim"] == "sgd" and r["sftConfig"]["lr_scheduler_kwargs"] == {"min_lr": 1e-5}
    assert r["loraConfig"]["target_modules"] == ["k_proj", "q_proj"] and r["loraConfig"]["use_rslora"] is True
    config = TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}})
    assert build_summary(config, facts(resolved=r))["resolved"] == r
    assert build_summary(config, facts())["resolved"] is None
