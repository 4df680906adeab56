"""Operator settings, from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_TRAINER_IMAGE = "lft/trainer:0.1.0"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    return int(raw) if raw else default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    return raw in ("1", "true", "yes", "on") if raw else default


@dataclass(frozen=True)
class Settings:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    trainer_image_pull_policy: str = "IfNotPresent"
    # Used when a resource's spec.storage.endpointUrl is unset (e.g. the cluster's MinIO).
    default_storage_endpoint: str | None = None
    # Secret (in each resource's namespace) passed to trainers that name none; optional.
    default_storage_secret: str | None = None
    # Empty tuple: all namespaces.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int = 8000  # 0 disables the Prometheus endpoint
    liveness_port: int = 8080  # 0 disables the liveness endpoint
    # kopf peering name for HA (several replicas, one active); None: standalone.
    peering: str | None = None
    priority: int = 0
    # Every resource is reconciled at least this often, whatever the events.
    resync_seconds: float = 60.0
    # Threads for Kubernetes API calls (the client is synchronous).
    api_workers: int = 16
    # The trainer gets this long to checkpoint after SIGTERM.
    termination_grace_seconds: int = 120
    # Status patch interval the trainer is told to respect (LFT_STATUS_MIN_INTERVAL_SECONDS).
    trainer_status_interval: float | None = None
    watch_server_timeout: int = 300
    json_logs: bool = True
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        namespaces_raw = env.get("LFT_NAMESPACES", "").strip()
        namespaces = (
            ()
            if namespaces_raw in ("", "*", "all")
            else tuple(ns.strip() for ns in namespaces_raw.split(",") if ns.strip())
        )
        interval = env.get("LFT_TRAINER_STATUS_INTERVAL_SECONDS", "").strip()
        return cls(
            trainer_image=env.get("LFT_TRAINER_IMAGE") or DEFAULT_TRAINER_IMAGE,
            trainer_image_pull_policy=env.get("LFT_TRAINER_IMAGE_PULL_POLICY") or "IfNotPresent",
            default_storage_endpoint=env.get("LFT_DEFAULT_STORAGE_ENDPOINT") or None,
            default_storage_secret=env.get("LFT_DEFAULT_STORAGE_SECRET") or None,
            namespaces=namespaces,
            metrics_port=_int(env, "LFT_METRICS_PORT", 8000),
            liveness_port=_int(env, "LFT_LIVENESS_PORT", 8080),
            peering=env.get("LFT_PEERING_NAME") or None,
            priority=_int(env, "LFT_PRIORITY", 0),
            resync_seconds=_float(env, "LFT_RESYNC_SECONDS", 60.0),
            api_workers=_int(env, "LFT_API_WORKERS", 16),
            termination_grace_seconds=_int(env, "LFT_TERMINATION_GRACE_SECONDS", 120),
            trainer_status_interval=float(interval) if interval else None,
            watch_server_timeout=_int(env, "LFT_WATCH_SERVER_TIMEOUT", 300),
            json_logs=_bool(env, "LFT_JSON_LOGS", True),
            log_level=(env.get("LFT_LOG_LEVEL") or "INFO").upper(),
        )
