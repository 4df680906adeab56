"""Fault injection and checks for the end-to-end fault scenarios (test_faults.py).

- `restart_components`: stop cluster components and bring them back (hack/kind/restart.sh: the kind cluster's
  nodes are containers).
- `OperatorApiCut`: drops every operator replica's traffic to the API server (iptables in the pod's network
  namespace, entered through its container's PID, on its node) and restores it.
- `FlakyProxy` (tests/support/s3.py) on the Docker bridge stands between a trainer and the S3 server.
- `verify_adapter` / `verify_checkpoints`: download what a run left in the bucket and compare every
  file with the sha256 of its manifest (status.adapter.files, training_summary.json, checkpoint manifests).
- `report`: one quotable line per scenario, `SCENARIO <name>: final state <phase> after <s> s (...)`,
  printed, appended to _out/test/e2e-scenarios.txt (LFT_TEST_OUT) and repeated in pytest's summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.kubectl import Kube

REPO = Path(__file__).resolve().parents[2]
BUCKET = "lft"
SERVICE_IP = "10.96.0.1"  # the kubernetes Service (kind's default service CIDR)
RESULTS: list[str] = []  # the SCENARIO lines of this session, for pytest's terminal summary


# --- reporting ----------------------------------------------------------------------------------

def results_file() -> Path:
    return REPO / os.environ.get("LFT_TEST_OUT", "_out/test") / "e2e-scenarios.txt"


def report(scenario: str, phase: str, seconds: float, **details: Any) -> str:
    line = f"SCENARIO {scenario}: final state {phase} after {seconds:.1f} s"
    if details:
        line += " (" + ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in details.items()) + ")"
    print(line, flush=True)
    RESULTS.append(line)
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
    return line


def _fmt(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, float) else str(v)


# --- reading the cluster while parts of it are down ---------------------------------------------

def lft_or_none(kube: Kube, ns: str, name: str) -> dict | None:
    """The resource, or None while the API server does not answer."""
    try:
        proc = kube.run("get", "lft", name, "-n", ns, "-o", "json", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def wait_final(kube: Kube, ns: str, name: str, timeout: float, interval: float = 0.5) -> dict:
    """Poll until the resource is Succeeded or Failed (API errors are waited out); the last object."""
    deadline = time.monotonic() + timeout
    last: dict | None = None
    while time.monotonic() < deadline:
        obj = lft_or_none(kube, ns, name)
        if obj is not None:
            last = obj
            if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return obj
        time.sleep(interval)
    status = (last or {}).get("status", {})
    raise AssertionError(f"{name} reached no final state in {timeout:.0f} s: phase {status.get('phase')!r}, "
                         f"message {status.get('message')!r}, progress {status.get('progress', {}).get('display')!r}")


def assert_succeeded(obj: dict) -> None:
    status = obj.get("status", {})
    assert status.get("phase") == "Succeeded", (
        f"{obj['metadata']['name']} ended {status.get('phase')}: {status.get('message')}; "
        f"attempts {json.dumps(status.get('attemptHistory'))}")


def wait_progress(kube: Kube, ns: str, name: str, min_step: int = 1, timeout: float = 240) -> int:
    """Wait until the trainer reported step >= min_step (the trainer is past its start-up); the step."""
    def step():
        obj = lft_or_none(kube, ns, name) or {}
        status = obj.get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            raise AssertionError(f"{name} ended {status['phase']} before step {min_step}: {status.get('message')}")
        got = status.get("progress", {}).get("step") or 0
        return got if got >= min_step else None
    return kube.wait_for(f"{name} at step {min_step}", step, timeout, interval=0.5)


def cluster_healthy(kube: Kube, timeout: float = 180) -> None:
    """Every node is Ready and the operator Deployment available again (left as the next scenario needs it)."""
    kube.wait_for("API server", kube.available, timeout, interval=1)
    kube.run("wait", "--for=condition=Ready", "nodes", "--all", f"--timeout={int(timeout)}s", timeout=timeout + 10)
    kube.run("rollout", "status", "deploy/lora-finetune-operator", "-n", "lft-system", f"--timeout={int(timeout)}s",
             timeout=timeout + 10)


# --- checks of what is in the bucket -------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def keys_under(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def verify_adapter(s3, obj: dict, prefix: str) -> int:
    """Every adapter file in status.adapter.files and in training_summary.json is in the bucket with that
    size and sha256, and the adapter directory holds nothing else. Returns the number of files checked."""
    status = obj["status"]
    adapter = status.get("adapter") or {}
    assert adapter.get("uri") == f"s3://{BUCKET}/{prefix}/adapter", (
        f"status.adapter {adapter}; message {status.get('message')!r}; attempts {status.get('attemptHistory')}")
    status_files = {f["name"]: f for f in adapter.get("files", [])}
    assert status_files, f"status.adapter lists no files: {adapter}"
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/training_summary.json")["Body"].read())
    manifest = {f["name"]: f for f in summary["files"]}
    for name, f in status_files.items():  # the status may carry fewer (4 KiB termination message)
        assert manifest.get(name) == f, f"{name}: status {f} != summary {manifest.get(name)}"
    remote = {k[len(prefix) + len("/adapter/"):] for k in keys_under(s3, f"{prefix}/adapter/")}
    assert remote == set(manifest), f"adapter files in the bucket {sorted(remote)} != summary {sorted(manifest)}"
    for name, f in manifest.items():
        data = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/adapter/{name}")["Body"].read()
        assert len(data) == f["size"] and _sha256(data) == f["sha256"], f"adapter/{name} does not match its sha256"
    return len(manifest)


def verify_checkpoints(s3, prefix: str) -> list[int]:
    """Every checkpoint with a manifest has all its files with the manifest's sizes and sha256; the steps."""
    steps = []
    for key in keys_under(s3, f"{prefix}/checkpoints/"):
        if not key.endswith("/manifest.json"):
            continue
        base = key[: -len("manifest.json")]
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        for f in manifest["files"]:
            data = s3.get_object(Bucket=BUCKET, Key=base + f["name"])["Body"].read()
            assert len(data) == f["size"] and _sha256(data) == f["sha256"], f"{base}{f['name']} != its manifest"
        steps.append(manifest["step"])
    return sorted(steps)


# --- faults --------------------------------------------------------------------------------------

def restart_components(component: str, down: float = 0, node: str = "") -> dict[str, float]:
    """Stop `component` ("control-plane": etcd + kube-apiserver; "node": kubelet + containerd of `node`, every
    container on it killed), stay down `down` s, start until ready. {stopped, down, started} in s."""
    cmd = ["bash", str(REPO / "hack/kind/restart.sh"), "--down", str(down), component, *([node] if node else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[1:])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    last = proc.stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in (item.split("=") for item in last.split())}


def on_node(node: str) -> list[str]:
    """The prefix that runs a command on `node`: in its container (a kind node)."""
    return ["docker", "exec", node]


def container_pid(container_id: str, node: str) -> int:
    """The PID of a pod's container as its node sees it, from the node's containerd."""
    out = subprocess.run([*on_node(node), "crictl", "inspect", "-o", "json", container_id],
                         check=True, capture_output=True, text=True)
    return int(json.loads(out.stdout)["info"]["pid"])


class OperatorApiCut:
    """Drop every packet between the operator pod and the API server, then let them through again.

    iptables DROP rules in the pod's own network namespace (entered with nsenter through the PID of its
    container): the watch connections stay open but go silent, as with a broken network path, instead of
    being closed. Both addresses the pod may use are covered: the kubernetes Service (10.96.0.1:443, what
    in-cluster config uses) and the API server's own (the Service's endpoints). The kubelet's liveness probes
    (from the node to the pod's port) still pass.
    """

    COMMENT = "lft-e2e-operator-api-cut"

    def __init__(self, kube: Kube):
        self.kube = kube
        self.pids: list[tuple[str, int]] = []  # (node, PID there)
        self.pods: list[str] = []
        self.rules: list[list[str]] = []

    def _api_addresses(self) -> list[tuple[str, int]]:
        """The kubernetes Service and the API server's own addresses (its EndpointSlice)."""
        slices = self.kube.json("get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes")
        own = [(addr, port["port"]) for sl in slices["items"] for port in sl.get("ports") or []
               for ep in sl.get("endpoints") or [] for addr in ep["addresses"]]
        assert own, f"no endpoint of the kubernetes Service: {slices}"
        return [(SERVICE_IP, 443), *own]

    def _rules(self) -> list[list[str]]:
        out = []
        for ip, port in self._api_addresses():
            out.append(["OUTPUT", "-p", "tcp", "-d", ip, "--dport", str(port)])
            out.append(["INPUT", "-p", "tcp", "-s", ip, "--sport", str(port)])
        return out

    def _iptables(self, node_pid: tuple[str, int], op: str, rule: list[str]) -> None:
        chain, match = rule[0], rule[1:]
        node, pid = node_pid
        cmd = [*on_node(node), "nsenter", "-t", str(pid), "-n", "iptables", "-w", op, chain, *match,
               "-m", "comment", "--comment", self.COMMENT, "-j", "DROP"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def find_operator(self) -> None:
        """Every running replica: with leader election a standby would otherwise take over, and the scenario
        is the operator as a whole cut off from the API server (HA has its own test)."""
        pods = self.kube.json("get", "pods", "-n", "lft-system", "-l", "app.kubernetes.io/name=lora-finetune-operator")
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        assert running, [p["metadata"]["name"] for p in pods["items"]]
        self.pods, self.pids = [], []
        for pod in running:
            container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
            node = pod["spec"]["nodeName"]
            pid = container_pid(container_id, node)
            assert pid > 0, f"operator container {container_id} has no process"
            self.pods.append(pod["metadata"]["name"])
            self.pids.append((node, pid))

    def cut(self) -> None:
        if not self.pids:
            self.find_operator()
        self.rules = self._rules()
        for pid in self.pids:
            for rule in self.rules:
                self._iptables(pid, "-I", rule)

    def restore(self) -> None:
        for pid in self.pids:
            for rule in self.rules:
                try:
                    self._iptables(pid, "-D", rule)
                except subprocess.CalledProcessError:
                    pass  # not there (never inserted, or the container is gone with its namespace)
