"""The multi-process launch (launcher.py): layout from the operator's env, torchrun's command line, and the
pod's result from its workers' result files (pure parts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lft_api.contract import TerminationMessage
from lft_api.spec import TrainerConfig, TrainingSpec
from lft_trainer.errors import InvalidInput
from lft_trainer.run import launcher
from lft_trainer.settings import Settings


def cfg(**training) -> TrainerConfig:
    return TrainerConfig.model_validate({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"},
                                         "training": training})


def test_num_processes_auto_is_one_per_gpu_or_one_on_cpu():
    assert TrainingSpec().num_processes == "auto" and TrainingSpec().nodes == 1
    assert TrainingSpec().processes_per_node(0) == 1 and TrainingSpec().processes_per_node(4) == 4
    assert TrainingSpec(numProcesses=3).processes_per_node(8) == 3
    assert TrainingSpec(nodes=2, numProcesses=2).world_size(0) == 4


@pytest.mark.parametrize("bad, where", [({"numProcesses": 0}, "numProcesses"), ({"numProcesses": 65}, "numProcesses"),
                                        ({"numProcesses": "many"}, "numProcesses"), ({"nodes": 0}, "nodes")])
def test_bad_counts_name_the_field(bad, where):
    with pytest.raises(ValueError) as err:
        TrainingSpec.model_validate(bad)
    assert where in str(err.value)


def test_one_node_keeps_its_former_result_hash_and_more_nodes_change_it():
    one, explicit_one, two = cfg(), cfg(nodes=1), cfg(nodes=2)
    assert one.result_hash() == explicit_one.result_hash() != two.result_hash()
    assert "nodes" not in json.dumps(one.to_wire()["training"]) or one.to_wire()["training"]["nodes"] == 1


def test_layout_from_the_operators_environment():
    env = {"LFT_NODE_RANK": "1", "LFT_MASTER_ADDR": "run-node-0.run-workers", "LFT_MASTER_PORT": "29511"}
    lay = launcher.layout(cfg(nodes=2, numProcesses=2), gpus=0, settings=Settings.from_environ(env))
    assert (lay.nodes, lay.per_node, lay.node_rank, lay.world_size) == (2, 2, 1, 4)
    assert (lay.master_addr, lay.master_port) == ("run-node-0.run-workers", 29511)
    one = launcher.layout(cfg(numProcesses=2), gpus=0, settings=Settings.from_environ({}))
    assert one.master_addr == "127.0.0.1" and one.node_rank == 0 and one.master_port > 0


def test_layout_refuses_a_rank_outside_the_nodes_and_a_missing_master():
    with pytest.raises(InvalidInput) as err:
        launcher.layout(cfg(nodes=2), gpus=0, settings=Settings.from_environ({"LFT_NODE_RANK": "2", "LFT_MASTER_ADDR": "m"}))
    assert err.value.reason == "InvalidConfig" and "0..1" in err.value.message
    with pytest.raises(InvalidInput) as err:
        launcher.layout(cfg(nodes=2), gpus=0, settings=Settings.from_environ({"LFT_NODE_RANK": "1"}))
    assert "LFT_MASTER_ADDR" in err.value.message


def test_launcher_only_for_more_than_one_process():
    assert not launcher.needs_launcher(cfg(), gpus=0)
    assert not launcher.needs_launcher(cfg(), gpus=1)
    assert launcher.needs_launcher(cfg(), gpus=2)  # auto: one per GPU
    assert launcher.needs_launcher(cfg(nodes=2), gpus=0)
    assert launcher.needs_launcher(cfg(numProcesses=2), gpus=0)


def test_torchrun_static_rendezvous_without_restarts():
    lay = launcher.Layout(nodes=3, per_node=2, node_rank=2, master_addr="r-node-0.svc", master_port=29500)
    argv = launcher.torchrun_argv(lay, shutdown_timeout=120)
    assert argv[:4] == [sys.executable, "-I", "-m", "torch.distributed.run"]
    assert argv[-6:] == ["--no-python", sys.executable, "-I", "-u", "-m", "lft_trainer"]
    for arg in ("--nnodes=3", "--nproc-per-node=2", "--node-rank=2", "--rdzv-backend=static",
                "--master-addr=r-node-0.svc", "--master-port=29500", "--max-restarts=0", "--shutdown-timeout=120"):
        assert arg in argv


def test_torchrun_starts_each_worker_as_isolated_python(monkeypatch):
    """torchrun's own parser: without --no-python it would run `sys.executable -u -m lft_trainer` (no -I)."""
    run = pytest.importorskip("torch.distributed.run")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else config_from_args sets it in this process
    lay = launcher.Layout(nodes=2, per_node=2, node_rank=1, master_addr="m", master_port=29500)
    argv = launcher.torchrun_argv(lay, shutdown_timeout=60)
    args = run.parse_args(argv[argv.index("torch.distributed.run") + 1:])
    assert args.no_python and not args.module and not args.run_path
    _, cmd, cmd_args = run.config_from_args(args)
    assert [cmd, *cmd_args] == [sys.executable, "-I", "-u", "-m", "lft_trainer"]


def test_torchrun_and_its_workers_ignore_pythonpath_and_the_working_directory(tmp_path, monkeypatch):
    """A real torchrun (one worker): code planted on PYTHONPATH or in the working directory runs in neither."""
    pytest.importorskip("torch.distributed.run")
    planted = tmp_path / "planted"
    planted.mkdir()
    for name in ("sitecustomize", "usercustomize", "lft_probe"):
        (planted / f"{name}.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'a').write('{name} ')\n")
    flags = tmp_path / "flags"
    probe = (f"import sys, os; open({str(flags)!r}, 'w').write(f'{{sys.flags.isolated}} {{os.environ[\"RANK\"]}}'); "
             "import importlib.util as u; assert u.find_spec('lft_probe') is None")
    monkeypatch.setattr(launcher, "WORKER", (*launcher.PYTHON, "-u", "-c", probe))
    lay = launcher.Layout(nodes=1, per_node=1, node_rank=0, master_addr="127.0.0.1", master_port=launcher._free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PET_"))}
    env.update(PYTHONPATH=str(planted), OMP_NUM_THREADS="1")
    proc = subprocess.run(launcher.torchrun_argv(lay, shutdown_timeout=30), env=env, cwd=planted,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert flags.read_text() == "1 0" and not (tmp_path / "ran").exists()


def _write(results, rank, msg: TerminationMessage) -> None:
    (results / f"rank-{rank}.json").write_text(json.dumps(msg.to_wire()))


def test_pod_result_is_its_lowest_ranks(tmp_path):
    lay = launcher.Layout(nodes=2, per_node=2, node_rank=1, master_addr="m", master_port=1)
    _write(tmp_path, 2, TerminationMessage(outcome="preempted", reason="Preempted", message="saved", step=6))
    _write(tmp_path, 3, TerminationMessage(outcome="error", reason="X", message="other"))
    got = launcher.pod_result(tmp_path, lay, code=1)  # torchrun fails when a worker exits 4: still preempted
    assert got.outcome == "preempted" and got.step == 6


def test_pod_result_without_a_result_or_with_a_failed_torchrun_is_an_error(tmp_path):
    lay = launcher.Layout(nodes=2, per_node=1, node_rank=0, master_addr="m", master_port=1)
    missing = launcher.pod_result(tmp_path, lay, code=1)
    assert missing.outcome == "error" and missing.reason == "WorkerFailed" and "rank 0" in missing.message
    _write(tmp_path, 0, TerminationMessage(outcome="succeeded", reason="Completed", message="ok"))
    assert launcher.pod_result(tmp_path, lay, code=0).outcome == "succeeded"
    failed = launcher.pod_result(tmp_path, lay, code=1)
    assert failed.outcome == "error" and "code 1" in failed.message


def test_waiting_for_the_master_ends_at_sigterm(monkeypatch):
    from lft_trainer.run.distributed import Preemption

    monkeypatch.setattr(launcher.socket, "getaddrinfo", lambda *a: (_ for _ in ()).throw(OSError("no such host")))
    monkeypatch.setattr(launcher.time, "sleep", lambda s: preemption.requested.set())  # SIGTERM while waiting
    preemption = Preemption()
    lay = launcher.Layout(nodes=2, per_node=1, node_rank=1, master_addr="run-node-0.run-trainer", master_port=1)
    assert launcher._wait_for_master(lay, preemption, 600) is False
    clock = iter(range(0, 10**6, 400))  # 400 s per look: past the 600 s deadline on the third, no SIGTERM
    monkeypatch.setattr(launcher.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(launcher.time, "sleep", lambda s: None)
    with pytest.raises(RuntimeError, match="run-node-0.run-trainer did not become resolvable"):
        launcher._wait_for_master(lay, Preemption(), 600)
