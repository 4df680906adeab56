"""Semantic validation: what the CRD schema cannot express, and a second line for what it does (pure).

The API server already rejected what the schema can say: types, bounds, enums, unknown fields (the
schema is structural: strict field validation refuses them, other clients get them pruned), and the
CEL rules the models declare (QLoRA and the bitsandbytes optimizers need a GPU, numProcesses per GPU, mounts need volumes,
assistantOnlyLoss needs chat rows, reportTo and its settings, no credentials in a tracking URI) and
the spec's immutability once the Job exists (crdgen). Only what needs the admin policy (policy.py)
or other objects (ownership.py) is the operator's alone.

The pydantic models still validate every resource, as a second line: resources stored before the
CRD had these rules (the API server ratchets: an unchanged invalid field is not re-checked), and an
installed CRD older than the operator (Helm never upgrades the CRDs of a chart's crds/). UnknownField
is reachable only there: with a current CRD the API server never stores an unknown field.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lft_api.conditions import Reason
from lft_api.errors import format_validation_errors
from lft_api.resource import MAX_NAME_LENGTH, LoRAFineTuneSpec
from lft_api.spec import BNB_OPTIMIZERS

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
    if spec.training.optimizer in BNB_OPTIMIZERS and spec.resources.gpus < 1:
        problems.append(
            Problem(
                Reason.OPTIMIZER_NEEDS_GPU,
                f"spec.training.optimizer {spec.training.optimizer} (bitsandbytes) needs a GPU: "
                "set spec.resources.gpus >= 1 or another optimizer (adamw_torch...)",
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


def validate_resource(
    body: dict[str, Any], status: dict[str, Any], settings: Settings = DEFAULT_SETTINGS
) -> tuple[LoRAFineTuneSpec | None, list[Problem]]:
    """validate() of the resource's spec, plus: a spec refused for unknown fields stays refused until it is edited.

    Once the CRD is structural (an upgrade from one that preserved unknown fields), the API server prunes the
    unknown fields of stored objects as it reads them: the same generation then looks valid, and would train
    with defaults in place of the fields the user mistyped. Only an edit (a new generation) is read anew.
    """
    spec, problems = validate(body.get("spec") or {}, body["metadata"]["name"], settings)
    generation = body["metadata"].get("generation", 1)
    for c in status.get("conditions") or []:
        if (c.get("type"), c.get("status"), c.get("reason")) == ("Accepted", "False", Reason.UNKNOWN_FIELD) and (
            c.get("observedGeneration") == generation and not any(p.reason == Reason.UNKNOWN_FIELD for p in problems)
        ):
            problems = [Problem(Reason.UNKNOWN_FIELD, c.get("message") or "unknown fields")] + problems
    return spec, problems
