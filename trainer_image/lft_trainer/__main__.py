"""Entry point of the trainer container: `python -m lft_trainer [--config PATH]`.

Reads the config (LFT_CONFIG, default /etc/lft/config.json), runs the training, writes the
termination message and exits with a contract.ExitCode:
  0 succeeded, 3 invalid input (do not retry), 4 preempted (checkpoint saved: start again), 1 error.
stdout carries JSON lines only (progress events, then one result or error line); human logs go to stderr.

With training.numProcesses N > 1 this process becomes a launcher: it runs the pre-flight once (fast
failure), downloads the checkpoint to resume from, then starts N copies of itself with torchrun-style
environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT; gloo on CPU, NCCL on GPU), forwards
SIGTERM to them, and reports rank 0's result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lft_api import contract
from lft_api.contract import ExitCode, TerminationMessage

from .errors import InvalidInput, StorageError
from .retry import scrub

log = logging.getLogger("lft_trainer")
ENV_RESULT_FILE = "LFT_RESULT_FILE"  # where a launched rank 0 writes its TerminationMessage for the launcher


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def write_termination(msg: TerminationMessage) -> None:
    path = os.environ.get(contract.ENV_TERMINATION_LOG, contract.DEFAULT_TERMINATION_LOG)
    try:
        with open(path, "w") as f:
            f.write(msg.encode())
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)


def finish(msg: TerminationMessage, details: dict | None = None) -> int:
    """Write the termination message and one structured JSON line; return the exit code."""
    msg.message = scrub(msg.message)
    write_termination(msg)
    line = {"event": "result" if msg.outcome in ("succeeded", "preempted") else "error", **msg.to_wire()}
    if details:
        line.update(details)
    _emit(line)
    from .train import exit_code_for

    return int(exit_code_for(msg))


def _failure(exc: BaseException) -> tuple[TerminationMessage, dict | None]:
    if isinstance(exc, InvalidInput):
        return TerminationMessage(outcome="invalid_input", reason=exc.reason, message=exc.message), exc.details()
    if isinstance(exc, StorageError):
        return TerminationMessage(outcome="error", reason="StorageError", message=str(exc)), None
    return TerminationMessage(outcome="error", reason=type(exc).__name__, message=f"{type(exc).__name__}: {exc}"), None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config, config_path: str) -> int:
    """Parent of N training processes (see module docstring)."""
    import tempfile

    import torch

    from . import checkpoints, train

    n = config.training.num_processes
    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < n:
        raise InvalidInput("UnsupportedHardware", f"training.numProcesses {n} but this pod has "
                           f"{torch.cuda.device_count()} GPU(s)", field="training.numProcesses")
    work = Path(os.environ.get(train.ENV_WORK_DIR) or tempfile.mkdtemp(prefix="lft-work-"))
    work.mkdir(parents=True, exist_ok=True)
    _, _, out = train.run_preflight(config, work / "launcher", cuda, check_storage=True)
    train._model_dir(config, work)  # a remote model is downloaded once, here, not by every rank
    env = {**os.environ, train.ENV_WORK_DIR: str(work), train.ENV_SKIP_STORAGE_CHECK: "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(n),
           "LOCAL_WORLD_SIZE": str(n), ENV_RESULT_FILE: str(work / "result.json"),
           contract.ENV_CONFIG_PATH: config_path}
    found = checkpoints.download_latest_checkpoint(out, work / "resume")
    if found is not None:
        ref, path = found
        env[train.ENV_RESUME_DIR] = str(path)
        env[train.ENV_RESUME_STEP] = str(ref.step)
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
    result_file = work / "result.json"
    if result_file.exists():
        msg = TerminationMessage.model_validate(json.loads(result_file.read_text()))
        if msg.outcome == "succeeded" and any(c != 0 for c in codes.values()):
            msg = TerminationMessage(outcome="error", reason="WorkerFailed", message=f"exit codes {codes}")
    else:
        msg = TerminationMessage(outcome="error", reason="WorkerFailed",
                                 message=f"training processes exited with codes {codes}")
    return finish(msg)


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    parser = argparse.ArgumentParser(prog="lft_trainer", description="LoRA fine-tuning trainer")
    parser.add_argument("--config", default=os.environ.get(contract.ENV_CONFIG_PATH, contract.DEFAULT_CONFIG_PATH))
    args = parser.parse_args(argv)

    from . import train

    preemption = train.Preemption()
    preemption.install()  # from the start: a SIGTERM while loading still exits PREEMPTED, not killed mid-write
    is_child = "LOCAL_RANK" in os.environ
    try:
        from .preflight import load_config

        config = load_config(args.config)
        if config.training.num_processes > 1 and not is_child:
            return launch(config, args.config)
        from .progress import Reporter, make_reporter

        reporter = make_reporter() if train.is_main() else Reporter([])
        msg = train.run(config, reporter=reporter, preemption=preemption)
        if is_child:
            if train.is_main() and os.environ.get(ENV_RESULT_FILE):
                Path(os.environ[ENV_RESULT_FILE]).write_text(json.dumps(msg.to_wire()))
            return int(train.exit_code_for(msg))
        return finish(msg)
    except Exception as exc:  # every failure ends with a reason, never a bare traceback only
        if not isinstance(exc, InvalidInput):
            log.exception("training failed")
        msg, details = _failure(exc)
        if is_child:
            if train.is_main() and os.environ.get(ENV_RESULT_FILE):
                Path(os.environ[ENV_RESULT_FILE]).write_text(json.dumps(msg.to_wire()))
            _emit({"event": "error", "rank": train.rank(), **msg.to_wire()})
            return int(train.exit_code_for(msg))
        return finish(msg, details)


if __name__ == "__main__":
    sys.exit(main())
