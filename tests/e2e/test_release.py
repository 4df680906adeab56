"""End-to-end: the operator installed the way a user installs a release. hack/test-all.sh runs `make release`
against the local OCI registry (hack/registry.sh) and deploys with `helm install oci://...` (hack/deploy.sh with
LFT_CHART); no image of the release was loaded into the cluster's containerd: the kubelet pulled each one from
the registry, by the digest the chart pins. Without LFT_CHART (a checkout's chart) this skips, or fails with
LFT_REQUIRE_RELEASE=1.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.scenarios import finetune, wait_phase

pytestmark = pytest.mark.e2e
CHART = os.environ.get("LFT_CHART", "")
VERSION = os.environ.get("LFT_CHART_VERSION", "")
HELM = os.environ.get("LFT_HELM", "/var/cache/lft/bin/helm")


@pytest.fixture(scope="module")
def release():
    if not CHART.startswith("oci://"):
        if os.environ.get("LFT_REQUIRE_RELEASE") == "1":
            pytest.fail("LFT_CHART is not an oci:// chart: the operator was not installed from a registry")
        pytest.skip("installed from the checkout's chart (LFT_CHART unset)")
    return CHART.removeprefix("oci://").split("/", 1)[0]  # the registry's host:port


def pulled_by_digest(container: dict, status: dict, registry: str, repository: str) -> str:
    """The container's image is the registry's, pinned by digest, and the image the node runs has that digest."""
    image = container["image"]
    assert image.startswith(f"{registry}/{repository}:{VERSION}") and "@sha256:" in image, image
    digest = image.split("@", 1)[1]
    # containerd reports the repository digest it pulled (the manifest's): an image loaded from Docker would
    # carry another (docker save writes its own manifest).
    assert status["imageID"] == f"{registry}/{repository}@{digest}", (status["imageID"], image)
    return digest


def test_the_operator_and_the_trainer_come_from_the_released_chart_and_registry(kube, release, s3_endpoint,
                                                                              namespace):
    listed = json.loads(subprocess.run([HELM, "--kubeconfig", kube.kubeconfig, "list", "-n", "lft-system",
                                        "-o", "json"], capture_output=True, text=True, check=True).stdout)
    (chart,) = [r["chart"] for r in listed if r["name"] == "lora-finetune-operator"]
    assert chart == f"lora-finetune-operator-{VERSION}"
    (operator,) = [p for p in kube.json("get", "pods", "-n", "lft-system", "-l",
                                        "app.kubernetes.io/name=lora-finetune-operator")["items"]
                   if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")][:1]
    pulled_by_digest(operator["spec"]["containers"][0], operator["status"]["containerStatuses"][0], release,
                     "lft-operator")

    kube.apply(finetune(namespace, "released", s3_endpoint, max_steps=20, every_steps=10), namespace)
    wait_phase(kube, namespace, "released", "Succeeded", 600)
    (pod,) = kube.pods(namespace, "released")
    pulled_by_digest(pod["spec"]["containers"][0], pod["status"]["containerStatuses"][0], release, "lft-trainer")
