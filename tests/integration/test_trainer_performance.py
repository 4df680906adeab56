"""training.performance on the tiny model (CPU): the out-of-memory back-off keeps the effective batch, an
out-of-memory error that cannot be backed off ends as OutOfMemory, and padding-free batching (the varlen
attention kernel) and length grouping train on exactly the same loss as padded batches.

A real CUDA out-of-memory error needs a GPU (bench/gpu_phi3.py's oom-backoff case runs one on the H200);
here the error is raised by a callback at the first step while the micro-batch is above a limit, and the
plan is told it runs on a GPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from lft_trainer.performance import attention, probes
from lft_trainer.performance import plan as performance
from lft_trainer.run import train
from tests.support.trainer_run import config, run_in_process

GIB = 1024**3


@pytest.fixture
def pretend_gpu(monkeypatch):
    """The plan sees a 1000 GiB GPU (auto sizes the micro-batch); training still runs on the CPU."""
    monkeypatch.setattr(probes, "probe_hardware",
                        lambda model_type, gpu_memory_gib=None: performance.Hardware(True, "NVIDIA H200", 1000 * GIB))


def oom_above(monkeypatch, limit: int, at_step: int = 0) -> list[int]:
    """CUDA-style out-of-memory at optimizer step `at_step` (0: the first) of any micro-batch over `limit`;
    returns the micro-batch sizes tried."""
    from transformers import TrainerCallback

    tried: list[int] = []

    class OutOfMemoryAbove(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not tried or tried[-1] != args.per_device_train_batch_size:
                tried.append(args.per_device_train_batch_size)
            if args.per_device_train_batch_size > limit and state.global_step >= at_step:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")

    real = train.make_trainer

    def make_trainer(prep, *args, **kwargs):
        trainer, control = real(prep, *args, **kwargs)
        trainer.add_callback(OutOfMemoryAbove())
        return trainer, control

    monkeypatch.setattr(train, "make_trainer", make_trainer)
    return tried


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tiny_model, tmp_path,
                                                                             monkeypatch, capsys, pretend_gpu):
    tried = oom_above(monkeypatch, limit=8)
    cfg = config(tiny_model, f"file://{tmp_path}/out", "http://unused", maxSteps=4, evalSteps=4, batchSize=None,
                 gradientAccumulationSteps=8, maxLength=64)
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 0, term
    assert tried == [32, 16, 8]  # the plan's whole batch, then halved twice
    perf = json.loads((tmp_path / "out/training_summary.json").read_text())["performance"]
    assert (perf["microBatchSize"], perf["gradientAccumulationSteps"], perf["oomBackoffs"]) == (8, 4, 2)
    assert perf["microBatchSize"] * perf["gradientAccumulationSteps"] == 32
    assert "effective batch 32 kept" in perf["choices"][-1]
    plans = [json.loads(line)["performance"] for line in capsys.readouterr().out.splitlines()
             if '"kind":"plan"' in line]
    assert [(p["microBatchSize"], p["gradientAccumulationSteps"]) for p in plans] == [(32, 1), (16, 2), (8, 4)]


def test_out_of_memory_with_a_given_batch_size_ends_as_out_of_memory(tiny_model, tmp_path, monkeypatch,
                                                                      pretend_gpu):
    oom_above(monkeypatch, limit=8)
    cfg = config(tiny_model, f"file://{tmp_path}/out", "http://unused", maxSteps=4, evalSteps=4, batchSize=16,
                 maxLength=64)
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 3 and term["outcome"] == "invalid_input" and term["reason"] == "OutOfMemory"
    assert "at micro-batch 16 x 1 accumulation steps" in term["message"] and "training.batchSize" in term["message"]
    assert "the micro-batch was given" in term["message"] and "estimated" in term["message"]


def test_out_of_memory_after_some_steps_starts_again_from_the_same_weights(tiny_model, tmp_path,
                                                                            monkeypatch, pretend_gpu):
    """The restarted run is the run that would have started at the smaller micro-batch: same adapter."""
    from safetensors.torch import load_file

    def adapter(out: str, batch_size: int | None, oom_at: int | None) -> dict:
        if oom_at is not None:
            oom_above(monkeypatch, limit=8, at_step=oom_at)
        cfg = config(tiny_model, f"file://{tmp_path}/{out}", "http://unused", maxSteps=4, evalSteps=4,
                     batchSize=batch_size, gradientAccumulationSteps=2 if batch_size else 4, maxLength=64)
        (tmp_path / out).mkdir()
        code, term = run_in_process(cfg, tmp_path / out, monkeypatch)
        assert code == 0, term
        monkeypatch.setattr(train, "make_trainer", real_make_trainer)
        return load_file(tmp_path / out / "adapter/adapter_model.safetensors")

    real_make_trainer = train.make_trainer
    backed_off = adapter("backoff", None, oom_at=2)  # micro-batch 16 x 1 runs 2 steps, then 8 x 2 from the start
    fresh = adapter("fresh", 8, oom_at=None)  # micro-batch 8 x 2 from the start
    assert backed_off.keys() == fresh.keys()
    for name in fresh:
        assert torch.allclose(backed_off[name], fresh[name], atol=1e-6), name


def _rows(n_rows: int = 5, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    lengths = [int(x) for x in torch.randint(5, 60, (n_rows,), generator=g)]
    return [{"input_ids": torch.randint(5, 300, (n,), generator=g).tolist()} for n in lengths]


def _loss_and_grads(model_dir, impl: str, batch: dict) -> tuple[float, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=impl, dtype=torch.float32)
    model.config.use_cache = False  # as in training
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_padding_free_varlen_batch_trains_on_the_same_loss_as_the_padded_batch(tiny_model):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = _rows()
    padded = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=False)(rows)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat  # one sequence, no padding
    loss_padded, grad_padded = _loss_and_grads(tiny_model, "sdpa", padded)
    loss_varlen, grad_varlen = _loss_and_grads(tiny_model, attention.register(), flat)
    assert loss_varlen == pytest.approx(loss_padded, rel=1e-5)
    assert torch.allclose(grad_varlen, grad_padded, rtol=1e-4, atol=1e-6)


def test_length_grouped_micro_batches_keep_every_row_and_the_loss_per_token(tiny_model):
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = _rows(n_rows=8, seed=1)
    order = list(LengthGroupedSampler(batch_size=4, lengths=[len(r["input_ids"]) for r in rows],
                                      generator=torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(len(rows)))  # a permutation: every row once
    collate = DataCollatorForLanguageModeling(pad_token_id=0)
    whole, _ = _loss_and_grads(tiny_model, "sdpa", collate(rows))
    tokens = sum(len(r["input_ids"]) - 1 for r in rows)  # predicted tokens (the first of a row has no target)
    grouped = 0.0
    for i in range(0, len(order), 4):
        part = [rows[j] for j in order[i:i + 4]]
        loss, _ = _loss_and_grads(tiny_model, "sdpa", collate(part))
        grouped += loss * sum(len(r["input_ids"]) - 1 for r in part)
    assert grouped / tokens == pytest.approx(whole, rel=1e-5)
