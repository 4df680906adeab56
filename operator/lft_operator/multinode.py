"""Pure builders of a multi-node run's objects (spec.training.nodes > 1).

One Indexed Job per attempt (`<run>-trainer-a<attempt>`): completionMode Indexed, completions = parallelism =
nodes; each pod's completion index is its node rank (LFT_NODE_RANK, from the downward API: the annotation
batch.kubernetes.io/job-completion-index). backoffLimit 0: one failed pod fails the Job, whose controller then
stops the other pods; a podFailurePolicy FailJob rule on exit code 3 (invalid input) says why (reason
PodFailurePolicy). The operator, not the Job controller, owns the run's retries (status/gang.py): it starts the
next attempt's Job once every pod of the failed one has stopped, and all ranks resume from the newest checkpoint
(gang semantics: no rank restarts alone; its peers' collectives would fail anyway). Suspend is the Job's own
spec.suspend: every pod is stopped (SIGTERM: a checkpoint) and a resumed Job starts every rank anew.

Rendezvous: the operator creates a ClusterIP Service `<run>-trainer` (owned by the resource) selecting the run's
index-0 pod (the Job controller's label batch.kubernetes.io/job-completion-index "0" plus the run's labels; one
attempt's pods at a time exist, gang.py waits for the old ones to stop). The other ranks reach torchrun's static
rendezvous master at its cluster IP, which the operator reads back after creating the Service; rank 0 reaches
itself at 127.0.0.1 (the trainer's launcher: a pod reaching itself through its own Service needs hairpin NAT,
which not every network has). No cluster DNS is needed: the test cluster has none, and kube-proxy routes a cluster
IP wherever Services work. Where DNS exists, `<job>-<index>.<headless Service>` names would do too (pods of an
Indexed Job get the hostname `<job>-<index>`; a subdomain needs a headless Service), but a cluster IP works on
every cluster, so that is what the pods get.

Every attempt's Job is built from the spec the run started with (run_spec: the Service, created with the first
attempt, keeps it in its applied-spec annotation), as the single-pod path's one Job is, and as the trainer's
ConfigMap (written once) is: the CRD refuses a spec change after the start at apply time; one that got in
under an older CRD is reported (SpecChangeIgnored), not half applied.

The rendezvous port, and the ports gloo and NCCL open between ranks (ephemeral ones), listen on the pod network:
a NetworkPolicy `<run>-trainer` (network_policy, created with the Service, owned the same way) admits ingress to
the run's pods over TCP from pods of the same run in the same namespace only.

With nodes == 1 none of this is used: builders.job() builds the one Job, and no Service.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lft_api import contract
from lft_api.resource import JOB_SUFFIX, MUTABLE_FIELDS, LoRAFineTuneSpec
from lft_api.spec import MAX_NODES

from . import builders
from .builders import APPLIED_SPEC_ANNOTATION, NAME_LABEL, Owner
from .settings import Settings
from .views import ATTEMPT_LABEL, COMPLETION_INDEX

SHM_VOLUME = "dshm"

# Defaults a user may override with spec.podTemplate.env (same name: the user's value wins).
COMMUNICATION_DEFAULTS: dict[str, str] = {
    "GLOO_SOCKET_IFNAME": "eth0",  # the pod network; without it gloo may pick the address of the hostname
    "NCCL_SOCKET_IFNAME": "eth0",
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a lost peer ends the collective with an error, not a hang
    "LFT_DDP_TIMEOUT_SECONDS": "1800",  # collectives (torch.distributed init_process_group timeout)
    "LFT_RENDEZVOUS_TIMEOUT_SECONDS": "600",  # how long a pod waits for the master's address to resolve
}


def is_multinode(spec: LoRAFineTuneSpec) -> bool:
    return spec.training.nodes > 1


def service_name(name: str) -> str:
    return builders.child_name(name)


# An Indexed Job's pods get the hostname `<job>-<index>`, a DNS label (63 characters at most), and the Job's
# name is a label value (63 too): the Job's name leaves room for the largest index.
MAX_JOB_NAME_LENGTH = 63 - len(f"-{MAX_NODES - 1}")


def job_name(name: str, attempt: int) -> str:
    """The Indexed Job of attempt `attempt` (from 1); its pods are `<job>-<index>-<suffix>`.

    `<run>-trainer-a<attempt>`, or, where that is too long (a long resource name, many attempts), the run's name
    cut short plus a hash of the whole name: still one name per run and attempt, the same at every reconcile.
    """
    full = f"{builders.child_name(name)}-a{attempt}"
    if len(full) <= MAX_JOB_NAME_LENGTH:
        return full
    tail = f"-{hashlib.sha256(name.encode()).hexdigest()[:8]}{JOB_SUFFIX}-a{attempt}"
    return name[: MAX_JOB_NAME_LENGTH - len(tail)].rstrip("-.") + tail


LOOPBACK = "127.0.0.1"


def service(owner: Owner, spec: LoRAFineTuneSpec) -> dict[str, Any]:
    """A cluster IP in front of the index-0 pod (its rendezvous port). publishNotReadyAddresses: the pod
    is an endpoint as soon as it has an address (the rendezvous starts before any readiness). Created once per
    run: it keeps the spec the run started with (run_spec)."""
    applied = json.dumps(builders.applied_spec(spec), sort_keys=True, separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": builders.child_metadata(owner, service_name(owner.name), annotations={APPLIED_SPEC_ANNOTATION: applied}),
        "spec": {
            "publishNotReadyAddresses": True,
            "selector": {NAME_LABEL: owner.name, "app.kubernetes.io/component": "trainer", COMPLETION_INDEX: "0"},
            "ports": [{"name": "rendezvous", "port": contract.DEFAULT_MASTER_PORT, "protocol": "TCP"}],
        },
    }


def run_pod_selector(name: str) -> dict[str, Any]:
    """The pods of run `name`: every attempt's pods carry these labels (builders.labels), set by the operator
    after the user's podTemplate.labels, so a pod of another run cannot claim them. Pods the tenant creates by
    hand in the namespace can, but the tenant could reach its own run's pods from there anyway."""
    return {"matchLabels": {NAME_LABEL: name, "app.kubernetes.io/component": "trainer"}}


def network_policy(owner: Owner) -> dict[str, Any]:
    """Ingress to the run's pods: TCP, any port (the rendezvous master's, contract.DEFAULT_MASTER_PORT, and the
    ephemeral ports of torch.distributed's gloo and NCCL socket transports), from the run's own pods in this
    namespace only; everything else is refused (the rendezvous takes no credentials: any pod of the cluster
    could otherwise join it or feed the collectives). Node 0 reaches itself over loopback, which no policy
    restricts; the other nodes reach it through the Service's cluster IP, which kube-proxy rewrites to the pod's
    address, so the policy sees the sending pod as the source. Egress is left alone (storage, hub, trackers).

    Enforcement is the network plugin's: Calico, Cilium, Antrea and the like enforce NetworkPolicies; a cluster
    without such a plugin (kindnet before 0.20, flannel alone, our test cluster) stores the object and does
    nothing with it. Created once per run, as the Service is (idempotent: an existing one of this run is kept);
    the garbage collector deletes it with the resource."""
    peers = run_pod_selector(owner.name)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": builders.child_metadata(owner, service_name(owner.name)),
        "spec": {
            "podSelector": run_pod_selector(owner.name),
            "policyTypes": ["Ingress"],
            # No namespaceSelector or ipBlock: a podSelector alone means pods of this namespace.
            "ingress": [{"from": [{"podSelector": peers}], "ports": [{"protocol": "TCP"}]}],
        },
    }


def run_spec(service_body: dict[str, Any], spec: LoRAFineTuneSpec, nodes: int | None = None) -> LoRAFineTuneSpec:
    """What an attempt's Jobs are built from: the spec the run started with (the Service's annotation) with the
    current suspend and runPolicy, on the run's `nodes`. A Service without a readable annotation (made by an
    earlier operator version): the current spec, on the run's `nodes`."""
    raw = ((service_body.get("metadata") or {}).get("annotations") or {}).get(APPLIED_SPEC_ANNOTATION)
    base = spec
    if raw:
        try:
            mutable = {k: v for k, v in spec.to_wire().items() if k in MUTABLE_FIELDS}
            base = LoRAFineTuneSpec.model_validate({**json.loads(raw), **mutable})
        except ValueError:  # pydantic's ValidationError included
            base = spec
    if nodes is not None and nodes != base.training.nodes:
        base = base.model_copy(update={"training": base.training.model_copy(update={"nodes": nodes})})
    return base


NODE_RANK_FIELD = f"metadata.annotations['{COMPLETION_INDEX}']"


def _env(spec: LoRAFineTuneSpec, master: str, defaults: dict[str, str], env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The single-pod env `env` with the communication defaults the user did not set before it and the node's
    rank (the completion index) and master after it (for duplicated names the last entry wins: those stay in
    force)."""
    user = {e.name for e in spec.pod_template.env}
    fixed: list[dict[str, Any]] = [
        {"name": contract.ENV_NODE_RANK, "valueFrom": {"fieldRef": {"fieldPath": NODE_RANK_FIELD}}},
        {"name": contract.ENV_MASTER_ADDR, "value": master},
        {"name": contract.ENV_MASTER_PORT, "value": str(contract.DEFAULT_MASTER_PORT)},
    ]
    names = {e["name"] for e in fixed}
    return ([{"name": k, "value": v} for k, v in defaults.items() if k not in user]
            + [e for e in env if e.get("name") not in names] + fixed)


def job(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings, attempt: int, master_addr: str) -> dict[str, Any]:
    """The Indexed Job of attempt `attempt` (from 1): the single-pod Job, changed where a multi-node run differs.
    `master_addr`: the cluster IP of service(owner) (rank 0 uses loopback, see the launcher)."""
    job = builders.job(owner, spec, settings)
    nodes = spec.training.nodes
    extra = {ATTEMPT_LABEL: str(attempt)}
    job["metadata"]["name"] = job_name(owner.name, attempt)
    job["metadata"]["labels"].update(extra)
    job_spec = job["spec"]
    job_spec.update(
        completionMode="Indexed",
        completions=nodes,
        parallelism=nodes,
        backoffLimit=0,  # one failed pod fails the attempt; the operator starts the next one, every rank at once
        # Exit code 3 fails it with reason PodFailurePolicy. No Ignore rule for disrupted pods: a rank alone
        # cannot rejoin its peers' collectives, the whole attempt restarts (gang.py does not count it).
        podFailurePolicy={"rules": [dict(builders.INVALID_INPUT_RULE)]},
    )
    template = job_spec["template"]
    template["metadata"]["labels"].update(extra)
    pod = template["spec"]
    container = pod["containers"][0]
    defaults = {**COMMUNICATION_DEFAULTS, "LFT_SHUTDOWN_TIMEOUT_SECONDS": str(settings.termination_grace_seconds)}
    container["env"] = _env(spec, master_addr, defaults, container["env"])
    if not any(v["name"] == SHM_VOLUME for v in pod["volumes"]):
        pod["volumes"].append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
        container["volumeMounts"].append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    # A node of training.nodes is meant to be a machine: the scheduler spreads the attempt's pods over the
    # cluster's nodes. Soft (ScheduleAnyway): on a one-node cluster, or when the other machines are down or
    # full, the gang still runs, on the remaining capacity.
    pod.setdefault("topologySpreadConstraints", []).append({
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {builders.NAME_LABEL: owner.name, ATTEMPT_LABEL: str(attempt)}},
    })
    size = settings.shm_size_limit
    if size:
        next(v for v in pod["volumes"] if v["name"] == SHM_VOLUME)["emptyDir"]["sizeLimit"] = size
    return job
