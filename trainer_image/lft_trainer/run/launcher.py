"""More than one training process (training.nodes > 1 or numProcesses > 1): this process starts them
with PyTorch's own launcher, `torch.distributed.run` (torchrun), with a static rendezvous.

Once per pod, before any worker starts: the pre-flight (fast failure, exit 3; the workers reuse its
report), the model download and the checkpoint to resume from. Then torchrun starts this pod's
workers (`python -I -u -m lft_trainer`, isolated like torchrun itself) with node rank LFT_NODE_RANK, master
LFT_MASTER_ADDR (the cluster IP of the run's Service in front of the node-rank-0 pod; 127.0.0.1 on node 0
and for one pod; LFT_NODE_RANK is the pod's completion index in the attempt's Indexed Job); gloo on CPU, NCCL on GPU. SIGTERM goes to torchrun,
which forwards it to the workers: they agree on a step, save a checkpoint (rank 0 uploads it) and exit
preempted. Each worker hands its result to this process through a file; the pod reports the result
of its lowest rank (rank 0's on node 0: the adapter, the summary; the other pods exit likewise).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import TerminationMessage
from lft_api.spec import TrainerConfig

from ..errors import InvalidInput
from ..model import adapters
from ..model import loading as model
from ..settings import ENV_RESULT_DIR, ENV_WORK_DIR, Settings
from ..storage.ownership import run_identity
from ..storage.store import Storage
from . import preflight, train
from .resume import find_resume_point


@dataclass(frozen=True)
class Layout:
    """Where this pod's processes sit in the run."""

    nodes: int
    per_node: int
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.per_node


def layout(config: TrainerConfig, gpus: int, settings: Settings) -> Layout:
    """This pod's layout from the config and the settings the operator sets (pure)."""
    nodes = config.training.nodes
    node_rank = settings.node_rank
    if not 0 <= node_rank < nodes:
        raise InvalidInput(Reason.INVALID_CONFIG, f"{contract.ENV_NODE_RANK}={node_rank} is outside 0..{nodes - 1} "
                           f"(training.nodes {nodes})", field="training.nodes")
    if nodes > 1 and not settings.master_addr:
        raise InvalidInput(Reason.INVALID_CONFIG, f"training.nodes {nodes} needs {contract.ENV_MASTER_ADDR}, the "
                           "node-rank-0 pod's address (the operator sets it)", field="training.nodes")
    # Node 0 is the master: it reaches itself over loopback (through its own Service it would need hairpin NAT).
    # One Indexed Job's pods share one environment, so the operator sets the Service's address on every node.
    addr = "127.0.0.1" if node_rank == 0 else settings.master_addr or "127.0.0.1"
    port = settings.master_port or (contract.DEFAULT_MASTER_PORT if nodes > 1 else _free_port())
    return Layout(nodes, config.training.processes_per_node(gpus), node_rank, addr, port)


def needs_launcher(config: TrainerConfig, gpus: int) -> bool:
    return config.training.nodes > 1 or config.training.processes_per_node(gpus) > 1


# Python in isolated mode (-I), as the image's ENTRYPOINT: PYTHONPATH, the other PYTHON* variables, the user's
# site-packages and the working directory are ignored, so nothing in the pod's environment adds code. The
# image's .pth (site-packages) still puts the code on sys.path.
PYTHON = (sys.executable, "-I")
# torchrun's own way to start a worker is `sys.executable -u [-m] script` (or PYTHON_EXEC's): no -I.
# With --no-python it runs the "script" as it is: our interpreter with our flags.
WORKER = (*PYTHON, "-u", "-m", "lft_trainer")


def torchrun_argv(lay: Layout, shutdown_timeout: int) -> list[str]:
    """The torchrun command line of one pod (pure). No restarts: a failed attempt is retried by the operator,
    every pod at once, from the newest checkpoint. torchrun and its workers run isolated (PYTHON, WORKER)."""
    return [*PYTHON, "-m", "torch.distributed.run",
            f"--nnodes={lay.nodes}", f"--nproc-per-node={lay.per_node}", f"--node-rank={lay.node_rank}",
            "--rdzv-backend=static", f"--master-addr={lay.master_addr}", f"--master-port={lay.master_port}",
            "--max-restarts=0", f"--shutdown-timeout={shutdown_timeout}", "--no-python", *WORKER]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: TrainerConfig, config_path: str, preemption, settings: Settings) -> TerminationMessage:
    import torch

    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    lay = layout(config, gpus, settings)
    if cuda and gpus < lay.per_node:
        raise InvalidInput(Reason.UNSUPPORTED_HARDWARE, f"training.numProcesses {lay.per_node} but this pod has "
                           f"{gpus} GPU(s)", field="training.numProcesses")
    work = train.work_dir(settings)
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    # The workers' environment: the pod's, with what they take from this process (they read it as their Settings).
    env = {**os.environ, **_prepare(config, work, cuda, lay, settings), ENV_WORK_DIR: str(work),
           ENV_RESULT_DIR: str(results), contract.ENV_CONFIG_PATH: config_path}
    if not _wait_for_master(lay, preemption, settings.rendezvous_timeout):
        return TerminationMessage(outcome="preempted", reason=Reason.PREEMPTED, message="stopped before training started")
    code = _run_torchrun(torchrun_argv(lay, settings.shutdown_timeout), env, preemption)
    return pod_result(results, lay, code)


def _prepare(config: TrainerConfig, work: Path, cuda: bool, lay: Layout, settings: Settings) -> dict[str, str]:
    """Pre-flight, model download and resume point, once per pod; returns the workers' environment.
    Only node 0 checks the output (write access, ownership): its rank 0 writes there."""
    identity = run_identity(config)
    report = preflight.run_checks(config, work / "launcher", cuda, identity, check_output=lay.node_rank == 0,
                                 settings=settings)
    env = preflight.save_report(report, work / "preflight-report.pickle")
    model.model_dir(config, work)  # a remote model is downloaded once per pod, here, not by every rank
    adapters.local_dir(config, work)  # so is model.adapter
    # The operator starts an attempt's pods only when every pod of the previous attempt is gone: no upload
    # is in flight, so every pod finds the same newest complete checkpoint.
    resume = find_resume_point(config, Storage(config.output.uri, config.storage), identity, work / "resume", settings)
    if resume is not None:
        env.update(resume.env())
    return env


def _wait_for_master(lay: Layout, preemption, timeout: float) -> bool:
    """A pod's DNS name resolves once its pod exists: the pods of a run start in any order. False: SIGTERM
    came first (nothing to checkpoint yet)."""
    deadline = time.monotonic() + timeout
    while not preemption.requested.is_set():
        if lay.nodes == 1:
            return True
        try:
            socket.getaddrinfo(lay.master_addr, lay.master_port)
            return True
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the master pod {lay.master_addr} did not become resolvable: {exc}") from None
            time.sleep(1.0)
    return False


def _run_torchrun(argv: list[str], env: dict[str, str], preemption) -> int:
    proc = subprocess.Popen(argv, env=env)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # torchrun forwards it to its workers

    signal.signal(signal.SIGTERM, forward)
    if preemption.requested.is_set():  # SIGTERM between the start and the handler
        forward(signal.SIGTERM, None)
    return proc.wait()


def pod_result(results: Path, lay: Layout, code: int) -> TerminationMessage:
    """The result of this pod's lowest rank (on node 0: rank 0's, with the adapter), or why there is none."""
    first = lay.node_rank * lay.per_node
    found = results / f"rank-{first}.json"
    if not found.exists():
        return TerminationMessage(outcome="error", reason=Reason.WORKER_FAILED,
                                  message=f"torchrun exited with code {code} and rank {first} left no result")
    msg = TerminationMessage.model_validate(json.loads(found.read_text()))
    if msg.outcome == "succeeded" and code != 0:
        others = sorted(p.name for p in results.glob("rank-*.json"))
        return TerminationMessage(outcome="error", reason=Reason.WORKER_FAILED,
                                  message=f"torchrun exited with code {code} (results: {', '.join(others)})")
    return msg


def write_rank_result(msg: TerminationMessage, rank: int, settings: Settings) -> None:
    """A launched worker hands its result to its pod's launcher."""
    if settings.result_dir:
        Path(settings.result_dir, f"rank-{rank}.json").write_text(json.dumps(msg.to_wire()))
