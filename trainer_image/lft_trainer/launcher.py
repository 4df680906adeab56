"""training.numProcesses N > 1: this process becomes the parent of N training processes.

It runs the pre-flight once (fast failure; the ranks reuse its report, so the dataset is read once per
pod), downloads the model and the checkpoint to resume from, then starts N copies of `python -m
lft_trainer` with torchrun-style environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT; gloo on
CPU, NCCL on GPU), forwards SIGTERM to them, and reports rank 0's result.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lft_api import contract
from lft_api.contract import ExitCode, TerminationMessage
from lft_api.spec import TrainerConfig

from . import model, preflight, train
from .errors import InvalidInput
from .ownership import run_identity
from .resume import find_resume_point
from .storage import Storage

ENV_RESULT_FILE = "LFT_RESULT_FILE"  # where a launched rank 0 writes its TerminationMessage for the launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: TrainerConfig, config_path: str) -> TerminationMessage:
    import torch

    n = config.training.num_processes
    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < n:
        raise InvalidInput(preflight.UNSUPPORTED_HARDWARE, f"training.numProcesses {n} but this pod has "
                           f"{torch.cuda.device_count()} GPU(s)", field="training.numProcesses")
    work = train.work_dir()
    env = {**os.environ, **_prepare(config, work, cuda), train.ENV_WORK_DIR: str(work),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(n),
           "LOCAL_WORLD_SIZE": str(n), ENV_RESULT_FILE: str(work / "result.json"),
           contract.ENV_CONFIG_PATH: config_path}
    codes = _run_ranks(env, n)
    return _result(work / "result.json", codes)


def _prepare(config: TrainerConfig, work: Path, cuda: bool) -> dict[str, str]:
    """Pre-flight, model download and resume point, once for all ranks; returns their environment."""
    identity = run_identity(config)
    report = preflight.run_checks(config, work / "launcher", cuda, identity, check_output=True)
    env = preflight.save_report(report, work / "preflight-report.pickle")
    model.model_dir(config, work)  # a remote model is downloaded once, here, not by every rank
    resume = find_resume_point(config, Storage(config.output.uri, config.storage), identity, work / "resume")
    if resume is not None:
        env.update(resume.env())
    return env


def _run_ranks(env: dict[str, str], n: int) -> dict[int, int]:
    """Start the ranks, forward SIGTERM, and wait; one failed rank takes the others down. {rank: exit code}."""
    procs = []
    for r in range(n):
        child_env = {**env, "RANK": str(r), "LOCAL_RANK": str(r)}
        if r != 0:
            child_env[contract.ENV_RESOURCE_NAME] = ""  # only rank 0 reports status
        procs.append(subprocess.Popen([sys.executable, "-m", "lft_trainer"], env=child_env))

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    codes: dict[int, int] = {}
    while len(codes) < n:
        for r, p in enumerate(procs):
            if r not in codes and p.poll() is not None:
                codes[r] = p.returncode
                if p.returncode not in (ExitCode.SUCCEEDED, ExitCode.PREEMPTED):
                    # One rank died: the others would wait forever in a collective.
                    for q in procs:
                        if q.poll() is None:
                            q.kill()
        time.sleep(0.2)
    return codes


def _result(result_file: Path, codes: dict[int, int]) -> TerminationMessage:
    if not result_file.exists():
        return TerminationMessage(outcome="error", reason="WorkerFailed",
                                  message=f"training processes exited with codes {codes}")
    msg = TerminationMessage.model_validate(json.loads(result_file.read_text()))
    if msg.outcome == "succeeded" and any(c != 0 for c in codes.values()):
        return TerminationMessage(outcome="error", reason="WorkerFailed", message=f"exit codes {codes}")
    return msg


def write_rank_result(msg: TerminationMessage) -> None:
    """Rank 0 hands its result to the launcher."""
    if os.environ.get(ENV_RESULT_FILE):
        Path(os.environ[ENV_RESULT_FILE]).write_text(json.dumps(msg.to_wire()))
