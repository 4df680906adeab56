"""Steady-state training throughput: tokens/s over the optimizer steps after the first WARMUP_STEPS (which
carry CUDA start-up, kernel selection and allocator growth), timed inside the steps only (evaluation,
checkpoint saves and logging excluded), and the achieved model TFLOP/s and MFU from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

WARMUP_STEPS = 2


@dataclass
class ThroughputMeter:
    """Pure accounting, fed one optimizer step at a time."""

    flops_per_token: Optional[float] = None
    peak_tflops: Optional[float] = None
    warmup_steps: int = WARMUP_STEPS
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0

    def add_step(self, seconds: float, tokens: int) -> None:
        self.steps += 1
        if self.steps > self.warmup_steps:
            self.seconds += seconds
            self.tokens += tokens

    @property
    def tokens_per_second(self) -> Optional[float]:
        return self.tokens / self.seconds if self.seconds > 0 and self.tokens > 0 else None

    @property
    def tflops(self) -> Optional[float]:
        rate = self.tokens_per_second
        return rate * self.flops_per_token / 1e12 if rate and self.flops_per_token else None

    @property
    def mfu_percent(self) -> Optional[float]:
        achieved = self.tflops
        return 100.0 * achieved / self.peak_tflops if achieved and self.peak_tflops else None


class ThroughputCallback:
    """Times each optimizer step; on_measured(meter, peak GiB) runs before each log. A TrainerCallback through
    progress.as_trainer_callback (make_throughput_callback)."""

    def __init__(self, meter: ThroughputMeter, on_measured: Callable[[ThroughputMeter, Optional[float]], None],
                 cuda: bool, clock: Callable[[], float] = time.perf_counter):
        self.meter, self.on_measured, self.cuda, self.clock = meter, on_measured, cuda, clock
        self._t0: Optional[float] = None
        self._tokens0 = 0

    def _sync(self) -> None:
        if self.cuda:  # the step's kernels have run, not only been queued
            import torch

            torch.cuda.synchronize()

    def _peak_gib(self) -> Optional[float]:
        if not self.cuda:
            return None
        import torch

        return torch.cuda.max_memory_reserved() / 1024**3

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t0 = self.clock()
        self._tokens0 = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None:
            return
        self._sync()
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0) - self._tokens0
        self.meter.add_step(self.clock() - self._t0, tokens)
        self._t0 = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            self.on_measured(self.meter, self._peak_gib())


def make_throughput_callback(meter: ThroughputMeter, on_measured: Callable[[ThroughputMeter, Optional[float]], None],
                             cuda: bool, clock: Callable[[], float] = time.perf_counter):
    """A TrainerCallback that times each optimizer step; on_measured(meter, peak GiB) runs before each log."""
    from ..reporting.progress import as_trainer_callback

    return as_trainer_callback(ThroughputCallback)(meter, on_measured, cuda, clock)
