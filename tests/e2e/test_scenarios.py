"""End-to-end scenarios: the user's story on the real (kind) cluster, with the operator
installed by Helm, the CPU tiny-model trainer image and the S3 server the pods write to."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest

from tests.support.cli import run_lft
from tests.support.scenarios import (
    BUCKET,
    EXAMPLE,
    S3_SECRET_KEY,
    condition,
    finetune,
    keys_under,
    output_prefix,
    summary,
    trainer_started,
    wait_checkpoint,
    wait_phase,
)
from tests.support.trainer_run import logits_before_and_after

pytestmark = pytest.mark.e2e
def test_happy_path(kube, s3, s3_endpoint, s3_host_endpoint, namespace, tmp_path):
    name = "tiny"
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=150), namespace)
    seen_phases, progress_seen = [], []
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        status = kube.lft(namespace, name).get("status", {})
        p = status.get("phase")
        if p and (not seen_phases or seen_phases[-1] != p):
            seen_phases.append(p)
        if p == "Running" and status.get("progress", {}).get("step"):
            progress_seen.append((status["progress"]["step"], status.get("metrics", {}).get("loss")))
        if p in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    assert seen_phases[-1] == "Succeeded", seen_phases
    assert "Running" in seen_phases
    assert progress_seen, "no progress (step/loss) was visible while Running"
    assert any(loss is not None for _, loss in progress_seen)
    # What a user types: kubectl wait, get, describe.
    kube.run("wait", "--for=condition=Succeeded", f"lft/{name}", "-n", namespace, "--timeout=30s")
    table = kube.run("get", "lft", name, "-n", namespace).stdout
    assert "Succeeded" in table and "150/150" in table, table
    described = kube.run("describe", "lft", name, "-n", namespace).stdout
    for reason in ("JobCreated", "Started", "Succeeded"):
        assert reason in described, described
    _pod_security_restricted_was_enforced(kube, namespace)
    obj = kube.lft(namespace, name)
    adapter = obj["status"]["adapter"]
    assert adapter["uri"] == f"s3://{BUCKET}/{output_prefix(namespace, name)}/adapter"
    keys = keys_under(s3, output_prefix(namespace, name) + "/adapter/")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        assert any(k.endswith("/" + f) for k in keys), keys
    assert summary(s3, namespace, name)["metrics"]
    assert obj["status"]["attempts"] == 1
    assert S3_SECRET_KEY not in json.dumps(obj) + described
    cli_on_the_finished_run(kube, namespace, name, tmp_path, s3_host_endpoint)


def cli_on_the_finished_run(kube, namespace: str, name: str, tmp_path, host_endpoint: str) -> None:
    """kubectl lft on the run above: the trainer pod's real log, wait, the adapter and loss.png from the bucket
    (through the endpoint this host reaches: on kind the pods' endpoint is a cluster address)."""
    def lft(*args: str):
        out = run_lft(*args, "-n", namespace, kubeconfig=kube.kubeconfig, home=tmp_path, timeout=120)
        assert out.returncode == 0, (args, out.stderr)
        assert S3_SECRET_KEY not in out.stdout + out.stderr
        return out.stdout

    log = lft("logs", name)
    pod = kube.pods(namespace, name)[-1]["metadata"]["name"]
    assert log == kube.run("logs", pod, "-n", namespace, "-c", "trainer").stdout
    assert "servability:" in log
    assert lft("logs", name, "-f", "--tail", "1").strip() == log.strip().splitlines()[-1]  # ended: -f returns
    assert f"{name} Succeeded (Completed)" in lft("wait", name, "--timeout", "10s")
    assert "Eval loss:" in lft("status", name)
    endpoint = ("--endpoint-url", host_endpoint)
    assert "verified against the sha256 manifest" in lft("pull", name, str(tmp_path / "adapter"), *endpoint)
    adapter_serves_on_its_base(tmp_path / "adapter", tmp_path / "base")
    lft("plot", name, str(tmp_path / "loss.png"), *endpoint)
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def adapter_serves_on_its_base(adapter: Path, base: Path) -> None:
    """The adapter the run pulled names its base as the spec gave it (the image's model directory, not
    the pod's working copy) and loads with PEFT onto that base, changing its logits. The base is rebuilt
    here from the seed and dataset the image's was built from (tiny_model: same inputs, same weights)."""
    from lft_trainer.model import tiny_model

    given = EXAMPLE["spec"]["model"]["name"]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == given
    tiny_model.build(base)
    _, before, after = logits_before_and_after(base, adapter)
    assert after.shape == before.shape and (after - before).abs().max().item() > 0.1


def test_pod_killed_mid_run_resumes(kube, s3, s3_endpoint, namespace):
    name = "killed"
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=400, every_steps=20), namespace)
    step = wait_checkpoint(kube, namespace, name)
    assert step > 0
    pods = [p["metadata"]["name"] for p in kube.pods(namespace, name) if p["status"].get("phase") == "Running"]
    assert len(pods) == 1, pods
    kube.run("delete", "pod", pods[0], "-n", namespace, "--wait=false")
    obj = wait_phase(kube, namespace, name, "Succeeded", 480)
    assert obj["status"]["attempts"] == 2
    resumed = summary(s3, namespace, name).get("resumedFromStep")
    assert resumed and resumed > 0, f"second attempt did not resume from a checkpoint: {resumed}"
    assert obj["status"]["progress"]["step"] == 400


def test_suspend_then_resume(kube, s3, s3_endpoint, namespace):
    name = "suspended"
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=400, every_steps=20), namespace)
    wait_checkpoint(kube, namespace, name)
    kube.run("patch", "lft", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_phase(kube, namespace, name, "Suspended", 180)
    kube.wait_for("trainer pod gone", lambda: not [
        p for p in kube.pods(namespace, name) if p["status"].get("phase") in ("Pending", "Running")
        and not p["metadata"].get("deletionTimestamp")], 180)
    assert condition(kube.lft(namespace, name), "Suspended").get("status") == "True"
    kube.run("patch", "lft", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    obj = wait_phase(kube, namespace, name, "Succeeded", 480)
    resumed = summary(s3, namespace, name).get("resumedFromStep")
    assert resumed and resumed > 0, resumed
    reasons = {e["reason"] for e in kube.events(namespace, name)}
    assert {"Suspended", "Resumed"} <= reasons, reasons
    assert obj["status"]["progress"]["step"] == 400


def test_bad_dataset_fails_fast_without_retries(kube, s3, s3_endpoint, namespace):
    name = "baddata"
    rows = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                     {"role": "assistant", "content": f"a{i}"}]}) for i in range(20)]
    rows[6] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]})
    key = f"{output_prefix(namespace, name)}/data/train.jsonl"
    s3.put_object(Bucket=BUCKET, Key=key, Body="\n".join(rows).encode())
    started = time.monotonic()
    kube.apply(finetune(namespace, name, s3_endpoint, dataset=f"s3://{BUCKET}/{key}"), namespace)
    obj = wait_phase(kube, namespace, name, "Failed", 60)
    elapsed = time.monotonic() - started
    message = obj["status"].get("message", "")
    assert "row 7" in message and "robot" in message, message
    failed = condition(obj, "Failed")
    assert failed.get("status") == "True" and failed.get("reason") == "InvalidDataset", failed
    events = kube.events(namespace, name)
    assert any(e["reason"] == "Failed" and "row 7" in e.get("message", "") for e in events), events
    time.sleep(5)  # no retry may follow
    # The Job's podFailurePolicy fails it on exit code 3: no replacement pod, exactly one ran the trainer.
    ran = [p["metadata"]["name"] for p in kube.pods(namespace, name) if trainer_started(p)]
    assert len(ran) == 1, ran
    assert kube.lft(namespace, name)["status"]["attempts"] == 1
    print(f"bad dataset failed after {elapsed:.1f} s")


def test_delete_while_running_collects_children_keeps_checkpoints(kube, s3, s3_endpoint, namespace):
    name = "deleted"
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=400, every_steps=20), namespace)
    wait_checkpoint(kube, namespace, name)
    kube.run("delete", "lft", name, "-n", namespace, "--wait=true", "--timeout=120s")

    def children():
        left = []
        for kind in ("job", "configmap", "serviceaccount", "role", "rolebinding", "pod"):
            items = kube.json("get", kind, "-n", namespace, "-l", f"finetune.dev/name={name}")["items"]
            left += [f"{kind}/{i['metadata']['name']}" for i in items]
        return left
    kube.wait_for("children garbage-collected", lambda: not children(), 180, interval=2)
    checkpoints = [k for k in keys_under(s3, output_prefix(namespace, name) + "/checkpoints/")
                   if k.endswith("manifest.json")]
    assert checkpoints, "uploaded checkpoints were lost with the resource"


def test_operator_pod_deleted_mid_run(kube, s3, s3_endpoint, namespace):
    name = "oprestart"
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=300, every_steps=50), namespace)
    wait_phase(kube, namespace, name, "Running", 240)
    kube.run("delete", "pod", "-n", "lft-system", "-l", "app.kubernetes.io/name=lora-finetune-operator",
             "--wait=false")
    obj = wait_phase(kube, namespace, name, "Succeeded", 480)
    jobs = kube.json("get", "jobs", "-n", namespace, "-l", f"finetune.dev/name={name}")["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert obj["status"]["attempts"] == 1
    logs = kube.run("logs", "-n", "lft-system", "deploy/lora-finetune-operator", check=False).stdout
    assert S3_SECRET_KEY not in logs


def test_planted_secrets_reach_no_output(kube, s3, s3_endpoint, namespace):
    """The values of the storage Secret the pod receives (whatever their keys are called) and a presigned
    URL in an error reach neither the status, the Events, the pod's log nor its termination message.
    (Another Secret by secretKeyRef needs the admin policy's allowedSecrets: builders' unit test.)"""
    name = "planted"
    hf, other = "hf_E2EPlantedToken0123456789abcdef", "e2e-planted-other-value"
    patch = json.dumps({"stringData": {"HF_TOKEN": hf, "SOME_SETTING": other}})
    kube.run("patch", "secret", "s3-credentials", "-n", namespace, "-p", patch)
    body = finetune(namespace, name, s3_endpoint)
    spec = body["spec"]
    spec["model"]["name"] = ("https://models.example/tiny?X-Amz-Credential=E2EPLANTEDCRED&X-Amz-Signature=E2EPLANTEDSIG"
                             f"&k={S3_SECRET_KEY}&t={hf}&o={other}")
    spec["runPolicy"] = {"backoffLimit": 0}
    kube.apply(body, namespace)
    obj = wait_phase(kube, namespace, name, "Failed", 180)
    logs = kube.run("logs", "-n", namespace, "-l", f"finetune.dev/name={name}", "--tail=-1").stdout
    outputs = {
        "status": json.dumps(obj["status"]),
        "events": json.dumps(kube.events(namespace, name)),
        "log": logs,
        "termination message": json.dumps([p.get("status") for p in kube.pods(namespace, name)]),
        # From Status on: the spec above it shows the URI as the user wrote it.
        "describe": kube.run("describe", "lft", name, "-n", namespace).stdout.split("\nStatus:", 1)[1],
    }
    assert "***" in outputs["status"] and "models.example" in outputs["status"], outputs["status"]
    assert logs.strip(), "the trainer logged nothing"
    for where, text in outputs.items():
        for secret in (S3_SECRET_KEY, hf, other, "E2EPLANTEDCRED", "E2EPLANTEDSIG"):
            assert secret not in text, f"{secret} in the {where}: {text[-1500:]}"


def lease_holder_pod(kube) -> str:
    """The operator pod that holds the leader Lease (holder identity: pod name + "_" + a random suffix)."""
    lease = kube.json("get", "lease", "lora-finetune-operator", "-n", "lft-system")
    return (lease["spec"].get("holderIdentity") or "").rsplit("_", 1)[0]


def test_leader_pod_deleted_mid_run_standby_takes_over(kube, s3, s3_endpoint, namespace):
    """The chart's default: 2 replicas. Deleting the leader's pod mid-run hands the Lease to the other
    replica; the run succeeds with one Job, one attempt and each Event once."""
    name = "leaderloss"
    deploy = kube.json("get", "deploy", "lora-finetune-operator", "-n", "lft-system")
    assert deploy["spec"]["replicas"] == 2 and deploy["status"].get("readyReplicas") == 2, deploy["status"]
    kube.apply(finetune(namespace, name, s3_endpoint, max_steps=300, every_steps=50), namespace)
    wait_phase(kube, namespace, name, "Running", 240)
    leader = kube.wait_for("a leader", lambda: lease_holder_pod(kube), 30)
    pods = kube.json("get", "pods", "-n", "lft-system", "-l", "app.kubernetes.io/name=lora-finetune-operator")
    standby = [p["metadata"]["name"] for p in pods["items"] if p["metadata"]["name"] != leader]
    assert leader in [p["metadata"]["name"] for p in pods["items"]] and standby

    deleted = time.monotonic()
    kube.run("delete", "pod", leader, "-n", "lft-system", "--wait=false")
    new = kube.wait_for("another leader", lambda: (h := lease_holder_pod(kube)) not in ("", leader) and h, 60,
                        interval=0.2)
    print(f"\nLease handed over from {leader} to {new} {time.monotonic() - deleted:.1f} s after the delete")
    assert new in standby  # the standby that was already running, not the replacement pod

    obj = wait_phase(kube, namespace, name, "Succeeded", 480)
    jobs = kube.json("get", "jobs", "-n", namespace, "-l", f"finetune.dev/name={name}")["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert obj["status"]["attempts"] == 1
    time.sleep(3)  # Events are posted in the background after the status write
    reasons = collections.Counter(e["reason"] for e in kube.events(namespace, name))
    assert {"JobCreated", "Succeeded"} <= set(reasons) and all(n == 1 for n in reasons.values()), reasons


def _pod_security_restricted_was_enforced(kube, namespace):
    """The trainer pod above ran in a namespace where the API server's Pod Security admission enforces
    "restricted" (the namespace fixture labels every scenario's namespace), and the admission is live: a pod
    that breaks the profile is refused there."""
    labels = kube.json("get", "namespace", namespace)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels
    pods = kube.json("get", "pods", "-n", namespace, "-l", "finetune.dev/name")["items"]
    # Admitted (created) there, and the run above Succeeded with it; the pod's own phase may lag a moment.
    assert pods and all(p["spec"]["securityContext"].get("runAsNonRoot") for p in pods), pods
    rogue = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rogue", "namespace": namespace},
             "spec": {"containers": [{"name": "c", "image": "lft/base:bookworm", "securityContext": {"privileged": True}}]}}
    refused = kube.run("create", "--dry-run=server", "-f", "-", check=False, stdin=json.dumps(rogue))
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
