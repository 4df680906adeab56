"""The base of every spec model (spec.py, tracking_spec.py). Imports only pydantic."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict, JsonValue

# CEL rules (x-kubernetes-validations) as json_schema_extra takes them: JSON values, so that a list of them is
# a JsonValue (a list[dict[str, str]] is not: list is invariant).
CelRules = list[JsonValue]


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, as stored in the CR and the ConfigMap."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def ratcheting_rule(rule: str, reads: tuple[str, ...], **keys: str) -> JsonDict:
    """A CEL rule (x-kubernetes-validations) that, on an update, passes when none of the fields it reads changed.

    The API server ratchets a rule only when the whole object it sits on is unchanged; a cross-field rule of the
    spec would otherwise be re-checked at any change of the spec (suspend: true), and a resource stored before the
    rule existed could not be changed at all without fixing it first. `reads`: the fields of self the rule reads.
    """
    unchanged = " && ".join(
        f"has(self.{f}) == has(oldSelf.value().{f}) && (!has(self.{f}) || self.{f} == oldSelf.value().{f})"
        for f in reads
    )
    return {"rule": f"(oldSelf.hasValue() && {unchanged}) || ({rule})", "optionalOldSelf": True, **keys}
