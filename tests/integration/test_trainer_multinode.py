"""The trainer's multi-node path without Kubernetes: two "pods" as two `python -m lft_trainer` processes with the
environment the operator gives each pod (LFT_NODE_RANK, LFT_MASTER_ADDR on loopback), real S3 (moto), gloo.

Each pod runs the pre-flight, then torchrun with a static rendezvous; rank 0 uploads. Compared with the one-pod
run on the same data: the loss drops alike, and the two ranks see distinct rows (twice the tokens per step, and
the summary's dataShards: the fingerprints of the rows each rank trained on).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.trainer_run import DATASET, config, subprocess_env

pytestmark = pytest.mark.integration


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pods(cfg: dict, s3_server, tmp_path: Path, name: str) -> list[subprocess.Popen]:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    nodes, port, procs = cfg["training"].get("nodes", 1), str(_port()), []
    for rank in range(nodes):
        env = subprocess_env(s3_server, tmp_path, f"{name}-{rank}", uid="uid-mn")
        env.update(LFT_NODE_RANK=str(rank), LFT_MASTER_ADDR="127.0.0.1", LFT_MASTER_PORT=port)
        if nodes == 1:
            env.pop("LFT_MASTER_ADDR")
        procs.append(subprocess.Popen([sys.executable, "-m", "lft_trainer", "--config", str(path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def test_two_pods_train_like_one_with_distinct_shards(s3_bucket, s3_server, tiny_model, tmp_path):
    common = dict(maxSteps=16, evalSteps=16, batchSize=4, loggingSteps=4)
    # The example file repeats rows (294 distinct of 480): without repeats, a row on two ranks is the sampler's.
    unique = tmp_path / "unique.jsonl"
    unique.write_text("".join(dict.fromkeys(DATASET.read_text().splitlines(keepends=True))))
    one = finish(start_pods(config(tiny_model, s3_bucket.uri("one"), s3_bucket.endpoint_url, str(unique), **common),
                            s3_server, tmp_path, "one"))
    assert one[0][0] == 0, one[0][2][-3000:]
    two = finish(start_pods(config(tiny_model, s3_bucket.uri("two"), s3_bucket.endpoint_url, str(unique), nodes=2,
                                   numProcesses=1, **common), s3_server, tmp_path, "two"))
    assert [code for code, _, _ in two] == [0, 0], two[0][2][-3000:] + two[1][2][-3000:]
    a = json.loads(s3_bucket.get_bytes("one/training_summary.json"))
    b = json.loads(s3_bucket.get_bytes("two/training_summary.json"))
    assert (a["nodes"], a["worldSize"]) == (1, 1)
    assert (b["nodes"], b["processesPerNode"], b["worldSize"], b["steps"]) == (2, 1, 2, 16)
    # Distinct shards: each step trains on 2 x 4 rows, different rows per rank, so about twice the tokens of
    # the one-pod run (the same rows on both ranks would make the second rank's tokens a copy of the first's,
    # and with the sampler's shared seed the first 64 rows are what both see: checked through the loss below).
    ratio = b["tokensSeen"] / a["tokensSeen"]
    assert 1.7 < ratio < 2.3, (a["tokensSeen"], b["tokensSeen"])
    # Directly: the rows each rank trained on in the first epoch (fingerprints of their tokens).
    shards = b["dataShards"]
    assert [r["rank"] for r in shards["ranks"]] == [0, 1] and all(r["rows"] > 0 for r in shards["ranks"]), shards
    assert shards["ranks"][0]["digest"] != shards["ranks"][1]["digest"]
    assert shards["rowsOnSeveralRanks"] <= 4, shards  # at most the rows repeated to even out the last batch
    assert shards["distinctRows"] >= sum(r["distinctRows"] for r in shards["ranks"]) - 4
    assert a["dataShards"]["rowsOnSeveralRanks"] == 0 and len(a["dataShards"]["ranks"]) == 1
    before, after_one, after_two = (a["metrics"]["evalLossBefore"], a["metrics"]["evalLossAfter"],
                                    b["metrics"]["evalLossAfter"])
    # Same model, same eval rows; the mean is over other batches (per-batch means, 2 ranks): close, not equal.
    assert b["metrics"]["evalLossBefore"] == pytest.approx(before, rel=5e-3)
    assert after_two < before and after_one < before
    assert abs(after_two - after_one) < 0.25 * (before - after_one), (before, after_one, after_two)
    # Rank 0 alone wrote the results; the other pod exited 0 with its own (non-reporting) result.
    assert "two/adapter/adapter_model.safetensors" in s3_bucket.keys("two/")
    assert json.loads((tmp_path / "two-0.term").read_text())["adapter"]["files"]
    assert json.loads((tmp_path / "two-1.term").read_text())["outcome"] == "succeeded"


def test_sigterm_on_every_pod_checkpoints_exits_4_and_both_resume(s3_bucket, s3_server, tiny_model, tmp_path):
    cfg = config(tiny_model, s3_bucket.uri("mn"), s3_bucket.endpoint_url, maxSteps=60, evalSteps=60, loggingSteps=1,
                 nodes=2, numProcesses=1, batchSize=4)
    cfg["checkpointing"] = {"everySteps": 10, "keepLast": 2}
    procs = start_pods(cfg, s3_server, tmp_path, "first")
    errs: list[str] = []
    for p in procs[1:]:
        threading.Thread(target=lambda p=p: (errs.extend(p.stderr), p.stdout.read()), daemon=True).start()
    threading.Thread(target=lambda: errs.extend(procs[0].stderr), daemon=True).start()
    signalled = False
    for line in procs[0].stdout:  # rank 0's progress: SIGTERM to both pods once a checkpoint is uploaded
        if not signalled and '"kind":"checkpoint"' in line:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            signalled = True
    codes = [p.wait(timeout=300) for p in procs]
    time.sleep(0.5)
    assert signalled and codes == [4, 4], (codes, "".join(errs[-60:]))
    term = json.loads((tmp_path / "first-0.term").read_text())
    assert term["outcome"] == "preempted" and 10 <= term["step"] < 60
    stopped = term["step"]
    assert f"mn/checkpoints/checkpoint-{stopped}/manifest.json" in s3_bucket.keys("mn/")

    second = finish(start_pods(cfg, s3_server, tmp_path, "second"))
    assert [c for c, _, _ in second] == [0, 0], second[0][2][-3000:] + second[1][2][-3000:]
    term2 = json.loads((tmp_path / "second-0.term").read_text())
    assert term2["resumedFromStep"] == stopped and term2["step"] == 60
    summary = json.loads(s3_bucket.get_bytes("mn/training_summary.json"))
    assert summary["resumedFromStep"] == stopped and summary["worldSize"] == 2


def test_a_bad_row_stops_every_pod_in_its_pre_flight_before_torchrun(s3_bucket, s3_server, tiny_model, tmp_path):
    """Each pod runs the pre-flight itself, before torchrun: a bad row ends every pod with exit 3 (invalid input,
    final for the gang), naming the file and row, and no pod starts a worker (no rank result) or waits for one."""
    rows = DATASET.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(rows[:2]) + '{"messages": [{"role": "robot", "content": "beep"}]}\n' + "".join(rows[3:]))
    procs = start_pods(config(tiny_model, s3_bucket.uri("bad"), s3_bucket.endpoint_url, str(bad), nodes=2,
                              numProcesses=1), s3_server, tmp_path, "bad")
    results = finish(procs, timeout=120)
    assert [code for code, _, _ in results] == [3, 3], [r[2][-2000:] for r in results]
    for rank in (0, 1):
        term = json.loads((tmp_path / f"bad-{rank}.term").read_text())
        assert term["outcome"] == "invalid_input" and term["message"].startswith(f"{bad} row 3: messages[0].role"), term
        ran = tmp_path / f"bad-{rank}-work" / "results"
        assert not ran.exists() or not any(ran.iterdir()), sorted(ran.iterdir())  # no worker wrote a result
    assert not s3_bucket.keys("bad/adapter/")
