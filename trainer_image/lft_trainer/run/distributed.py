"""The process's place in the torchrun group (RANK, WORLD_SIZE, LOCAL_WORLD_SIZE), and SIGTERM handling shared by every rank."""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Processes in this pod (torchrun's LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def is_main() -> bool:
    return rank() == 0


class Preemption:
    """Set by SIGTERM; the training loop checks it at every step end (all ranks agree, see the callback)."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def install(self) -> None:
        def handler(signum, frame):
            if not self.requested.is_set():
                log.warning("SIGTERM: saving a checkpoint at the end of this step, then exiting")
            self.requested.set()

        signal.signal(signal.SIGTERM, handler)
