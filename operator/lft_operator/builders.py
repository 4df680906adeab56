"""Pure builders of the objects the operator creates for a LoRAFineTune.

Each takes the resource's metadata (name, namespace, uid), its validated spec and the settings,
and returns a plain manifest dict. Names are deterministic, so creating twice can only hit
409 AlreadyExists, never make a second Job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lft_api import contract
from lft_api.resource import JOB_SUFFIX, MUTABLE_FIELDS, LoRAFineTuneSpec

from . import rbac
from .job_policy import (  # noqa: F401  (re-exported: the Job's policies are built there)
    CONTAINER_NAME,
    INVALID_INPUT_RULE,
    POD_FAILURE_POLICY_REASON,
    RUN_POLICY_ANNOTATION,
    pod_failure_policy,
    run_policy_json,
    run_policy_patch,
    stop_patch,
    suspend_patch,
)
from .settings import Settings

NAME_LABEL = f"{contract.API_GROUP}/name"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # a WorkloadPriorityClass, from spec.podTemplate.labels
APPLIED_SPEC_ANNOTATION = f"{contract.API_GROUP}/applied-spec"
CONFIG_DIR = "/etc/lft"
CONFIG_FILE = "config.json"
HOME_DIR = "/home/trainer"
TRAINER_UID = 1000
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
API_ACCESS_VOLUME = "kube-api-access"
MANAGED_BY = "lora-finetune-operator"


@dataclass(frozen=True)
class Owner:
    """The LoRAFineTune that owns the objects."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def child_name(name: str) -> str:
    """The name of the Job, ServiceAccount, Role and RoleBinding of resource `name`."""
    return f"{name}{JOB_SUFFIX}"


def config_map_name(name: str) -> str:
    return f"{name}{JOB_SUFFIX}-config"


def labels(name: str) -> dict[str, str]:
    return {
        NAME_LABEL: name,
        "app.kubernetes.io/name": "lora-finetune",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    # No blockOwnerDeletion: it would need update on lorafinetunes/finalizers where the
    # OwnerReferencesPermissionEnforcement admission plugin is on; background GC suffices.
    return {
        "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
        "kind": contract.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
    }


def child_metadata(owner: Owner, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name),
        "ownerReferences": [owner_reference(owner)],
        **extra,
    }


def trainer_config(spec: LoRAFineTuneSpec, settings: Settings) -> dict[str, Any]:
    """The trainer's config JSON: the TrainerConfig part of the spec, with operator defaults filled in."""
    config = spec.trainer_config()
    updates: dict[str, Any] = {}
    if config.storage.endpoint_url is None and settings.default_storage_endpoint:
        updates["storage"] = config.storage.model_copy(update={"endpoint_url": settings.default_storage_endpoint})
    gpus = spec.resources.gpus
    # Resolved here (auto: one per GPU, 1 on CPU); on a multi-GPU pod always one process per GPU.
    processes = gpus if gpus > 1 else config.training.processes_per_node(gpus)
    updates["training"] = config.training.model_copy(update={"num_processes": processes})
    return config.model_copy(update=updates).to_wire()


def config_map(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(owner, config_map_name(owner.name)),
        "data": {CONFIG_FILE: json.dumps(trainer_config(spec, settings), indent=2, sort_keys=True),
                 contract.CONFIG_OWNER_FILE: owner.uid},
    }


def service_account(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(owner, child_name(owner.name)),
    }


def trainer_role(owner: Owner) -> dict[str, Any]:
    """May patch the status of this one resource, nothing else: the trainer reports progress there.
    RBAC cannot limit the fields: the operator ignores and reverts the others (status/trust.py)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(owner, child_name(owner.name)),
        "rules": [
            {
                "apiGroups": [contract.API_GROUP],
                "resources": [f"{contract.PLURAL}/status"],
                "resourceNames": [owner.name],
                "verbs": list(rbac.TRAINER_VERBS),
            }
        ],
    }


def effective_service_account(owner: Owner, spec: LoRAFineTuneSpec) -> str:
    return spec.pod_template.service_account_name or child_name(owner.name)


def role_binding(owner: Owner, spec: LoRAFineTuneSpec) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(owner, child_name(owner.name)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": child_name(owner.name)},
        "subjects": [
            {"kind": "ServiceAccount", "name": effective_service_account(owner, spec), "namespace": owner.namespace}
        ],
    }


def applied_spec(spec: LoRAFineTuneSpec) -> dict[str, Any]:
    """The part of the spec a Job is built from: everything but the fields that may change later."""
    wire = spec.to_wire()
    for key in MUTABLE_FIELDS:
        wire.pop(key, None)
    return wire


def storage_secret_name(spec: LoRAFineTuneSpec, settings: Settings) -> tuple[str | None, bool]:
    """(Secret name, optional): the spec's own Secret must exist; the operator-wide default may be absent."""
    if spec.storage_secret_ref is not None:
        return spec.storage_secret_ref.name, False
    if settings.default_storage_secret:
        return settings.default_storage_secret, True
    return None, True


def tracking_secrets(spec: LoRAFineTuneSpec) -> list[tuple[str, str]]:
    """(Secret name, spec field) of the experiment trackers' and the OCI registry's credentials. Their keys become
    the trainer's environment (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, WANDB_API_KEY, LFT_OCI_USERNAME/PASSWORD);
    the operator never reads them."""
    return [(name, f"spec.{field}") for field, name in spec.credential_secrets()]


def image_pull_secrets(spec: LoRAFineTuneSpec, settings: Settings) -> list[dict[str, str]]:
    """The operator's default pull Secrets, then the resource's own; each name once."""
    names = dict.fromkeys([*settings.trainer_image_pull_secrets, *(ref.name for ref in spec.image_pull_secrets)])
    return [{"name": name} for name in names]


def _resources(spec: LoRAFineTuneSpec) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if res.cpu is not None:
        requests["cpu"] = str(res.cpu)
    if res.memory is not None:
        requests["memory"] = limits["memory"] = str(res.memory)
    if res.ephemeral_storage is not None:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = str(res.ephemeral_storage)
    if res.gpus > 0:
        limits[res.gpu_resource_name] = str(res.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _env(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings) -> list[dict[str, Any]]:
    # The user's variables first: for duplicated names the last entry wins, so ours stay in force.
    ours = [
        {"name": contract.ENV_CONFIG_PATH, "value": f"{CONFIG_DIR}/{CONFIG_FILE}"},
        {"name": contract.ENV_RESOURCE_NAME, "value": owner.name},
        {"name": contract.ENV_RESOURCE_NAMESPACE, "value": owner.namespace},
        {"name": contract.ENV_RESOURCE_UID, "value": owner.uid},
        {"name": contract.ENV_TERMINATION_LOG, "value": contract.DEFAULT_TERMINATION_LOG},
        {"name": "HOME", "value": HOME_DIR},
    ]
    dirs = secret_dirs(spec, settings)
    if dirs:
        ours.append({"name": contract.ENV_SECRET_DIRS, "value": ":".join(dirs)})
    if settings.trainer_status_interval is not None:
        ours.append({"name": contract.ENV_STATUS_MIN_INTERVAL, "value": str(settings.trainer_status_interval)})
    reserved = {e["name"] for e in ours}
    # From the validated models (exact keys, nothing the policy did not see), never the raw input.
    user = [e.to_wire() for e in spec.pod_template.env if e.name not in reserved]
    return user + ours


def _api_access_volume() -> dict[str, Any]:
    """A bound, expiring ServiceAccount token + the cluster CA + the namespace, where clients look.

    The same volume Kubernetes injects itself with automount on; spelled out (with automount off) so that
    only the trainer container gets it, whatever the podTemplate says about automounting.
    """
    return {
        "name": API_ACCESS_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }


SECRET_VALUES_VOLUME = "lft-secret-values"
TRACKING_SECRETS_DIR = "/var/run/lft/tracking-secret"  # + "-<i>", one per tracker's Secret


def _secret_values_volume(spec: LoRAFineTuneSpec, settings: Settings) -> dict[str, Any] | None:
    """The Secrets the trainer receives as environment (the storage Secret, secretKeyRef variables), mounted
    for the trainer to read their values and mask them in its output, whatever the keys are called."""
    sources: list[dict[str, Any]] = []
    storage, optional = storage_secret_name(spec, settings)
    if storage:
        sources.append({"secret": {"name": storage, "optional": optional}})
    for i, var in enumerate(spec.pod_template.env):
        ref = var.value_from.secret_key_ref if var.value_from else None
        if ref is not None:
            item = {"key": ref.key, "path": f"env-{i}/{ref.key}"}
            sources.append({"secret": {"name": ref.name, "optional": bool(ref.optional), "items": [item]}})
    return {"name": SECRET_VALUES_VOLUME, "projected": {"sources": sources}} if sources else None


def _tracking_secret_volumes(spec: LoRAFineTuneSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) per experiment tracker's Secret, for its values to be masked like the storage
    Secret's. One volume each: their key names are unknown to the operator and may collide."""
    return [({"name": f"lft-tracking-secret-{i}", "secret": {"secretName": name}},
             {"name": f"lft-tracking-secret-{i}", "mountPath": f"{TRACKING_SECRETS_DIR}-{i}", "readOnly": True})
            for i, (name, _) in enumerate(tracking_secrets(spec))]


def secret_dirs(spec: LoRAFineTuneSpec, settings: Settings) -> list[str]:
    """Where the trainer finds the values of the Secrets it receives (contract.ENV_SECRET_DIRS): the
    operator's mounts and the podTemplate's own Secret volumes."""
    secret_volumes = {v.name for v in spec.pod_template.volumes if v.secret is not None}
    user = [m.mount_path for m in spec.pod_template.volume_mounts if m.name in secret_volumes]
    tracking = [mount["mountPath"] for _, mount in _tracking_secret_volumes(spec)]
    return ([contract.SECRET_VALUES_DIR] if _secret_values_volume(spec, settings) else []) + tracking + user


def _volumes(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the trainer's mounts: the operator's, then the podTemplate's."""
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(owner.name)}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
        _api_access_volume(),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": HOME_DIR},
        {"name": API_ACCESS_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
    ]
    secret_values = _secret_values_volume(spec, settings)
    if secret_values is not None:
        volumes.append(secret_values)
        mounts.append({"name": SECRET_VALUES_VOLUME, "mountPath": contract.SECRET_VALUES_DIR, "readOnly": True})
    for volume, mount in _tracking_secret_volumes(spec):
        volumes.append(volume)
        mounts.append(mount)
    if spec.resources.gpus > 0:
        # Docker's 64 MiB /dev/shm is too small for NCCL and data loader workers.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    volumes += [v.to_wire() for v in spec.pod_template.volumes]
    mounts += [m.to_wire() for m in spec.pod_template.volume_mounts]
    return volumes, mounts


def _container(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings) -> dict[str, Any]:
    secret, optional = storage_secret_name(spec, settings)
    env_from = [{"secretRef": {"name": secret, "optional": optional}}] if secret else []
    env_from += [{"secretRef": {"name": name, "optional": False}} for name, _ in tracking_secrets(spec)]
    mounts = _volumes(owner, spec, settings)[1]
    return {
        "name": CONTAINER_NAME,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": spec.image_pull_policy or settings.trainer_image_pull_policy,
        "env": _env(owner, spec, settings),
        "envFrom": env_from,
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "terminationMessagePath": contract.DEFAULT_TERMINATION_LOG,
        # A crash before the trainer wrote its JSON still tells the operator something.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_spec(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings) -> dict[str, Any]:
    volumes = _volumes(owner, spec, settings)[0]
    container = _container(owner, spec, settings)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": effective_service_account(owner, spec),
        # The trainer patches this resource's status with the token of the projected volume (_api_access_volume).
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    pull_secrets = image_pull_secrets(spec, settings)
    if pull_secrets:
        pod_spec["imagePullSecrets"] = pull_secrets
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in spec.tolerations]
    if spec.affinity is not None and spec.affinity.to_wire():
        pod_spec["affinity"] = spec.affinity.to_wire()
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    return pod_spec


def job(owner: Owner, spec: LoRAFineTuneSpec, settings: Settings) -> dict[str, Any]:
    """The single-pod Job. Native Job primitives do the work:
    - suspend: spec.suspend (the Job controller deletes the pod, whose trainer checkpoints on SIGTERM; the
      pod of a resumed Job resumes from that checkpoint); pods ended by a suspend count as no failure;
    - backoffLimit: runPolicy.backoffLimit, counted by the Job controller (status.failed survives the pods);
    - podFailurePolicy: exit code 3 (invalid input) fails the Job at once (reason PodFailurePolicy), a
      disrupted pod (eviction, preemption, drain) is replaced without counting;
    - podReplacementPolicy Failed: the next pod starts once the last one has ended (its checkpoint is saved).
    """
    applied = applied_spec(spec)
    pod_labels = {**spec.pod_template.labels, **labels(owner.name)}
    job_labels = labels(owner.name)
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    if KUEUE_PRIORITY_LABEL in spec.pod_template.labels:  # Kueue reads a WorkloadPriorityClass off the Job
        job_labels[KUEUE_PRIORITY_LABEL] = spec.pod_template.labels[KUEUE_PRIORITY_LABEL]
    pod_spec = _pod_spec(owner, spec, settings)
    job_spec: dict[str, Any] = {
        # Under Kueue, suspended until Kueue admits it (and Kueue's, not the operator's, to unsuspend).
        "suspend": bool(spec.suspend or (settings.kueue and spec.queue_name)),
        "parallelism": 1,
        "completions": 1,
        "backoffLimit": spec.run_policy.backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        "podReplacementPolicy": "Failed",
        "template": {
            "metadata": {"labels": pod_labels, "annotations": dict(spec.pod_template.annotations)},
            "spec": pod_spec,
        },
    }
    if spec.run_policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.run_policy.active_deadline_seconds
    if spec.run_policy.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.run_policy.ttl_seconds_after_finished

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(
            owner,
            child_name(owner.name),
            annotations={
                APPLIED_SPEC_ANNOTATION: json.dumps(applied, sort_keys=True, separators=(",", ":")),
                RUN_POLICY_ANNOTATION: run_policy_json(spec),
            },
        )
        | {"labels": job_labels},
        "spec": job_spec,
    }
