"""The conditions list of a status, per the Kubernetes API conventions (pure)."""

from __future__ import annotations

from lft_api.conditions import CONDITION_TYPES
from lft_api.resource import Condition


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime changes only when the status changes."""
    old = get_condition(conditions, type_)
    transition = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    out = [c for c in conditions if c.type != type_] + [new]
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c.type, len(order)))


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


class Conditions:
    """The conditions list being built for one generation at one instant."""

    def __init__(self, items: list[Condition], generation: int, now: str):
        self.items = list(items)
        self.generation = generation
        self.now = now

    def set(self, type_: str, status: bool | str, reason: str, message: str = "") -> None:
        value = status if isinstance(status, str) else ("True" if status else "False")
        self.items = set_condition(self.items, type_, value, reason, message, self.generation, self.now)

    def get(self, type_: str) -> Condition | None:
        return get_condition(self.items, type_)

    def true(self, type_: str) -> bool:
        found = self.get(type_)
        return found is not None and found.status == "True"

    def unchanged(self, type_: str, status: str, message: str) -> bool:
        """Whether the condition already says this (no transition: no Event)."""
        old = self.get(type_)
        return old is not None and old.status == status and old.message == message
