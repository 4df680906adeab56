"""The trainer's settings: read once from the environment (lft_trainer.settings), with the names and defaults the
operator and the image rely on."""

from __future__ import annotations

from pathlib import Path

from lft_api import contract
from lft_trainer import settings as s
from lft_trainer.settings import Settings


def test_an_empty_environment_gives_the_defaults() -> None:
    got = Settings.from_environ({})
    assert got == Settings()
    assert (got.config_path, got.termination_log) == (contract.DEFAULT_CONFIG_PATH, contract.DEFAULT_TERMINATION_LOG)
    assert (got.status_min_interval, got.rendezvous_timeout, got.shutdown_timeout) == (5.0, 600, 3600)
    assert not got.is_worker and got.rank == 0 and got.node_rank == 0 and got.ddp_timeout is None


def test_the_operators_and_the_launchers_variables() -> None:
    env = {contract.ENV_CONFIG_PATH: "/c.json", contract.ENV_RESOURCE_NAME: "ft", contract.ENV_RESOURCE_NAMESPACE: "ns",
           contract.ENV_RESOURCE_UID: "u1", contract.ENV_STATUS_MIN_INTERVAL: "0.5", contract.ENV_NODE_RANK: "1",
           contract.ENV_MASTER_ADDR: "m", contract.ENV_MASTER_PORT: "29511", "LOCAL_RANK": "3", "RANK": "5",
           s.ENV_DDP_TIMEOUT: "1800", s.ENV_RENDEZVOUS_TIMEOUT: "60", s.ENV_SHUTDOWN_TIMEOUT: "90",
           s.ENV_RESUME_DIR: "/r", s.ENV_RESUME_STEP: "40", s.ENV_GPU_MEMORY_GIB: "20"}
    got = Settings.from_environ(env)
    assert (got.config_path, got.name, got.namespace, got.uid, got.status_min_interval) == ("/c.json", "ft", "ns", "u1", 0.5)
    assert (got.node_rank, got.master_addr, got.master_port, got.local_rank, got.rank) == (1, "m", 29511, 3, 5)
    assert got.is_worker and (got.ddp_timeout, got.rendezvous_timeout, got.shutdown_timeout) == (1800, 60.0, 90)
    assert (got.resume_dir, got.resume_step, got.gpu_memory_gib) == ("/r", 40, 20.0)
    assert Settings.from_environ({contract.ENV_STATUS_MIN_INTERVAL: "soon"}).status_min_interval == 5.0


def test_the_names_the_operator_sets_on_multi_node_pods_are_the_trainers() -> None:
    from lft_operator import multinode

    assert {s.ENV_DDP_TIMEOUT, s.ENV_RENDEZVOUS_TIMEOUT} <= set(multinode.COMMUNICATION_DEFAULTS)
    assert f'"{s.ENV_SHUTDOWN_TIMEOUT}"' in Path(multinode.__file__).read_text()  # set from the chart's grace period
