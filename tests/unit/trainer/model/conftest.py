"""The tiny random Phi-3 model (built offline, seconds), shared by this directory's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("peft")
    from lft_trainer.model import tiny_model

    return tiny_model.build(tmp_path_factory.mktemp("tiny") / "model")


def batch():
    """A fixed batch of token ids (the tiny vocabulary has 384)."""
    import torch

    return torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))


def train_steps(peft_model, ids, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps on the trainable (adapter) weights, dropout off."""
    import torch

    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    for _ in range(steps):
        peft_model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    peft_model.eval()
