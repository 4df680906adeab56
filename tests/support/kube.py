"""Helpers for tests against a real kube-apiserver: a small REST client, the operator as a subprocess,
and "playing the kubelet" (binding, starting and ending the pods the real Job controller creates).
Fixtures using them: tests/integration/conftest.py.

    def test_x(kube, namespace, operator):
        kube.create_lft(namespace, "run", spec)
        pod = kube.wait_for_pod(namespace, "run")
        kube.kubelet_run(pod)                      # container running
        kube.kubelet_exit(pod, 0, message_json)    # container terminated
        kube.wait_lft(namespace, "run", lambda s: s.get("phase") == "Succeeded")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import config as kube_config
from kubernetes.client import Configuration

REPO = Path(__file__).resolve().parents[2]
DEFAULT_KUBECONFIG = "/var/lib/lft/cluster/kubeconfig"
KUBECTL = os.environ.get("LFT_KUBECTL", "/var/cache/lft/bin/kubectl")
CRD_FILE = REPO / "crds" / "finetune.dev_lorafinetunes.yaml"
LFT_API = "/apis/finetune.dev/v1alpha1"
NAME_LABEL = "finetune.dev/name"
NAMESPACE_PREFIX = "lft-it-"
FAKE_NODE = "lft-it-node"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}")


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        return self.body.get("message", "") if isinstance(self.body, dict) else str(self.body)


class Kube:
    """A small synchronous client for the tests (requests + the kubeconfig's client certificate)."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        cfg = Configuration()
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.base = cfg.host.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE replaces the cluster CA
        self.session.verify = cfg.ssl_ca_cert if cfg.verify_ssl else False
        if cfg.cert_file:
            self.session.cert = (cfg.cert_file, cfg.key_file)
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if token:
            self.session.headers["Authorization"] = token

    # --- REST ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json", **kw) -> Any:
        headers = {"Content-Type": content_type, **kw.pop("headers", {})}
        data = json.dumps(body) if body is not None else None
        resp = self.session.request(method, self.base + path, data=data, headers=headers, timeout=15, **kw)
        payload = (
            resp.json()
            if resp.content and resp.headers.get("Content-Type", "").startswith("application/json")
            else resp.text
        )
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, payload)
        return payload

    def get(self, path: str, **kw) -> Any:
        try:
            return self.request("GET", path, **kw)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def service_account_token(self, namespace: str, name: str, timeout: float = 30) -> str:
        """A bound token of the ServiceAccount (TokenRequest, what the kubelet mounts into pods), once the
        ServiceAccount exists (the operator creates it a moment after the resource)."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        wait_until(lambda: self.get(path), timeout, what=f"ServiceAccount {namespace}/{name}")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
        return self.create(f"{path}/token", body)["status"]["token"]

    def cluster_ca(self) -> bytes:
        """The CA of the API server's certificate, as pods find it in ca.crt (the kube-root-ca.crt ConfigMap)."""
        return self.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")["data"]["ca.crt"].encode()

    def create(self, path: str, body: dict, **kw) -> Any:
        return self.request("POST", path, body, **kw)

    def merge_patch(self, path: str, body: dict, **kw) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json", **kw)

    def delete(self, path: str, body: dict | None = None) -> Any:
        try:
            return self.request("DELETE", path, body)
        except ApiError as e:
            if e.status != 404:
                raise
            return None

    def install_crd(self, crd: dict, served: str, timeout: float = 30) -> None:
        """Create or replace `crd`, then wait until it is Established and the API path `served` answers."""
        path = f"{CRDS}/{crd['metadata']['name']}"
        existing = self.get(path)
        if existing is None:
            self.create(CRDS, crd)
        else:
            crd["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.request("PUT", path, crd)

        def established() -> bool:
            # A CRD created a moment ago has "conditions": null (seen on a fresh etcd).
            conds = ((self.get(path) or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        def answers() -> bool:
            try:
                return self.get(served) is not None
            except ApiError as e:  # a new CRD answers 429 "storage is (re)initializing" for a moment (1.34, 1.37)
                if e.status == 429:
                    return False
                raise

        wait_until(established, timeout, what=f"CRD {crd['metadata']['name']} established")
        wait_until(answers, timeout, what=f"{served} served")

    def items(self, path: str, **params: str) -> list[dict]:
        return self.request("GET", path, params=params)["items"]

    # --- LoRAFineTunes -------------------------------------------------------------------------

    def lft_path(self, ns: str, name: str | None = None, sub: str | None = None) -> str:
        path = f"{LFT_API}/namespaces/{ns}/lorafinetunes"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    def create_lft(self, ns: str, name: str, spec: dict) -> dict:
        body = {"apiVersion": "finetune.dev/v1alpha1", "kind": "LoRAFineTune", "metadata": {"name": name}, "spec": spec}
        return self.create(self.lft_path(ns), body)

    def lft(self, ns: str, name: str) -> dict | None:
        return self.get(self.lft_path(ns, name))

    def wait_lft(
        self, ns: str, name: str, predicate: Callable[[dict], Any], timeout: float = 30.0, what: str = ""
    ) -> dict:
        def check():
            body = self.lft(ns, name) or {}
            return body if predicate(body.get("status") or {}) else None

        try:
            return wait_until(check, timeout, what=what or f"lft {ns}/{name}")
        except AssertionError as e:
            status = (self.lft(ns, name) or {}).get("status")
            raise AssertionError(f"{e}\nstatus: {json.dumps(status, indent=1)}") from None

    def quota(self, ns: str, hard: dict[str, str]) -> None:
        """A ResourceQuota `q` in `ns`, once the quota controller has computed its usage (then it is enforced)."""
        body = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": hard}}
        self.create(f"/api/v1/namespaces/{ns}/resourcequotas", body)

        def enforced() -> bool:
            return bool((self.get(f"/api/v1/namespaces/{ns}/resourcequotas/q") or {}).get("status", {}).get("hard"))

        wait_until(enforced, 30, what="ResourceQuota status")

    def events(self, ns: str, name: str) -> list[dict]:
        return self.items(f"/api/v1/namespaces/{ns}/events", fieldSelector=f"involvedObject.name={name}")

    def event_reasons(self, ns: str, name: str) -> list[str]:
        events = sorted(self.events(ns, name), key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
        return [e["reason"] for e in events]

    # --- Jobs and pods -------------------------------------------------------------------------

    def jobs(self, ns: str, name: str) -> list[dict]:
        return self.items(f"/apis/batch/v1/namespaces/{ns}/jobs", labelSelector=f"{NAME_LABEL}={name}")

    def job(self, ns: str, name: str) -> dict | None:
        return self.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}-trainer")

    def job_condition(self, ns: str, name: str, type_: str) -> dict | None:
        job = self.job(ns, name) or {}
        return next((c for c in job.get("status", {}).get("conditions", []) if c["type"] == type_), None)

    def pods(self, ns: str, name: str) -> list[dict]:
        pods = self.items(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"{NAME_LABEL}={name}")
        return sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))

    def wait_for_pod(self, ns: str, name: str, count: int = 1, timeout: float = 60.0) -> dict:
        """A pod that has not ended yet, once at least `count` pods exist (the Job controller backs off
        between retries)."""

        def fresh() -> dict | None:
            pods = self.pods(ns, name)
            if len(pods) < count:
                return None
            live = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
            return live[-1] if live else None

        return wait_until(fresh, timeout, what=f"{count} pod(s) of {ns}/{name}")

    # --- playing the kubelet -------------------------------------------------------------------

    def _pod_path(self, pod: dict, sub: str | None = None) -> str:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        return f"{path}/{sub}" if sub else path

    def kubelet_bind(self, pod: dict) -> None:
        """Schedule the pod on the fake node: deleting it is then graceful, as with a real kubelet."""
        meta = pod["metadata"]
        current = self.get(self._pod_path(pod)) or {}
        if current.get("spec", {}).get("nodeName"):
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": FAKE_NODE},
        }
        self.create(self._pod_path(pod, "binding"), binding)

    def _container_status(self, pod: dict, state: dict) -> dict:
        image = pod["spec"]["containers"][0]["image"]
        return {
            "name": "trainer",
            "ready": "running" in state,
            "restartCount": 0,
            "image": image,
            "imageID": "",
            "state": state,
        }

    def kubelet_run(self, pod: dict) -> dict:
        status = {
            "phase": "Running",
            "startTime": _now(),
            "containerStatuses": [self._container_status(pod, {"running": {"startedAt": _now()}})],
        }
        return self.merge_patch(self._pod_path(pod, "status"), {"status": status})

    def kubelet_waiting(self, pod: dict, reason: str, message: str) -> dict:
        """The container cannot start (e.g. CreateContainerConfigError for a missing Secret)."""
        status = {"phase": "Pending", "containerStatuses": [
            self._container_status(pod, {"waiting": {"reason": reason, "message": message}})]}
        return self.merge_patch(self._pod_path(pod, "status"), {"status": status})

    def kubelet_exit(self, pod: dict, code: int, message: str = "", reason: str | None = None) -> dict:
        terminated = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "message": message,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [self._container_status(pod, {"terminated": terminated})],
        }
        return self.merge_patch(self._pod_path(pod, "status"), {"status": status})

    def remove_pods(self, namespace: str) -> None:
        """Remove every pod of a namespace at once: pods bound to the fake node would otherwise wait
        forever for a kubelet to confirm their graceful deletion, and the namespace with them."""
        for pod in self.items(f"/api/v1/namespaces/{namespace}/pods"):
            self.kubelet_remove(pod)

    def kubelet_remove(self, pod: dict) -> None:
        """What the kubelet does once a deleted pod's containers stopped: remove it for good."""
        self.delete(self._pod_path(pod), {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    """`python -m lft_operator` as a subprocess, watching only the tests' namespaces.

    Leader election is on, as in the chart: each instance elects itself on a Lease of its own (in
    `default`, removed on stop) unless LFT_LEADER_ELECTION_LEASE_NAME/_NAMESPACE make several share
    one; POD_NAME (default: the log file's stem) starts its holder identity."""

    def __init__(self, kubeconfig: str, log_path: Path, **env: str):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.own_lease = "LFT_LEADER_ELECTION_LEASE_NAME" not in env
        self.extra_env = {
            # The chart's policy is closed: only the default storage Secret (none here). The integration tests
            # name their storage and tracker Secrets, so they are allowed, as an admin would list them.
            "LFT_POLICY": json.dumps({"allowedStorageSecrets": ["s3", "s3-creds", "my-s3", "absent", "mlflow-creds"]}),
            "LFT_LEADER_ELECTION_LEASE_NAME": f"lft-it-{os.urandom(4).hex()}",
            "LFT_LEADER_ELECTION_NAMESPACE": "default",
            "POD_NAME": log_path.stem,
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.metrics_port = _free_port()
        self.liveness_port = _free_port()

    @property
    def lease_path(self) -> str:
        env = self.extra_env
        ns, name = env["LFT_LEADER_ELECTION_NAMESPACE"], env["LFT_LEADER_ELECTION_LEASE_NAME"]
        return f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "PYTHONPATH": f"{REPO / 'api'}:{REPO / 'operator'}",
            "LFT_NAMESPACES": f"{NAMESPACE_PREFIX}*",
            "LFT_TRAINER_IMAGE": "lft/trainer:it",
            "LFT_METRICS_PORT": str(self.metrics_port),
            "LFT_LIVENESS_PORT": str(self.liveness_port),
            "LFT_RESYNC_SECONDS": "10",
            "LFT_JSON_LOGS": "1",
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "lft_operator"], env=env, stdout=log, stderr=log, cwd=REPO)
        log.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                return requests.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(ready, 60, what="operator liveness endpoint")

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.own_lease:
            # A Lease of its own: the next start takes a new one instead of waiting for the dead holder's
            # to expire (test_operator_leader_election measures that wait, on a shared Lease).
            self._drop_lease()
            self.extra_env["LFT_LEADER_ELECTION_LEASE_NAME"] = f"lft-it-{os.urandom(4).hex()}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._drop_lease()

    def _drop_lease(self) -> None:
        if not self.own_lease:
            return
        try:
            Kube(self.kubeconfig).delete(self.lease_path)
        except ApiError as e:  # an operator's own credentials need not delete Leases (403): left behind
            if e.status != 403:
                raise

    def restart(self) -> None:
        self.kill()
        self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def kubectl(kube: Kube, *args: str) -> str:
    if not Path(KUBECTL).exists():
        pytest.skip(f"kubectl not found at {KUBECTL}")
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", kube.kubeconfig, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def kubectl_rows(kube: Kube, namespace: str, *args: str) -> list[dict[str, str]]:
    """`kubectl get lft` in `namespace` as rows of {column: cell}."""
    out = kubectl(kube, "get", "lft", "-n", namespace, *args)
    lines = [line for line in out.splitlines() if line.strip()]
    header = lines[0]
    # Columns are left-aligned at the header's word starts.
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


@contextlib.contextmanager
def fresh_namespace(kube: Kube, prefix: str = NAMESPACE_PREFIX) -> Iterator[str]:
    """A new namespace, deleted afterwards. The session's operator watches NAMESPACE_PREFIX* only."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        kube.delete(f"/api/v1/namespaces/{name}")
        kube.remove_pods(name)
