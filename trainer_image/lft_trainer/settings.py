"""The trainer's settings: the environment variables it reads, read once by the entry point
(`Settings.from_environ()` in __main__) and passed down (train.run, launcher.launch, progress.make_reporter,
preflight.load_config).

Who sets them: the operator (the names in lft_api.contract, and LFT_DDP_TIMEOUT_SECONDS, LFT_RENDEZVOUS_TIMEOUT_SECONDS,
LFT_SHUTDOWN_TIMEOUT_SECONDS on multi-node pods); the launcher, for the workers it starts (the ENV_* names below);
torchrun (RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, LOCAL_RANK); Kubernetes (KUBERNETES_SERVICE_*). Names and defaults
are those the operator and the image rely on: change none of them here alone.

Not here, on purpose: the pod's credentials (AWS_*, MLFLOW_*, HF_TOKEN, ...), which storage, tracking and scrubbing
read as a mapping of the whole environment (the Secret's keys are the user's); LFT_STORAGE_RETRY_SECONDS, read by
retry.RetryPolicy for every Storage (the CLI builds them too); the rank variables as distributed.py reads them for
the code below the run (callbacks, shards), which torchrun fixes for the life of the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from lft_api import contract

# Set by the launcher for the workers it starts (multi-process runs).
ENV_WORK_DIR = "LFT_WORK_DIR"
ENV_RESULT_DIR = "LFT_RESULT_DIR"  # where each launched worker writes its TerminationMessage (rank-N.json)
ENV_REPORT_FILE = "LFT_PREFLIGHT_REPORT"  # the launcher's pre-flight report: the ranks do not read the dataset again
ENV_RESUME_DIR = "LFT_RESUME_DIR"  # the launcher downloaded the checkpoint for its ranks
ENV_RESUME_STEP = "LFT_RESUME_STEP"
ENV_RESUME_URI = "LFT_RESUME_URI"
# Set by the operator on multi-node pods.
ENV_RENDEZVOUS_TIMEOUT = "LFT_RENDEZVOUS_TIMEOUT_SECONDS"  # how long a pod waits for the master's address to resolve
ENV_SHUTDOWN_TIMEOUT = "LFT_SHUTDOWN_TIMEOUT_SECONDS"  # after SIGTERM, before torchrun kills its workers
ENV_DDP_TIMEOUT = "LFT_DDP_TIMEOUT_SECONDS"  # torch.distributed collectives' timeout
# Tests, out-of-cluster runs, shared GPUs.
ENV_KUBE_API = "LFT_KUBE_API_URL"  # override of the in-cluster API server URL
ENV_GPU_MEMORY_GIB = "LFT_GPU_MEMORY_GIB"  # memory the plan may fill (a shared GPU); default: all of it

DEFAULT_MIN_INTERVAL = 5.0  # seconds between status patches (contract.ENV_STATUS_MIN_INTERVAL)
DEFAULT_RENDEZVOUS_TIMEOUT = 600
DEFAULT_SHUTDOWN_TIMEOUT = 3600  # the pod's terminationGracePeriodSeconds bounds it anyway


def _float(raw: str | None, default: float | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        return default


def _int(raw: str | None, default: int | None) -> int | None:
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    """Every setting the trainer takes from its environment, parsed (a malformed number: the default)."""

    config_path: str = contract.DEFAULT_CONFIG_PATH
    termination_log: str = contract.DEFAULT_TERMINATION_LOG
    # the LoRAFineTune this pod trains for (unset outside Kubernetes)
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    status_min_interval: float = DEFAULT_MIN_INTERVAL
    kube_api_url: str | None = None  # None: https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT
    kubernetes_service_host: str | None = None
    kubernetes_service_port: str = "443"
    # the process
    work_dir: str | None = None  # None: a fresh temporary directory
    gpu_memory_gib: float | None = None
    local_rank: int | None = None  # set: a worker torchrun started
    rank: int = 0
    # multi-process runs
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rendezvous_timeout: float = DEFAULT_RENDEZVOUS_TIMEOUT
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT
    ddp_timeout: int | None = None
    result_dir: str | None = None
    preflight_report: str | None = None
    resume_dir: str | None = None
    resume_step: int = 0
    resume_uri: str = ""

    @property
    def is_worker(self) -> bool:
        """A process torchrun started (the launcher's child), not the pod's entry process."""
        return self.local_rank is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            config_path=env.get(contract.ENV_CONFIG_PATH, contract.DEFAULT_CONFIG_PATH),
            termination_log=env.get(contract.ENV_TERMINATION_LOG, contract.DEFAULT_TERMINATION_LOG),
            name=env.get(contract.ENV_RESOURCE_NAME),
            namespace=env.get(contract.ENV_RESOURCE_NAMESPACE),
            uid=env.get(contract.ENV_RESOURCE_UID),
            status_min_interval=_float(env.get(contract.ENV_STATUS_MIN_INTERVAL), DEFAULT_MIN_INTERVAL),
            kube_api_url=env.get(ENV_KUBE_API),
            kubernetes_service_host=env.get("KUBERNETES_SERVICE_HOST"),
            kubernetes_service_port=env.get("KUBERNETES_SERVICE_PORT", "443"),
            work_dir=env.get(ENV_WORK_DIR) or None,
            gpu_memory_gib=_float(env.get(ENV_GPU_MEMORY_GIB), None),
            local_rank=int(env["LOCAL_RANK"] or 0) if "LOCAL_RANK" in env else None,
            rank=_int(env.get("RANK"), 0),
            node_rank=int(env.get(contract.ENV_NODE_RANK) or 0),
            master_addr=env.get(contract.ENV_MASTER_ADDR) or None,
            master_port=int(env[contract.ENV_MASTER_PORT]) if env.get(contract.ENV_MASTER_PORT) else None,
            rendezvous_timeout=float(env.get(ENV_RENDEZVOUS_TIMEOUT) or DEFAULT_RENDEZVOUS_TIMEOUT),
            shutdown_timeout=int(env.get(ENV_SHUTDOWN_TIMEOUT) or DEFAULT_SHUTDOWN_TIMEOUT),
            ddp_timeout=int(env[ENV_DDP_TIMEOUT]) if env.get(ENV_DDP_TIMEOUT) else None,
            result_dir=env.get(ENV_RESULT_DIR) or None,
            preflight_report=env.get(ENV_REPORT_FILE) or None,
            resume_dir=env.get(ENV_RESUME_DIR) or None,
            resume_step=int(env.get(ENV_RESUME_STEP, "0")),
            resume_uri=env.get(ENV_RESUME_URI, ""),
        )
