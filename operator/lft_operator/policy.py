"""The admin policy: what a LoRAFineTune may ask for (pure).

Creating a LoRAFineTune asks the operator to create a pod on the creator's behalf, so whoever may
create one could otherwise run any image, mount any host path or Secret of the namespace, act as
any of its ServiceAccounts and schedule anywhere. The policy bounds that. It is set operator-wide
(Helm value `policy`, passed as LFT_POLICY, JSON) and checked before anything is created: a resource
that breaks a rule stays Accepted=False, reason PolicyViolation, each message naming the field
path, its value and the rule; nothing is created for it.

Rules (Helm / JSON names):
- allowedImages: glob patterns (fnmatch: `*` matches any characters, `/` included) of spec.image.
  Unset or empty: the repository of the operator's trainer image with any tag or digest. The trainer
  image itself (spec.image unset) is always allowed.
- allowedVolumeKinds: kinds of spec.podTemplate.volumes (default persistentVolumeClaim, configMap,
  secret, emptyDir, projected). A volume without a source is an emptyDir, as in Kubernetes.
- allowedServiceAccounts: names spec.podTemplate.serviceAccountName may take (default none: the
  generated per-run ServiceAccount).
- allowedSecrets: Secrets a pod may read besides the storage Secret, in env (valueFrom.secretKeyRef),
  secret volumes and projected secret sources (default none).
- allowTrustRemoteCode: whether spec.model.trustRemoteCode may be true (default false): it runs Python
  code from the model's repository in the trainer pod, with the pod's Secrets in its environment,
  which would make the image rule moot.
- allowedStorageSecrets, allowedTolerations, allowedPriorityClasses, allowedNodeSelectors: optional
  allow lists; unset (null) allows anything, an empty list nothing. While allowedNodeSelectors is set,
  spec.affinity.nodeAffinity (another way to pick nodes) is refused.
- Always (not configurable): pod annotations that set seccomp or AppArmor profiles are refused; the
  operator sets the pod's security context (Pod Security "restricted") and spec.podTemplate has no
  field that changes it (unknown fields such as podTemplate.securityContext are refused).
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from lft_api.resource import LoRAFineTuneSpec

# Every volume source of core/v1 Volume (a typo in allowedVolumeKinds fails at start-up).
VOLUME_KINDS = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
    "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs",
    "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume",
    "projected", "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume",
)
# A subset of the kinds Pod Security "restricted" allows (tests/support/pod_security.py).
DEFAULT_VOLUME_KINDS = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "projected")
# Pod annotations that choose seccomp or AppArmor profiles (and could say "unconfined").
SECURITY_ANNOTATION_PREFIXES = (
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "container.apparmor.security.beta.kubernetes.io/",
)


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class TolerationRule(_Model):
    """An allowed toleration: each field given must equal the requested toleration's (an unset one
    matches anything). {key: nvidia.com/gpu} allows every toleration of that key, never a keyless
    one (which tolerates every taint)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: str | None = None

    def allows(self, toleration: dict[str, Any]) -> bool:
        # As Kubernetes reads a toleration: the operator defaults to Equal; no key, value or effect is "".
        requested = {
            "key": toleration.get("key") or "",
            "operator": toleration.get("operator") or "Equal",
            "value": toleration.get("value") or "",
            "effect": toleration.get("effect") or "",
        }
        return all(getattr(self, field) in (None, wanted) for field, wanted in requested.items())


class Policy(_Model):
    allowed_images: tuple[str, ...] = ()  # empty: the trainer image's repository (image_patterns)
    allowed_volume_kinds: tuple[str, ...] = DEFAULT_VOLUME_KINDS
    allowed_service_accounts: tuple[str, ...] = ()
    allowed_secrets: tuple[str, ...] = ()
    allow_trust_remote_code: bool = False
    allowed_storage_secrets: tuple[str, ...] | None = None
    allowed_tolerations: tuple[TolerationRule, ...] | None = None
    allowed_priority_classes: tuple[str, ...] | None = None
    allowed_node_selectors: dict[str, tuple[str, ...]] | None = None

    @field_validator("allowed_volume_kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in kinds if k not in VOLUME_KINDS]
        if unknown:
            raise ValueError(f"unknown volume kinds {', '.join(unknown)}; known: {', '.join(VOLUME_KINDS)}")
        return kinds

    def image_patterns(self, trainer_image: str) -> tuple[str, ...]:
        """allowedImages, or by default the trainer image's repository with any tag or digest."""
        if self.allowed_images:
            return self.allowed_images
        repository = image_repository(trainer_image)
        return (f"{repository}:*", f"{repository}@*")


def image_repository(image: str) -> str:
    """"reg:5000/team/trainer:1.2@sha256:..." -> "reg:5000/team/trainer" (the tag's colon follows the last /)."""
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


def _q(value: Any) -> str:
    """A value as it appears in a message: JSON (strings quoted, objects compact)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _names(items: Any) -> str:
    return ", ".join(items) or "none"


def violations(spec: LoRAFineTuneSpec, policy: Policy, trainer_image: str, storage_secret: str | None) -> list[str]:
    """Every rule `spec` breaks, one message each: field path, value, rule. Empty: allowed.

    `trainer_image`: the operator's default; `storage_secret`: the Secret the pod gets as envFrom
    (the spec's storageSecretRef, or the operator's default)."""
    template = spec.pod_template
    return [
        *_image(spec.image, policy, trainer_image),
        *_remote_code(spec.model.trust_remote_code, policy),
        *_volume_kinds(template.volumes, policy),
        *_service_account(template.service_account_name, policy),
        *_secret_refs(template.env, template.volumes, policy, storage_secret),
        *_storage_secret(spec, policy),
        *_tolerations(spec.tolerations, policy),
        *_priority_class(spec.priority_class_name, policy),
        *_node_selection(spec.node_selector, spec.affinity, policy),
        *_security_annotations(template.annotations),
    ]


def _image(image: str | None, policy: Policy, trainer_image: str) -> list[str]:
    if image is None or image == trainer_image:
        return []
    patterns = policy.image_patterns(trainer_image)
    if any(fnmatchcase(image, p) for p in patterns):
        return []
    return [f"spec.image {_q(image)} is not an allowed trainer image (policy.allowedImages: {_names(patterns)})"]


def _remote_code(trust: bool, policy: Policy) -> list[str]:
    if not trust or policy.allow_trust_remote_code:
        return []
    return [
        "spec.model.trustRemoteCode true is not allowed: it runs code from the model's repository in the trainer "
        "pod (policy.allowTrustRemoteCode: false)"
    ]


def volume_kinds(volume: dict[str, Any]) -> list[str]:
    """The source fields of a core/v1 Volume; none is an emptyDir (Kubernetes' default)."""
    return [key for key in volume if key.lower() != "name"] or ["emptyDir"]


def _volume_kinds(volumes: list[dict[str, Any]], policy: Policy) -> list[str]:
    return [
        f"spec.podTemplate.volumes[{i}] ({_q(volume.get('name'))}) has kind {kind}, not an allowed volume kind "
        f"(policy.allowedVolumeKinds: {_names(policy.allowed_volume_kinds)})"
        for i, volume in enumerate(volumes)
        for kind in volume_kinds(volume)
        if kind not in policy.allowed_volume_kinds
    ]


def _service_account(name: str | None, policy: Policy) -> list[str]:
    if name is None or name in policy.allowed_service_accounts:
        return []
    return [
        f"spec.podTemplate.serviceAccountName {_q(name)} is not allowed: trainers run as their generated "
        f"ServiceAccount unless the policy names another (policy.allowedServiceAccounts: "
        f"{_names(policy.allowed_service_accounts)})"
    ]


def _field(obj: Any, name: str) -> Any:
    """obj[name] of a free-form object, None for anything else; the name matched without case, as
    case-insensitive JSON decoders (older API servers) would read it."""
    if not isinstance(obj, dict):
        return None
    return next((value for key, value in obj.items() if isinstance(key, str) and key.lower() == name.lower()), None)


def secret_refs(env: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(field path, Secret name) of every Secret the pod template reads. Malformed entries are left to
    the API server, which refuses the Job (JobInvalid)."""
    refs: list[tuple[str, Any]] = []
    for i, var in enumerate(env):
        ref = _field(_field(var, "valueFrom"), "secretKeyRef")
        if ref is not None:
            refs.append((f"spec.podTemplate.env[{i}].valueFrom.secretKeyRef.name", _field(ref, "name")))
    for i, volume in enumerate(volumes):
        secret = _field(volume, "secret")
        if secret is not None:
            refs.append((f"spec.podTemplate.volumes[{i}].secret.secretName", _field(secret, "secretName")))
        sources = _field(_field(volume, "projected"), "sources")
        for j, source in enumerate(sources if isinstance(sources, list) else []):
            secret = _field(source, "secret")
            if secret is not None:
                refs.append((f"spec.podTemplate.volumes[{i}].projected.sources[{j}].secret.name", _field(secret, "name")))
    return refs


def _secret_refs(
    env: list[dict[str, Any]], volumes: list[dict[str, Any]], policy: Policy, storage_secret: str | None
) -> list[str]:
    allowed = {*policy.allowed_secrets, *([storage_secret] if storage_secret else [])}
    storage = _q(storage_secret) if storage_secret else "none"
    return [
        f"{path} {_q(name)} is not an allowed Secret (allowed: the storage Secret {storage} and "
        f"policy.allowedSecrets: {_names(policy.allowed_secrets)})"
        for path, name in secret_refs(env, volumes)
        if name not in allowed
    ]


def _storage_secret(spec: LoRAFineTuneSpec, policy: Policy) -> list[str]:
    allowed = policy.allowed_storage_secrets
    ref = spec.storage_secret_ref
    if allowed is None or ref is None or ref.name in allowed:
        return []
    return [f"spec.storageSecretRef.name {_q(ref.name)} is not allowed (policy.allowedStorageSecrets: {_names(allowed)})"]


def _tolerations(tolerations: list[dict[str, Any]], policy: Policy) -> list[str]:
    rules = policy.allowed_tolerations
    if rules is None:
        return []
    shown = _names(_q(r.model_dump(by_alias=True, exclude_none=True)) for r in rules)
    return [
        f"spec.tolerations[{i}] {_q(t)} is not allowed (policy.allowedTolerations: {shown})"
        for i, t in enumerate(tolerations)
        if not any(rule.allows(t) for rule in rules)
    ]


def _priority_class(name: str | None, policy: Policy) -> list[str]:
    allowed = policy.allowed_priority_classes
    if allowed is None or not name or name in allowed:
        return []
    return [f"spec.priorityClassName {_q(name)} is not allowed (policy.allowedPriorityClasses: {_names(allowed)})"]


def _node_selection(selector: dict[str, str], affinity: dict[str, Any] | None, policy: Policy) -> list[str]:
    allowed = policy.allowed_node_selectors
    if allowed is None:
        return []
    shown = _q({k: list(v) for k, v in allowed.items()})
    out = [
        f"spec.nodeSelector[{_q(key)}] {_q(value)} is not allowed (policy.allowedNodeSelectors: {shown})"
        for key, value in selector.items()
        if not any(fnmatchcase(value, pattern) for pattern in allowed.get(key, ()))
    ]
    if _field(affinity, "nodeAffinity"):
        out.append(
            "spec.affinity.nodeAffinity is not allowed while the policy limits node selection "
            f"(policy.allowedNodeSelectors: {shown}): choose nodes with spec.nodeSelector"
        )
    return out


def _security_annotations(annotations: dict[str, str]) -> list[str]:
    return [
        f"spec.podTemplate.annotations[{_q(key)}] {_q(value)} is not allowed: seccomp and AppArmor profiles are "
        "set by the operator (trainer pods are always Pod Security restricted)"
        for key, value in annotations.items()
        if key.startswith(SECURITY_ANNOTATION_PREFIXES)
    ]
