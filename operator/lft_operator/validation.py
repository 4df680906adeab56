"""Semantic validation: what the CRD schema cannot express (pure).

The API server already rejected what the schema can say (types, bounds, enums). It keeps
unknown fields (the spec's schema preserves them, so that none is dropped silently whatever
the client): they are refused here, UnknownField, with their paths. What is left makes the
resource Accepted=False with a reason, and nothing is created until it is fixed.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lft_api.conditions import Reason
from lft_api.errors import format_validation_errors
from lft_api.resource import MAX_NAME_LENGTH, LoRAFineTuneSpec

from . import policy
from .builders import storage_secret_name
from .settings import Settings
from .status import Problem

DEFAULT_SETTINGS = Settings.from_env({})


def _path(loc: tuple[Any, ...]) -> str:
    return ".".join(["spec"] + [str(p) for p in loc if p != "__root__"])


def parse_spec(raw: dict[str, Any]) -> tuple[LoRAFineTuneSpec | None, list[Problem]]:
    try:
        return LoRAFineTuneSpec.model_validate(raw), []
    except ValidationError as err:
        return None, validation_problems(err)


def validation_problems(err: ValidationError) -> list[Problem]:
    """UnknownField for fields the models do not know (extra="forbid"), InvalidSpec for the rest."""
    errors = err.errors(include_url=False, include_input=False)
    unknown = [_path(e["loc"]) for e in errors if e.get("type") == "extra_forbidden"]
    problems: list[Problem] = []
    if unknown:
        problems.append(
            Problem(
                Reason.UNKNOWN_FIELD,
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: not part of the "
                "LoRAFineTune API (a typo, or a field of another version); remove or rename it",
            )
        )
    if len(unknown) == len(errors):
        return problems
    if not unknown:
        return [Problem(Reason.INVALID_SPEC, format_validation_errors(err, prefix="spec"))]
    others = [f"{_path(e['loc'])}: {e.get('msg')}" for e in errors if e.get("type") != "extra_forbidden"]
    return problems + [Problem(Reason.INVALID_SPEC, "; ".join(others))]


def semantic_problems(spec: LoRAFineTuneSpec, name: str) -> list[Problem]:
    problems: list[Problem] = []
    if len(name) > MAX_NAME_LENGTH:
        problems.append(
            Problem(
                Reason.NAME_TOO_LONG, f"name must be at most {MAX_NAME_LENGTH} characters (the Job is <name>-trainer)"
            )
        )
    if spec.lora.quantization != "none" and spec.resources.gpus < 1:
        problems.append(
            Problem(
                Reason.QUANTIZATION_NEEDS_GPU,
                f"spec.lora.quantization {spec.lora.quantization} (QLoRA, bitsandbytes) needs a GPU: "
                "set spec.resources.gpus >= 1 or spec.lora.quantization to none",
            )
        )
    if (
        spec.training.num_processes != "auto"
        and spec.training.num_processes > 1
        and spec.resources.gpus > 1
        and spec.training.num_processes != spec.resources.gpus
    ):
        problems.append(
            Problem(
                Reason.PROCESSES_MISMATCH_GPUS,
                f"spec.training.numProcesses {spec.training.num_processes} differs from spec.resources.gpus "
                f"{spec.resources.gpus}: the trainer runs one process per GPU; leave numProcesses unset",
            )
        )
    mounts = {m.name for m in spec.pod_template.volume_mounts}
    volumes = {v.name for v in spec.pod_template.volumes}
    missing = sorted(str(m) for m in mounts - volumes)
    if missing:
        problems.append(
            Problem(
                Reason.INVALID_POD_TEMPLATE,
                f"spec.podTemplate.volumeMounts name volumes not in spec.podTemplate.volumes: {', '.join(missing)}",
            )
        )
    return problems


def policy_problems(spec: LoRAFineTuneSpec, settings: Settings) -> list[Problem]:
    """What the admin policy (settings.policy) refuses, one PolicyViolation per broken rule."""
    secret, _ = storage_secret_name(spec, settings)
    messages = policy.violations(spec, settings.policy, settings.trainer_image, secret, settings.default_storage_secret)
    return [Problem(Reason.POLICY_VIOLATION, message) for message in messages]


def validate(
    raw_spec: dict[str, Any], name: str, settings: Settings = DEFAULT_SETTINGS
) -> tuple[LoRAFineTuneSpec | None, list[Problem]]:
    spec, problems = parse_spec(raw_spec)
    if spec is None:
        return None, problems
    return spec, semantic_problems(spec, name) + policy_problems(spec, settings)
