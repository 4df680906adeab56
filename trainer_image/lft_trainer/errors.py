"""Errors that end a run with a specific, user-facing reason (see contract.ExitCode)."""

from __future__ import annotations

from typing import Optional


class InvalidInput(Exception):
    """Bad input: retrying cannot help. Ends the run with ExitCode.INVALID_INPUT.

    `reason` is a CamelCase machine-readable reason (InvalidConfig, InvalidDataset, ModelNotFound,
    MissingCredentials, StorageAccessDenied, ...); the message names the file, row, field and why.
    """

    def __init__(self, reason: str, message: str, *, file: Optional[str] = None,
                 row: Optional[int] = None, field: Optional[str] = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.file = file
        self.row = row
        self.field = field

    def details(self) -> dict:
        return {k: v for k, v in {"file": self.file, "row": self.row, "field": self.field}.items() if v is not None}


class ConfigNotThisRun(Exception):
    """The mounted config was written for another LoRAFineTune (same name, other UID): a retry may find the right
    one once the old ConfigMap is gone; training on it would train another run's spec."""


class StorageError(Exception):
    """Object storage failed after retries (transient outage that did not end): retryable (ExitCode.ERROR)."""
