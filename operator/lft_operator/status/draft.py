"""The status being decided: the LoRAFineTuneStatus model, with its Events and Job patches."""

from __future__ import annotations

from typing import Any

from lft_api.conditions import FAILED, RUNNING, SUCCEEDED, SUSPENDED, Reason

from .conditions import Conditions
from .model import Decision, Event, Observation, owned_patch, owned_status, owned_wire
from .trust import reverted


class Draft:
    def __init__(self, obs: Observation):
        self.obs = obs
        self.stored = (obs.status if obs.stored is None else obs.stored) or {}  # as read, trainer fields included
        self.old = owned_status(obs.status)
        self.new = self.old.model_copy(deep=True)
        self.new.observed_generation = obs.generation
        self.conds = Conditions(self.old.conditions, obs.generation, obs.now)
        self.events: list[Event] = []
        self.job_patches: list[dict[str, Any]] = []
        self.workload_patches: list[tuple[str, dict[str, Any]]] = []  # Kueue: (Workload name, merge patch)
        # Trainer-owned fields: removed when written under another UID; the final ones on success.
        self.extra_patch: dict[str, Any] = dict.fromkeys(obs.stale)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def phase(self, phase: str, message: str) -> None:
        self.new.phase = phase  # type: ignore[assignment]
        self.new.message = message

    def final(self, phase: str, reason: str, message: str, event_reason: str | None = None) -> Decision:
        """Succeeded or Failed, for good. The Event's reason is the phase unless `event_reason`."""
        succeeded = phase == SUCCEEDED
        self.conds.set(SUCCEEDED, succeeded, reason if succeeded else FAILED, message if succeeded else "")
        self.conds.set(FAILED, not succeeded, SUCCEEDED if succeeded else reason, "" if succeeded else message)
        self.conds.set(RUNNING, False, phase)
        if self.conds.true(SUSPENDED):
            self.conds.set(SUSPENDED, False, phase)
        self.phase(phase, message)
        if self.new.queue is not None:  # Kueue: the run is over, whatever its Workload says yet
            self.new.queue = self.new.queue.model_copy(update={"state": "Finished", "message": None,
                                                               "display": f"Finished ({self.new.queue.name})"})
        job = self.obs.job
        self.new.completion_time = (job.completion_time if job is not None else None) or self.obs.now
        self.event("Normal" if succeeded else "Warning", event_reason or phase, message)
        return self.done()

    def done(self) -> Decision:
        self.new.conditions = self.conds.items
        patch = owned_patch(self.stored, self.new)
        patch.update(self.extra_patch)
        undone = reverted(self.obs.foreign, self.obs.stale, patch)
        if undone:
            self.events.insert(0, Event("Warning", Reason.STATUS_REVERTED, undone))
        return Decision(status=owned_wire(self.new), patch=patch, events=self.events, job_patches=self.job_patches,
                        workload_patches=self.workload_patches)
