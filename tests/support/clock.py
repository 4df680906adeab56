"""A clock the test sets by hand (for rate limiters and timers that take a clock callable)."""

from __future__ import annotations


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t
