"""The pydantic-error formatter both sides use: "which field, why", in wire (camelCase) names."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_errors(exc: ValidationError, prefix: str = "", limit: int | None = None) -> str:
    """'spec.training.learningRate: Input should be greater than 0; ...'.

    Only locations and messages: input values could be long, and are the user's own data anyway.
    `prefix` names the root ("spec" in the operator); `limit` caps the listed errors ("; and N more").
    """
    errors = exc.errors(include_url=False, include_input=False)
    shown = errors if limit is None else errors[:limit]
    parts = []
    for err in shown:
        loc = ".".join([prefix] * bool(prefix) + [str(p) for p in err.get("loc", ()) if p != "__root__"])
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    more = len(errors) - len(shown)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
