"""Kueue's kustomize config, rewritten for a Kueue that runs as a host process (tests/cluster/kueue-up.sh).

The local cluster runs its control plane as host processes and has no cluster DNS, so Kueue runs on the
host too, and the API server reaches its webhook server at https://127.0.0.1:<port> instead of through
a Service. From the module's `config/components`:

- `crds DIR`: every CRD under crd/bases; those that upstream's kustomization gives the conversion webhook
  (crd/kustomization.yaml: crd/patches/webhook_in_*.yaml) get it with a URL; the others convert
  between v1beta1 and v1beta2 without one, as upstream installs them.
- `webhooks FILE`: webhook/manifests.yaml, only the webhooks of batch/v1 Jobs and of Kueue's own
  objects, each `clientConfig.service` replaced by a URL; renamed (lft-kueue-*) so that
  kueue-down.sh removes exactly these. The Job webhooks get a namespaceSelector: only namespaces
  that opt in (label) go through them, so a stopped Kueue never blocks Jobs elsewhere.
- `config`: the Kueue Configuration (config.kueue.x-k8s.io/v1beta2, as v0.17.0's
  config/components/manager/controller_manager_config.yaml) for that process.

Prints YAML documents. Pure functions below; the command line at the end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

MUTATING_NAME = "lft-kueue-mutating"
VALIDATING_NAME = "lft-kueue-validating"
# (apiGroup, resource) of the webhooks kept: the batch/v1 Job integration and Kueue's own objects.
KEPT_RESOURCES = {
    ("batch", "jobs"),
    ("kueue.x-k8s.io", "workloads"),
    ("kueue.x-k8s.io", "clusterqueues"),
    ("kueue.x-k8s.io", "localqueues"),
    ("kueue.x-k8s.io", "resourceflavors"),
    ("kueue.x-k8s.io", "cohorts"),
    ("kueue.x-k8s.io", "workloadpriorityclasses"),
}
# CRDs converted by Kueue's /convert endpoint (v0.17.0's crd/kustomization.yaml patches).
CONVERTED_CRDS = {
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
}
# Namespaces never queued (upstream's own selector for its pod webhooks).
SYSTEM_NAMESPACES = ["kube-system", "kueue-system"]
DEFAULT_NAMESPACE_LABEL = "kueue.lft.dev/enabled"


def _resources(webhook: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for rule in webhook.get("rules") or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                out.add((group, resource.split("/")[0]))  # workloads/status: a subresource of a kept one
    return out


def job_namespace_selector(label: str | None) -> dict[str, Any]:
    """Which namespaces' Jobs go through Kueue's Job webhooks: never the system ones; with `label`, only
    those labelled `label=true`."""
    expressions: list[dict[str, Any]] = [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(SYSTEM_NAMESPACES)}
    ]
    if label:
        expressions.append({"key": label, "operator": "In", "values": ["true"]})
    return {"matchExpressions": expressions}


def rewrite_webhooks(docs: Iterable[dict[str, Any]], base_url: str, ca_bundle: str,
                     namespace_label: str | None = DEFAULT_NAMESPACE_LABEL) -> list[dict[str, Any]]:
    """The Mutating/ValidatingWebhookConfigurations with only the kept webhooks, served at `base_url`."""
    out = []
    for doc in docs:
        if not doc or doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        kept = []
        for webhook in doc.get("webhooks") or []:
            resources = _resources(webhook)
            if not resources or not resources <= KEPT_RESOURCES:
                continue
            webhook = dict(webhook)
            service = (webhook.get("clientConfig") or {}).get("service") or {}
            path = service.get("path") or "/"
            webhook["clientConfig"] = {"url": base_url.rstrip("/") + path, "caBundle": ca_bundle}
            if ("batch", "jobs") in resources:
                webhook["namespaceSelector"] = job_namespace_selector(namespace_label)
            kept.append(webhook)
        if not kept:
            continue
        mutating = doc["kind"] == "MutatingWebhookConfiguration"
        out.append({
            "apiVersion": doc.get("apiVersion", "admissionregistration.k8s.io/v1"),
            "kind": doc["kind"],
            "metadata": {"name": MUTATING_NAME if mutating else VALIDATING_NAME,
                         "labels": {"app.kubernetes.io/managed-by": "lft-kueue-up"}},
            "webhooks": sorted(kept, key=lambda w: w["name"]),
        })
    return out


def rewrite_crd(crd: dict[str, Any], base_url: str, ca_bundle: str) -> dict[str, Any]:
    """A CRD; those in CONVERTED_CRDS convert through Kueue's /convert endpoint."""
    crd = dict(crd)
    spec = dict(crd.get("spec") or {})
    if (crd.get("metadata") or {}).get("name") in CONVERTED_CRDS:
        spec["conversion"] = {
            "strategy": "Webhook",
            "webhook": {
                "clientConfig": {"url": base_url.rstrip("/") + "/convert", "caBundle": ca_bundle},
                "conversionReviewVersions": ["v1"],
            },
        }
    crd["spec"] = spec
    return crd


def configuration(webhook_port: int, cert_dir: str, health_port: int, metrics_port: int,
                  namespace: str = "kueue-system", webhook_host: str = "127.0.0.1") -> dict[str, Any]:
    """Kueue's Configuration for a host process: its own certificates (no internal cert management), the
    webhook on `webhook_host` (loopback, or the Docker bridge where the API server runs in a kind node) and
    the probes on loopback, one instance (no leader election), the batch/v1 Job integration
    only, and only Jobs that name a queue (or get the namespace's default LocalQueue)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": namespace,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": webhook_host, "port": webhook_port, "certDir": cert_dir},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "clientConnection": {"qps": 50, "burst": 100},
        "integrations": {"frameworks": ["batch/job"]},
    }


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crds")
    c.add_argument("dir", type=Path)
    w = sub.add_parser("webhooks")
    w.add_argument("file", type=Path)
    w.add_argument("--namespace-label", default=DEFAULT_NAMESPACE_LABEL,
                   help="only namespaces with LABEL=true go through the Job webhooks ('' : all but the system ones)")
    for s in (c, w):
        s.add_argument("--url", required=True, help="base URL of the webhook server, e.g. https://127.0.0.1:9443")
        s.add_argument("--ca-bundle", required=True, help="base64 PEM of the CA that signed its certificate")
    g = sub.add_parser("config")
    g.add_argument("--webhook-port", type=int, required=True)
    g.add_argument("--webhook-host", default="127.0.0.1")
    g.add_argument("--cert-dir", required=True)
    g.add_argument("--health-port", type=int, required=True)
    g.add_argument("--metrics-port", type=int, required=True)
    a = p.parse_args(argv)
    if a.cmd == "crds":
        files = sorted(a.dir.glob("*.yaml"))
        if not files:
            p.error(f"no CRDs in {a.dir}")
        sys.stdout.write(_dump([rewrite_crd(d, a.url, a.ca_bundle) for f in files for d in _load_all(f)]))
    elif a.cmd == "webhooks":
        docs = rewrite_webhooks(_load_all(a.file), a.url, a.ca_bundle, a.namespace_label or None)
        if not docs:
            p.error(f"no Job or Kueue webhooks in {a.file}")
        sys.stdout.write(_dump(docs))
    else:
        sys.stdout.write(_dump([configuration(a.webhook_port, a.cert_dir, a.health_port, a.metrics_port,
                                                   webhook_host=a.webhook_host)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
