"""Operator settings, from LFT_* environment variables (the Helm chart sets them).

A pydantic-settings model: the variable of a field is LFT_<FIELD NAME> unless an alias says
otherwise; an empty variable means the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from .policy import Policy

# A Kubernetes quantity as the chart accepts it (values.schema.json): 1Gi, 512Mi, 2G.
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"

# The tag `make images` builds (hack/build-images.sh); the chart sets LFT_TRAINER_IMAGE.
DEFAULT_TRAINER_IMAGE = "lft/trainer:cpu"


def _env(name: str) -> Any:
    """An environment variable that is not LFT_<field name>; the field name works in code too."""
    return AliasChoices(name)


def _comma_list(value: Any) -> Any:
    """"a, b,,c" -> ("a", "b", "c"); anything but a string is left to pydantic."""
    if not isinstance(value, str):
        return value
    return tuple(item.strip() for item in value.split(",") if item.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LFT_", env_ignore_empty=True, frozen=True, populate_by_name=True, extra="ignore"
    )

    trainer_image: str = DEFAULT_TRAINER_IMAGE
    trainer_image_pull_policy: str = "IfNotPresent"
    # Secrets (in each resource's namespace) on every trainer pod, before the resource's own
    # spec.imagePullSecrets. LFT_TRAINER_IMAGE_PULL_SECRETS: a comma-separated list of names.
    trainer_image_pull_secrets: Annotated[tuple[str, ...], NoDecode] = ()
    # Used when a resource's spec.storage.endpointUrl is unset (e.g. the cluster's MinIO).
    default_storage_endpoint: str | None = None
    # Secret (in each resource's namespace) passed to trainers that name none; optional.
    default_storage_secret: str | None = None
    # Empty tuple: all namespaces. LFT_NAMESPACES: a comma-separated list, or "*" / "all".
    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    metrics_port: int = 8000  # 0 disables the Prometheus endpoint
    liveness_port: int = 8080  # 0 disables the liveness endpoint
    # High availability (leader.py): replicas elect one leader on a coordination.k8s.io/v1 Lease; only
    # it reconciles. Off: this process reconciles unconditionally (one replica only).
    leader_election: bool = True
    leader_election_lease_name: str = "lora-finetune-operator"
    # Empty: the operator's own namespace (OPERATOR_NAMESPACE, else its ServiceAccount's, else default).
    leader_election_namespace: str | None = None
    # client-go's defaults: standbys wait 15 s after the last renewal they saw; the leader steps down
    # when it could not renew for 10 s; renewals and attempts every 2 s.
    leader_election_lease_duration_seconds: int = Field(default=15, ge=1)
    leader_election_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    leader_election_retry_period_seconds: float = Field(default=2.0, gt=0)
    # Every resource is reconciled at least this often, whatever the events.
    resync_seconds: float = 60.0
    # Concurrent reconciles (and twice as many API connections).
    api_workers: int = 16
    # The trainer gets this long to checkpoint after SIGTERM.
    termination_grace_seconds: int = 120
    # Status patch interval the trainer is told to respect (LFT_STATUS_MIN_INTERVAL_SECONDS).
    trainer_status_interval: float | None = Field(
        default=None, validation_alias=_env("LFT_TRAINER_STATUS_INTERVAL_SECONDS")
    )
    # Multi-node runs: the sizeLimit of the pods' /dev/shm (a memory emptyDir: NCCL's buffers, loader workers).
    shm_size_limit: str | None = Field(default="1Gi", pattern=QUANTITY)
    watch_server_timeout: int = 300
    # A Job that cannot create its pod (quota, Pod Security, missing ServiceAccount) this long fails.
    pod_creation_timeout_seconds: float = 600.0
    json_logs: bool = True
    log_level: str = "INFO"
    # Kueue integration (status/queue.py; the chart's kueue.enabled): Workloads are watched (the kind must exist
    # and the operator may read and patch them), a Job with a queue is created suspended for Kueue to start, and
    # suspend/resume under Kueue go through the Workload's spec.active. Off: queueName is only the Job's label.
    kueue: bool = False
    # What a LoRAFineTune may ask for (policy.py). LFT_POLICY: JSON, e.g. {"allowedSecrets": ["hf-token"]}.
    policy: Policy = Field(default_factory=Policy)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespace_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() in ("*", "all"):
            return ()
        return _comma_list(value)

    @field_validator("trainer_image_pull_secrets", mode="before")
    @classmethod
    def _name_list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _election_timing(self) -> Settings:
        if not (
            self.leader_election_lease_duration_seconds
            > self.leader_election_renew_deadline_seconds
            > self.leader_election_retry_period_seconds
        ):
            raise ValueError(
                "LFT_LEADER_ELECTION_LEASE_DURATION_SECONDS > LFT_LEADER_ELECTION_RENEW_DEADLINE_SECONDS > "
                "LFT_LEADER_ELECTION_RETRY_PERIOD_SECONDS must hold"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `env` (default: the process environment)."""
        if env is None:
            return cls()
        return cls.model_validate(_MappingSource(cls, env)())


class _MappingSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As EnvSettingsSource reads os.environ: names case-insensitive, empty values dropped.
        return {k.lower(): v for k, v in self._mapping.items() if v != "" or not self.env_ignore_empty}
