"""Experiment tracking (training.reportTo): TensorBoard, MLflow and Weights & Biases through transformers' own
callbacks (TrainingArguments.report_to), and what they need around them here:

- the environment the callbacks read (`tracking_env`, pure): where TensorBoard writes, the MLflow server and
  experiment, the W&B project and mode; credentials come only from the environment (a Secret the operator
  mounts), never from the config;
- pre-flight (`check`): each requested integration's package is installed, the MLflow server answers and takes
  the credentials, W&B online has its key; otherwise the run ends at once (InvalidInput, exit 3) naming the field;
- `Tracker` (rank 0): starts the MLflow run itself, so that the evaluation after training lands in the same run
  (transformers' callback ends the run it started at the end of train()), tags it with the resource, and ends it;
  finishes the W&B run; uploads TensorBoard event files to <output>/tensorboard/ and W&B offline run files to
  <output>/wandb/ at every checkpoint (HistoryWriter's background refresh) and at the end.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import Artifacts, ModelRegistration, RunIdentity
from lft_api.spec import TrainerConfig
from lft_api.tracking_spec import MlflowSpec

from ..errors import InvalidInput
from ..storage.retry import scrub
from ..storage.store import Storage
from . import model_registry

log = logging.getLogger(__name__)

# Any one of these importable makes the integration work (transformers' is_*_available).
PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
PROBE_TIMEOUT = 5.0
PROBE_ATTEMPTS = 3


def tracking_env(config: TrainerConfig, work: Path, identity: RunIdentity) -> dict[str, str]:
    """The environment transformers' callbacks (and mlflow, wandb) read for training.reportTo. Pure."""
    t, env = config.training, {}
    if "tensorboard" in t.report_to:
        env["TENSORBOARD_LOGGING_DIR"] = str(work / contract.TENSORBOARD_DIR)
    if "mlflow" in t.report_to and t.mlflow is not None:
        env["MLFLOW_TRACKING_URI"] = t.mlflow.tracking_uri
        if t.mlflow.experiment_name:
            env["MLFLOW_EXPERIMENT_NAME"] = t.mlflow.experiment_name
        env["HF_MLFLOW_LOG_ARTIFACTS"] = "FALSE"  # the adapter goes to the output URI, not the tracking server
        env["MLFLOW_FLATTEN_PARAMS"] = "TRUE"
    if "wandb" in t.report_to and t.wandb is not None:
        w = t.wandb
        env.update(WANDB_PROJECT=w.project, WANDB_MODE=w.mode, WANDB_DIR=str(work / "wandb-dir"),
                   WANDB_CACHE_DIR=str(work / "wandb-cache"), WANDB_CONFIG_DIR=str(work / "wandb-config"),
                   WANDB_DATA_DIR=str(work / "wandb-data"),
                   WANDB_CONSOLE="off",  # stdout carries the trainer's JSON lines: no console capture
                   WANDB_SILENT="true", WANDB_LOG_MODEL="false", WANDB_WATCH="false",
                   WANDB_RUN_GROUP=identity.name or "lora-finetune")
        if w.entity:
            env["WANDB_ENTITY"] = w.entity
        if w.base_url:
            env["WANDB_BASE_URL"] = w.base_url
    return env


def run_name(identity: RunIdentity) -> str:
    """The run's name in every tracker: namespace/name of the LoRAFineTune (outside Kubernetes: lora-finetune)."""
    if identity.name:
        return f"{identity.namespace}/{identity.name}" if identity.namespace else identity.name
    return "lora-finetune"


def run_tags(identity: RunIdentity, resumed_from: int | None) -> dict[str, str]:
    tags = {"lft.name": identity.name, "lft.namespace": identity.namespace, "lft.uid": identity.uid,
            "lft.resultHash": identity.spec_hash,
            "lft.resumedFromStep": str(resumed_from) if resumed_from is not None else None}
    return {k: v for k, v in tags.items() if v}


# ---------------------------------------------------------------------------------------------
# pre-flight
# ---------------------------------------------------------------------------------------------
def check(config: TrainerConfig, env: Mapping[str, str] | None = None,
          installed: Callable[[str], bool] | None = None,
          probe: Callable[[MlflowSpec, Mapping[str, str]], None] | None = None) -> None:
    """Every integration in training.reportTo can work, or InvalidInput naming the field and why."""
    env = os.environ if env is None else env
    installed = installed or (lambda name: importlib.util.find_spec(name) is not None)
    t = config.training
    for name in t.report_to:
        if not any(installed(p) for p in PACKAGES[name]):
            raise InvalidInput(
                Reason.TRACKING_UNAVAILABLE,
                f"training.reportTo {name}: the Python package {' or '.join(PACKAGES[name])} is not installed in the "
                f"trainer image; use an image that has it (the project's lft/trainer images do) or remove {name} "
                "from training.reportTo", field="training.reportTo")
    if "wandb" in t.report_to and t.wandb is not None and t.wandb.mode == "online" and not env.get("WANDB_API_KEY"):
        raise InvalidInput(
            Reason.MISSING_CREDENTIALS,
            "training.wandb.mode online needs WANDB_API_KEY in the trainer's environment: name a Secret holding it "
            "in training.wandb.credentialsSecretRef, or set training.wandb.mode offline",
            field="training.wandb.credentialsSecretRef")
    if "mlflow" in t.report_to and t.mlflow is not None:
        (probe or probe_mlflow)(t.mlflow, env)


def _auth_header(env: Mapping[str, str]) -> dict[str, str]:
    if env.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"}
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def probe_mlflow(spec: MlflowSpec, env: Mapping[str, str], sleep: Callable[[float], None] = time.sleep) -> None:
    """Ask the MLflow server for the experiment (REST API): it answers, and takes the credentials.

    Only http(s) servers are probed; connection errors are tried PROBE_ATTEMPTS times (about 10 s in all)."""
    uri = spec.tracking_uri.rstrip("/")
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    query = urllib.parse.urlencode({"experiment_name": spec.experiment_name or "Default"})
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/get-by-name?{query}",
                                     headers=_auth_header(env))
    where = f"training.mlflow.trackingUri {scrub(uri)}"
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # RESOURCE_DOES_NOT_EXIST: the experiment is created when the run starts
                return
            if exc.code in (401, 403):
                raise InvalidInput(
                    Reason.TRACKING_ACCESS_DENIED,
                    f"{where}: the server refused the credentials (HTTP {exc.code}); check the Secret named in "
                    "training.mlflow.credentialsSecretRef (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)",
                    field="training.mlflow.credentialsSecretRef") from None
            error = f"HTTP {exc.code} {exc.reason}"
        except (OSError, ValueError) as exc:  # refused, unresolvable, timed out, not a URL
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < PROBE_ATTEMPTS:
            sleep(2.0 * attempt)
    raise InvalidInput(Reason.TRACKING_UNREACHABLE, scrub(f"{where} cannot be reached from the trainer pod: {error}"),
                       field="training.mlflow.trackingUri")


# ---------------------------------------------------------------------------------------------
# the run (rank 0)
# ---------------------------------------------------------------------------------------------
def apply_env(config: TrainerConfig, work: Path, identity: RunIdentity) -> None:
    """Set tracking_env in this process (every rank: transformers reads it when the Trainer is built)."""
    if "wandb" in config.training.report_to:
        # Imported first: at import it prints a line to stdout when WANDB_MODE is offline; stdout is JSON lines.
        import transformers.integrations.integration_utils  # noqa: F401
    for key, value in tracking_env(config, work, identity).items():
        os.environ[key] = value


def _ui_link(uri: str, experiment_id: str, run_id: str) -> str | None:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class Tracker:
    """The tracking side of one attempt on rank 0: start(), sync() at every checkpoint, sync(final=True) at the
    end (ends the runs, then uploads), close() always (ends what is still open as FAILED, or KILLED when stopped)."""

    def __init__(self, config: TrainerConfig, work: Path, identity: RunIdentity, out: Storage,
                 stopping: Callable[[], bool] = lambda: False):
        self.config, self.work, self.identity, self.out, self.stopping = config, work, identity, out, stopping
        self.report_to = list(config.training.report_to)
        self.links = Artifacts()
        self._mlflow_open = False
        self.mlflow_run_id: str | None = None
        self._uploaded: dict[str, int] = {}  # remote path -> size uploaded (event and run files only grow)

    def start(self, resumed_from: int | None) -> None:
        if "mlflow" not in self.report_to:
            return
        import mlflow

        spec = self.config.training.mlflow
        mlflow.set_tracking_uri(spec.tracking_uri)
        if spec.experiment_name:
            mlflow.set_experiment(spec.experiment_name)
        run = mlflow.start_run(run_name=run_name(self.identity), tags=run_tags(self.identity, resumed_from))
        self._mlflow_open = True
        self.mlflow_run_id = run.info.run_id
        link = _ui_link(spec.tracking_uri, run.info.experiment_id, run.info.run_id)
        self.links = self.links.merged_with(Artifacts(mlflow_run=link))
        log.info("MLflow run %s started (%s)", run.info.run_id, link or scrub(spec.tracking_uri))

    def sync(self, final: bool = False) -> Artifacts:
        """Upload TensorBoard event files and W&B offline run files; the links to every tracker's run."""
        if final:
            self._end_runs("FINISHED")
        found = self.links
        tb_dir = self.work / contract.TENSORBOARD_DIR
        if "tensorboard" in self.report_to and tb_dir.is_dir():
            self._upload(tb_dir, contract.TENSORBOARD_DIR)
            found = found.merged_with(Artifacts(tensorboard=self.out.uri(contract.TENSORBOARD_DIR)))
        if "wandb" in self.report_to:
            found = found.merged_with(self._wandb())
        return found

    def _wandb(self) -> Artifacts:
        """Online: the run's page (once transformers' callback started it); offline: the run files, uploaded."""
        if self.config.training.wandb.mode == "online":
            live = sys.modules.get("wandb")
            if live is not None and live.run is not None:
                self.links = self.links.merged_with(Artifacts(wandb=live.run.url))
            return self.links
        runs = sorted((self.work / "wandb-dir" / "wandb").glob("offline-run-*"))
        for run_dir in (r for r in runs if r.is_dir() and not r.is_symlink()):
            self._upload(run_dir, f"{contract.WANDB_DIR}/{run_dir.name}")
        return Artifacts(wandb=self.out.uri(contract.WANDB_DIR)) if runs else Artifacts()

    def register_adapter(self, adapter_dir: Path) -> ModelRegistration | None:
        """training.mlflow.registeredModelName: the adapter to the MLflow model registry, after the run ended
        (model_registry); None when not asked for. Never raises."""
        request = model_registry.registration_request(self.config, self.identity, self.mlflow_run_id)
        if request is None:
            return None
        from mlflow.tracking import MlflowClient

        return model_registry.register(MlflowClient(tracking_uri=self.config.training.mlflow.tracking_uri), request,
                                       adapter_dir)

    def close(self) -> None:
        """End what is still open (an attempt that failed or was stopped); never raises."""
        try:
            self._end_runs("KILLED" if self.stopping() else "FAILED")
        except Exception as exc:  # the run's own outcome matters more
            log.warning("ending the tracking runs failed: %s", scrub(str(exc)))

    def _end_runs(self, status: str) -> None:
        if "wandb" in self.report_to:
            import wandb

            if wandb.run is not None:
                if self.config.training.wandb.mode == "online":
                    self.links = self.links.merged_with(Artifacts(wandb=wandb.run.url))
                wandb.finish(exit_code=0 if status == "FINISHED" else 1)
        if self._mlflow_open:
            import mlflow

            mlflow.end_run(status=status)
            self._mlflow_open = False

    def _upload(self, local: Path, rel: str) -> None:
        """A snapshot first (the writers append while we upload), then the files that grew since the last sync."""
        snap = self.work / "tracking-upload" / rel
        shutil.rmtree(snap, ignore_errors=True)
        shutil.copytree(local, snap, symlinks=True, ignore_dangling_symlinks=True)
        sizes = {p.relative_to(snap).as_posix(): p.stat().st_size for p in snap.rglob("*")
                 if p.is_file() and not p.is_symlink()}

        def unchanged(name: str) -> bool:
            return name not in sizes or self._uploaded.get(f"{rel}/{name}") == sizes[name]

        for digest in self.out.upload_dir(snap, rel, exclude=unchanged):
            self._uploaded[f"{rel}/{digest.name}"] = digest.size

