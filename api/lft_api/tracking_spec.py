"""training.reportTo's settings: where experiment tracking goes (MLflow, Weights & Biases). Imports only pydantic."""

from __future__ import annotations

from typing import Literal, Optional
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from .spec_base import SpecModel


class SecretRef(SpecModel):
    """A Secret in the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")


ReportTarget = Literal["tensorboard", "mlflow", "wandb"]


class MlflowSpec(SpecModel):
    """Where training.reportTo mlflow logs: the run, its parameters and every logged metric."""

    tracking_uri: str = Field(
        min_length=1,
        max_length=2048,
        # _no_userinfo as CEL: urlsplit's netloc (after "//", up to / ? #) holding an "@".
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "!self.matches('^([A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*@')",
            "message": "training.mlflow.trackingUri must not contain credentials (user:password@ or token@): put them "
                       "in credentialsSecretRef",
        }]},
        description=(
            "MLflow tracking server, e.g. http://mlflow.mlops:5000 (checked before training: the run fails at once "
            "when it cannot be reached). Credentials never go here: see credentialsSecretRef."
        ),
    )
    experiment_name: Optional[str] = Field(
        default=None, min_length=1, description="Experiment (created when missing). Unset: MLflow's Default."
    )
    credentials_secret_ref: Optional[SecretRef] = Field(
        default=None,
        description=(
            "Secret whose keys become the trainer's environment: MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN. Values are never read by the operator."
        ),
    )
    registered_model_name: Optional[str] = Field(
        default=None,
        min_length=1,
        max_length=256,
        # MLflow refuses names with "/" or ":", and blank ones.
        pattern=r"^[^/:]*[^/:\s][^/:]*$",
        description=(
            "Register the adapter in the MLflow model registry under this name (created when missing): after "
            "the final adapter is saved, its files are logged to the run as the artifact adapter/ and a new model "
            "version is made from runs:/<run id>/adapter, tagged base_model (model.name) and base_model_revision; "
            "the run holds its metrics. A failed registration does not fail the run: a ModelRegistrationFailed "
            "Warning Event says why (ModelRegistered, Normal, names the version). Unset: no registration, and the "
            "adapter is not copied to the tracking server. No '/' or ':' (MLflow's rule)."
        ),
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_userinfo(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials (user:password@ or token@): put them in credentialsSecretRef")
        return v


class WandbSpec(SpecModel):
    """Where training.reportTo wandb logs (Weights & Biases)."""

    project: str = Field(min_length=1, description="W&B project.")
    entity: Optional[str] = Field(default=None, min_length=1, description="W&B entity (team or user).")
    mode: Literal["online", "offline"] = Field(
        default="online",
        description=(
            "online: stream to the W&B server (needs WANDB_API_KEY from credentialsSecretRef). offline: no network; "
            "the run's files go to <output>/wandb/ at every checkpoint and at the end (`wandb sync` uploads them later)."
        ),
    )
    base_url: Optional[str] = Field(default=None, min_length=1, description="Self-hosted W&B server URL.")
    credentials_secret_ref: Optional[SecretRef] = Field(
        default=None,
        description="Secret whose keys become the trainer's environment: WANDB_API_KEY. Never read by the operator.",
    )
