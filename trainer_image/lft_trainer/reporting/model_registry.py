"""training.mlflow.registeredModelName: the run's final adapter as a version of a registered model in the MLflow
model registry, through the MLflow client (mlflow-skinny, the trainer image's; its REST calls are
artifacts upload, registered-models/create and model-versions/create).

After the MLflow run has ended with its metrics (Tracker), the adapter directory is logged to the run as the
artifact `adapter/`, the registered model is created when missing, and a model version is made with source
runs:/<run id>/adapter, the run's id and the tags base_model (model.name) and base_model_revision. The run's
result does not depend on it: any failure becomes ModelRegistration.error (a ModelRegistrationFailed Warning
Event), never an exception."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lft_api import contract
from lft_api.contract import ModelRegistration, RunIdentity
from lft_api.spec import TrainerConfig

from ..storage.retry import scrub

log = logging.getLogger(__name__)

ARTIFACT_PATH = contract.ADAPTER_DIR  # the run's artifact the version is made from
AWAIT_READY_SECONDS = 60  # MLflow's own server makes a version READY at once; a remote registry may copy first
ERROR_CHARS = 500


@dataclass(frozen=True)
class RegistrationRequest:
    """What register() sends: the registered model, the run, the version's source, tags and description."""

    name: str
    run_id: str
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


def registration_request(config: TrainerConfig, identity: RunIdentity, run_id: str | None) -> RegistrationRequest | None:
    """The registration of this run's adapter; None when registeredModelName is unset or there is no run. Pure."""
    spec = config.training.mlflow
    if spec is None or not spec.registered_model_name or "mlflow" not in config.training.report_to or not run_id:
        return None
    tags = {"base_model": config.model.name, "base_model_revision": config.model.revision,
            "lft.name": identity.name, "lft.namespace": identity.namespace, "lft.uid": identity.uid,
            "lft.resultHash": identity.spec_hash}
    where = f"{identity.namespace}/{identity.name}" if identity.namespace else identity.name or "lora-finetune"
    return RegistrationRequest(
        name=spec.registered_model_name, run_id=run_id, source=f"runs:/{run_id}/{ARTIFACT_PATH}",
        tags={k: v for k, v in tags.items() if v},
        description=f"LoRA adapter on {config.model.name} trained by {where} (PEFT; load it on that base model).")


def register(client: Any, request: RegistrationRequest, adapter_dir: Path) -> ModelRegistration:
    """Log adapter_dir to the run and make the model version (client: an mlflow MlflowClient). Never raises."""
    try:
        client.log_artifacts(request.run_id, str(adapter_dir), ARTIFACT_PATH)
        try:
            client.create_registered_model(request.name)
        except Exception as exc:  # the name is taken: a new version of the same model
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(request.name, request.source, run_id=request.run_id,
                                              tags=request.tags, description=request.description,
                                              await_creation_for=AWAIT_READY_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the run's result stands whatever the registry answers
        error = scrub(f"{type(exc).__name__}: {exc}")
        error = error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 3] + "..."
        log.warning("registering the adapter as MLflow model %s failed: %s", request.name, error)
        return ModelRegistration(name=request.name, source=request.source, error=error)
    log.info("the adapter is version %s of MLflow model %s", version.version, request.name)
    return ModelRegistration(name=request.name, source=request.source, version=str(version.version))
