"""What the client raises: one base class (LftError), a subclass per thing a notebook may want to catch.

No message holds a storage Secret's value: the storage errors come scrubbed from lft_cli.fetch, and nothing
here reads the Secret.
"""

from __future__ import annotations

from typing import Any


class LftError(Exception):
    """Anything the client could not do, said in one sentence (no such run, an API or storage error...)."""


class InvalidSpec(LftError, ValueError):
    """The spec (or the name) was refused here, before anything was sent: each field with why.

    `problems`: [(field path in wire names, "spec.training.epochs", message)].
    """

    def __init__(self, message: str, problems: list[tuple[str, str]]):
        super().__init__(message)
        self.problems = problems


class ApiRefused(LftError):
    """The API server refused a request: `status` (422 for the CRD's schema and CEL rules), `reason` (Invalid,
    AlreadyExists...) and the server's own `message`, which names the field; `causes`: [(field, message)]."""

    def __init__(self, what: str, status: int, reason: str, message: str, causes: list[tuple[str, str]]):
        super().__init__(f"{what}: {status} {reason}: {message}")
        self.status, self.reason, self.message, self.causes = status, reason, message, causes


class AlreadyExists(ApiRefused):
    """409: a LoRAFineTune of that name exists in the namespace (get() it, or delete() it first)."""


class NotFound(LftError, LookupError):
    """No LoRAFineTune of that name in the namespace."""


class RunFailed(LftError):
    """wait(): the run ended Failed. `reason` (the Failed condition's: OutOfMemory, InvalidDataset...), `message`,
    and `finetune`, the resource as it ended (its status, attempts, conditions)."""

    def __init__(self, text: str, reason: str, message: str, finetune: Any):  # a FineTune (finetune.py imports us)
        super().__init__(text)
        self.reason, self.message, self.finetune = reason, message, finetune


class WaitTimeout(LftError, TimeoutError):
    """wait(): the timeout passed first; `finetune` is the resource as last seen."""

    def __init__(self, text: str, finetune: Any):
        super().__init__(text)
        self.finetune = finetune


class AdapterMismatch(LftError):
    """pull_adapter(): the downloaded files do not match the sha256 manifest; nothing was written to the
    destination. `problems`: one line per file (missing, another size or sha256, not listed)."""

    def __init__(self, text: str, problems: list[str]):
        super().__init__(text)
        self.problems = problems


def causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) of each cause in a Kubernetes Status body's details."""
    found = ((body or {}).get("details") or {}).get("causes") or []
    return [(str(c.get("field") or ""), str(c.get("message") or "")) for c in found if isinstance(c, dict)]
