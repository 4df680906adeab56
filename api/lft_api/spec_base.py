"""The base of every spec model (spec.py, tracking_spec.py). Imports only pydantic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict:
        """The JSON-ready dict with camelCase keys, as stored in the CR and the ConfigMap."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
