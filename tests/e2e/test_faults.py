"""Fault scenarios on the real cluster: every run ends in a true state (Succeeded) with an adapter whose
files match their sha256, however the infrastructure misbehaved in the middle of it.

1. The API server and etcd stop mid-run and come back (hack/kind/restart.sh control-plane).
2. The node's kubelet and containerd restart mid-run, its containers killed (a node crash): the trainer
   pod dies, and a new attempt resumes from the newest checkpoint.
3. The object store is unreachable for 30 s, cut in the middle of a checkpoint upload (a proxy on the
   Docker bridge in front of the S3 server).
4. The operator's connections to the API server go silent (packets dropped) while the run finishes;
   after they are let through again, the status converges within 60 s.

Each prints `SCENARIO <name>: final state <phase> after <s> s (...)` (also in _out/test/e2e-scenarios.txt
and in pytest's summary): the time from `kubectl apply` to the final state, and the fault's own timings.
"""

from __future__ import annotations

import time

import pytest

from tests.support import faults
from tests.support.faults import OperatorApiCut, assert_succeeded, report, restart_components, wait_final, wait_progress
from tests.support.s3 import FlakyProxy
from tests.support.scenarios import finetune, output_prefix, summary, wait_checkpoint

pytestmark = pytest.mark.e2e

# Long enough to fault mid-run, short enough for CI: the tiny model trains about 6.5 steps/s in its
# one-CPU pod on the 2-core CI machine, so 240 steps take about 37 s of training, 50 s from apply to
# Succeeded without a fault; a checkpoint every 40 steps (6 s).
STEPS = 240
EVERY = 40
OUTAGE = 30.0  # seconds the object store is cut and the operator's API traffic dropped
CONVERGE = 60.0  # the operator's status must be right within this long after its traffic is restored


def run_to_first_checkpoint(kube, namespace: str, name: str, endpoint: str) -> tuple[float, int, float]:
    """Apply the fault scenarios' run and wait for its first checkpoint: (start, step, seconds to it)."""
    started = time.monotonic()
    kube.apply(finetune(namespace, name, endpoint, max_steps=STEPS, every_steps=EVERY), namespace)
    step = wait_checkpoint(kube, namespace, name)
    return started, step, time.monotonic() - started


def test_control_plane_restarted_mid_run(kube, s3, s3_endpoint, namespace):
    name = "cprestart"
    started, step, faulted = run_to_first_checkpoint(kube, namespace, name, s3_endpoint)
    timings = restart_components("control-plane", down=5)
    back = time.monotonic()
    obj = wait_final(kube, namespace, name, timeout=420)
    done = time.monotonic()
    assert_succeeded(obj)
    status = obj["status"]
    assert status["attempts"] == 1, status.get("attemptHistory")  # the trainer never noticed
    assert status["progress"]["step"] == STEPS
    files = faults.verify_adapter(s3, obj, output_prefix(namespace, name))
    report("control-plane restart (etcd + kube-apiserver)", status["phase"], done - started,
           fault_at=faulted, checkpoint_step_at_fault=step, api_stopping=timings["stopped"],
           api_down=timings["down"], api_starting=timings["started"], final_state_after_api_back=done - back, attempts=status["attempts"],
           adapter_files_verified=files)
    faults.cluster_healthy(kube)


def test_node_runtime_restarted_mid_run(kube, s3, s3_endpoint, namespace):
    name = "noderestart"
    started, step, faulted = run_to_first_checkpoint(kube, namespace, name, s3_endpoint)
    running = next(p for p in kube.pods(namespace, name) if p["status"].get("phase") == "Running")
    pod = running["metadata"]["name"]
    # kubelet and containerd of the trainer's node: every container on the node is killed
    timings = restart_components("node", node=running["spec"]["nodeName"])
    back = time.monotonic()
    obj = wait_final(kube, namespace, name, timeout=480)
    done = time.monotonic()
    assert_succeeded(obj)
    status = obj["status"]
    history = status.get("attemptHistory") or []
    assert status["attempts"] >= 2 and history[0]["pod"] == pod, history  # the first pod died with the runtime
    resumed = summary(s3, namespace, name).get("resumedFromStep")
    assert resumed and resumed >= step, f"the new attempt did not resume from a checkpoint: {resumed}"
    assert status["progress"]["step"] == STEPS
    files = faults.verify_adapter(s3, obj, output_prefix(namespace, name))
    report("node runtime restart (kubelet + containerd)", status["phase"], done - started, fault_at=faulted,
           checkpoint_step_at_fault=step, node_stopping=timings["stopped"], node_starting=timings["started"],
           final_state_after_node_back=done - back,
           attempts=status["attempts"], first_attempt=f"{history[0].get('reason')} (exit code {history[0].get('exitCode')})", resumed_from_step=resumed,
           adapter_files_verified=files)
    faults.cluster_healthy(kube)


def test_object_store_unreachable_mid_run(kube, s3, s3_endpoint, bridge_ip, namespace):
    name = "s3cut"
    target_host, target_port = s3_endpoint.split("://", 1)[1].rsplit(":", 1)
    proxy = FlakyProxy(target_host, int(target_port), host=bridge_ip).start()
    try:
        prefix = output_prefix(namespace, name)
        # The cut starts the moment the trainer sends the first checkpoint file: mid-upload, mid-run.
        proxy.arm_outage(f"PUT /{faults.BUCKET}/{prefix}/checkpoints/".encode(), seconds=OUTAGE)
        started = time.monotonic()
        kube.apply(finetune(namespace, name, proxy.endpoint_url, max_steps=STEPS, every_steps=EVERY), namespace)
        kube.wait_for("the object store cut", lambda: proxy.outages, 240, interval=0.2)
        outage = proxy.outages[0]
        faulted = outage.started - started
        assert proxy.wait_outage_over(OUTAGE + 30)
        obj = wait_final(kube, namespace, name, timeout=420)
        done = time.monotonic()
    finally:
        proxy.stop()
    assert_succeeded(obj)
    status = obj["status"]
    assert status["attempts"] == 1, status.get("attemptHistory")  # retried inside the attempt: nothing lost
    assert status["progress"]["step"] == STEPS
    logs = kube.run("logs", "-n", namespace, "-l", f"finetune.dev/name={name}", "--tail=-1", check=False).stdout
    retries = sum(1 for line in logs.splitlines() if "storage: " in line and "; retry " in line)
    assert retries > 0, "the trainer logged no storage retry: the cut did not hit its traffic"
    files = faults.verify_adapter(s3, obj, prefix)
    steps = faults.verify_checkpoints(s3, prefix)
    assert steps and steps[-1] == STEPS, steps
    report("object store unreachable 30 s", status["phase"], done - started, fault_at=faulted,
           outage=outage.ended - outage.started, connections_reset=outage.reset_connections,
           storage_retries_logged=retries, final_state_after_store_back=done - outage.ended,
           attempts=status["attempts"], adapter_files_verified=files, checkpoints_verified=steps)


def test_operator_watch_cut_then_restored(kube, s3, s3_endpoint, namespace):
    name = "watchcut"
    steps = STEPS // 2  # finishes while the operator is cut off
    started = time.monotonic()
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=steps, every_steps=EVERY), namespace)
    wait_progress(kube, namespace, name, min_step=1)
    cut = OperatorApiCut(kube)
    try:
        cut.find_operator()
        cut.cut()
        cut_at = time.monotonic()

        def trainer_done():
            pods = kube.pods(namespace, name)
            return pods and all("terminated" in (cs.get("state") or {})
                                for p in pods for cs in p["status"].get("containerStatuses", []) or [{}])
        kube.wait_for("the trainer to finish while the operator is cut off", trainer_done, 180)
        trainer_done_at = time.monotonic()
        time.sleep(max(0.0, cut_at + OUTAGE - time.monotonic()))
        phase_while_cut = faults.lft_or_none(kube, namespace, name)["status"].get("phase")
    finally:
        cut.restore()
    restored = time.monotonic()
    # The trainer exited before the operator could see it: only the operator sets Succeeded.
    assert phase_while_cut == "Running", f"the operator wrote phase {phase_while_cut} while cut off"
    obj = wait_final(kube, namespace, name, timeout=300)
    done = time.monotonic()
    assert_succeeded(obj)
    converged = done - restored
    status = obj["status"]
    assert status["attempts"] == 1, status.get("attemptHistory")
    files = faults.verify_adapter(s3, obj, output_prefix(namespace, name))
    report("operator watch cut then restored", status["phase"], done - started, operator_cut=restored - cut_at,
           trainer_finished_after_cut=trainer_done_at - cut_at, converged_after_restore=converged,
           attempts=status["attempts"], adapter_files_verified=files)
    assert converged <= CONVERGE, f"status converged {converged:.1f} s after the operator's traffic was restored"
