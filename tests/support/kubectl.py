"""A thin wrapper over the real kubectl binary: the e2e scenarios use what a user uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tests.support.kube import wait_until

DEFAULT_KUBECONFIG = "/var/lib/lft/kind/kubeconfig"  # the end-to-end cluster (hack/kind/up.sh)
DEFAULT_KUBECTL = "/var/cache/lft/bin/kubectl"


@dataclass
class Kube:
    kubectl: str
    kubeconfig: str

    @classmethod
    def from_env(cls) -> "Kube":
        kubectl = os.environ.get("LFT_KUBECTL") or (
            DEFAULT_KUBECTL if os.path.exists(DEFAULT_KUBECTL) else shutil.which("kubectl") or "kubectl")
        return cls(kubectl, os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG))

    def available(self) -> bool:
        if not os.path.exists(self.kubeconfig):
            return False
        return self.run("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0

    def run(self, *args: str, check: bool = True, timeout: float = 120, stdin: Optional[str] = None
            ) -> subprocess.CompletedProcess:
        cmd = [self.kubectl, "--kubeconfig", self.kubeconfig, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: dict, namespace: str) -> None:
        self.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))

    def lft(self, namespace: str, name: str) -> dict:
        return self.json("get", "lft", name, "-n", namespace)

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
        """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
        return wait_until(predicate, timeout, interval, what)

    def pods(self, namespace: str, name: str) -> list[dict]:
        return self.json("get", "pods", "-n", namespace, "-l", f"finetune.dev/name={name}")["items"]

    def events(self, namespace: str, name: str) -> list[dict]:
        return self.json("get", "events", "-n", namespace,
                         "--field-selector", f"involvedObject.kind=LoRAFineTune,involvedObject.name={name}")["items"]
