"""Entry point of the trainer container: `python -m lft_trainer [--config PATH]`.

Reads the config (LFT_CONFIG, default /etc/lft/config.json), runs the training, writes the
termination message and exits with a contract.ExitCode:
  0 succeeded, 3 invalid input (do not retry), 4 preempted (checkpoint saved: start again), 1 error.
stdout carries JSON lines only (progress events, then one result or error line); human logs go to stderr.

With more than one process (training.nodes > 1 or numProcesses > 1) this process runs the pre-flight
and starts torchrun (launcher.py); the workers torchrun starts are `python -I -u -m lft_trainer` too.
The image runs it as `python -I -u -m lft_trainer` (isolated: no PYTHON* variable, user site or working
directory adds code; see trainer_image/Dockerfile).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import TerminationMessage

from .errors import InvalidInput, StorageError
from .security import scrubbing
from .settings import Settings

log = logging.getLogger("lft_trainer")  # not __name__: run as `python -m lft_trainer`, that is "__main__"


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def write_termination(msg: TerminationMessage, settings: Settings | None = None) -> None:
    path = (settings or Settings.from_environ()).termination_log
    try:
        with open(path, "w") as f:
            f.write(msg.encode())
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)


def finish(msg: TerminationMessage, details: dict | None = None, settings: Settings | None = None) -> int:
    """Write the termination message and one structured JSON line; return the exit code."""
    msg = TerminationMessage.model_validate(scrubbing.scrub_tree(msg.to_wire()))
    details = scrubbing.scrub_tree(details) if details else details
    write_termination(msg, settings)
    line = {"event": "result" if msg.outcome in ("succeeded", "preempted") else "error", **msg.to_wire()}
    if details:
        line.update(details)
    _emit(line)
    return int(contract.exit_code_for(msg.outcome))


def _failure(exc: BaseException) -> tuple[TerminationMessage, dict | None]:
    if isinstance(exc, InvalidInput):
        return TerminationMessage(outcome="invalid_input", reason=exc.reason, message=exc.message), exc.details()
    if isinstance(exc, StorageError):
        return TerminationMessage(outcome="error", reason=Reason.STORAGE_ERROR, message=str(exc)), None
    return TerminationMessage(outcome="error", reason=type(exc).__name__, message=f"{type(exc).__name__}: {exc}"), None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: list[str] | None = None) -> int:
    scrubbing.install()  # first: every later line on stdout/stderr is masked, tracebacks included
    _setup_logging()
    parser = argparse.ArgumentParser(prog="lft_trainer", description="LoRA fine-tuning trainer")
    settings = Settings.from_environ()  # the one read of the trainer's settings; passed down from here
    parser.add_argument("--config", default=settings.config_path)
    args = parser.parse_args(argv)

    from .run import distributed, train

    preemption = distributed.Preemption()
    preemption.install()  # from the start: a SIGTERM while loading still exits PREEMPTED, not killed mid-write
    is_child = settings.is_worker
    try:
        from .run.preflight import load_config

        config = load_config(args.config, settings)
        if not is_child:
            from .run import launcher

            if launcher.needs_launcher(config, _gpu_count()):
                return finish(launcher.launch(config, args.config, preemption, settings), settings=settings)
        from .reporting.progress import Reporter, make_reporter

        reporter = make_reporter(settings=settings) if distributed.is_main() else Reporter([])
        msg = train.run(config, reporter=reporter, preemption=preemption, settings=settings)
        details = None
    except Exception as exc:  # every failure ends with a reason, never a bare traceback only
        if not isinstance(exc, InvalidInput):
            log.exception("training failed")
        msg, details = _failure(exc)
        if is_child:
            _emit({"event": "error", "rank": distributed.rank(), **msg.to_wire()})
    if is_child:
        from .run.launcher import write_rank_result

        write_rank_result(msg, distributed.rank(), settings)
        return int(contract.exit_code_for(msg.outcome))
    return finish(msg, details, settings)

if __name__ == "__main__":
    sys.exit(main())
