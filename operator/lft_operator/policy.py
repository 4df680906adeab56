"""The admin policy: what a LoRAFineTune may ask for (pure).

Creating a LoRAFineTune asks the operator to create a pod on the creator's behalf, so whoever may
create one could otherwise run any image or code, mount any Secret of the namespace, act as any of its
ServiceAccounts and schedule anywhere. The policy bounds that. It is set operator-wide (Helm value
`policy`, passed as LFT_POLICY, JSON) and checked before anything is created: a resource that breaks a
rule stays Accepted=False, reason PolicyViolation, each message naming the field path, its value and
the rule; nothing is created for it. Every rule is an allow list, closed by default.

The pod-shaped fields it judges (env, volumes, mounts, tolerations, affinity) are typed models read
with their exact key case (lft_api.pod_types), and the Job is built from those same models.

Rules (Helm / JSON names):
- allowedImages: glob patterns (fnmatch: `*` matches any characters, `/` included) of spec.image.
  Unset or empty: the repository of the operator's trainer image with any tag or digest. The trainer
  image itself (spec.image unset) is always allowed.
- allowTrustRemoteCode: whether spec.model.trustRemoteCode may be true (default false): it runs Python
  code from the model's repository in the trainer pod, with the pod's Secrets in its environment.
- allowedEnv: glob patterns of spec.podTemplate.env names allowed besides the documented ones
  (lft_api.pod_types.DOCUMENTED_ENV: HF_TOKEN, storage and tracker credentials, thread counts). LFT_* and
  HOME are the operator's, whatever the policy says.
- allowedVolumeKinds: kinds of spec.podTemplate.volumes (default persistentVolumeClaim, configMap,
  secret, emptyDir, projected). A volume without a source is an emptyDir, as in Kubernetes.
- allowedMountPaths: directories where spec.podTemplate.volumeMounts may mount, besides the built-in
  /data, /mnt, /models, /datasets, /cache and /workspace (never over the image's code).
- allowedServiceAccounts: names spec.podTemplate.serviceAccountName may take (default none: the
  generated per-run ServiceAccount).
- allowedSecrets: Secrets a pod may read besides the storage Secret, in env (valueFrom.secretKeyRef),
  secret volumes and projected secret sources (default none).
- allowedStorageSecrets: Secrets spec.storageSecretRef, spec.training.mlflow/wandb.credentialsSecretRef and
  spec.output.push.oci.credentialsSecretRef
  may name (every key becomes the pod's environment), besides the operator's storage Secret (Helm
  storage.secretName). Default none besides it.
- allowedTolerations, allowedPriorityClasses: default none.
- allowedNodeSelectors: optional; unset (null) allows any nodeSelector. While set,
  spec.affinity.nodeAffinity (another way to pick nodes) is refused.
- Always (not configurable): pod annotations that set seccomp or AppArmor profiles are refused; the
  operator sets the pod's security context (Pod Security "restricted") and spec.podTemplate has no
  field that changes it; a local spec.model.chatTemplate must lie inside the model's own directory
  (a pod file such as /proc/self/environ would otherwise be saved with the adapter).
"""

from __future__ import annotations

import json
import posixpath
import re
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from lft_api.pod_types import (
    DOCUMENTED_ENV,
    MOUNT_PATH_PREFIXES,
    RESERVED_ENV,
    RESERVED_ENV_PREFIX,
    VOLUME_KINDS,
    Affinity,
    EnvVar,
    Toleration,
    Volume,
    VolumeMount,
)
from lft_api.resource import LoRAFineTuneSpec

# A subset of the kinds Pod Security "restricted" allows (tests/support/pod_security.py).
DEFAULT_VOLUME_KINDS = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "projected")
# Pod annotations that choose seccomp or AppArmor profiles (and could say "unconfined").
SECURITY_ANNOTATION_PREFIXES = (
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "container.apparmor.security.beta.kubernetes.io/",
)
# Object stores a chatTemplate URI may name (the trainer reads it with the storage credentials).
TEMPLATE_URI_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")
# Where a model directory that holds its own chat template may lie: the image's /opt, or a tenant's mount.
MODEL_DIR_PREFIXES = ("/opt", *MOUNT_PATH_PREFIXES)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


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

    def allows(self, toleration: Toleration) -> bool:
        # As Kubernetes reads a toleration: the operator defaults to Equal; no key, value or effect is "".
        requested = {
            "key": toleration.key or "",
            "operator": toleration.operator or "Equal",
            "value": toleration.value or "",
            "effect": toleration.effect or "",
        }
        return all(getattr(self, field) in (None, wanted) for field, wanted in requested.items())


class Policy(_Model):
    allowed_images: tuple[str, ...] = ()  # empty: the trainer image's repository (image_patterns)
    allowed_env: tuple[str, ...] = ()
    allowed_volume_kinds: tuple[str, ...] = DEFAULT_VOLUME_KINDS
    allowed_mount_paths: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ()
    allowed_secrets: tuple[str, ...] = ()
    allow_trust_remote_code: bool = False
    allowed_storage_secrets: tuple[str, ...] = ()
    allowed_tolerations: tuple[TolerationRule, ...] = ()
    allowed_priority_classes: tuple[str, ...] = ()
    allowed_node_selectors: dict[str, tuple[str, ...]] | None = None

    @field_validator("allowed_storage_secrets", "allowed_tolerations", "allowed_priority_classes", mode="before")
    @classmethod
    def _null_is_none_allowed(cls, value: Any) -> Any:
        # Until 0.1, null meant "anything". It now means what [] means (closed): an upgrade that keeps an
        # explicit null in its values must not open the policy.
        return () if value is None else value

    @field_validator("allowed_mount_paths")
    @classmethod
    def _absolute_dirs(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in paths if not p.startswith("/") or posixpath.normpath(p) != p.rstrip("/") or p == "/"]
        if bad:
            raise ValueError(f"allowedMountPaths must be absolute, normalized directories other than /: {bad}")
        return paths

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


def violations(
    spec: LoRAFineTuneSpec, policy: Policy, trainer_image: str, storage_secret: str | None,
    default_storage_secret: str | None = None,
) -> list[str]:
    """Every rule `spec` breaks, one message each: field path, value, rule. Empty: allowed.

    `trainer_image`: the operator's default; `storage_secret`: the Secret the pod gets as envFrom
    (the spec's storageSecretRef, or the operator's default); `default_storage_secret`: the operator's
    default (always allowed as storage Secret)."""
    template = spec.pod_template
    return [
        *_image(spec.image, policy, trainer_image),
        *_remote_code(spec.model.trust_remote_code, policy),
        *_env_names(template.env, policy),
        *_volume_kinds(template.volumes, policy),
        *_mount_paths(template.volume_mounts, policy),
        *_service_account(template.service_account_name, policy),
        *_secret_refs(template.env, template.volumes, policy, storage_secret),
        *_storage_secret(spec, policy, default_storage_secret),
        *_tolerations(spec.tolerations, policy),
        *_priority_class(spec.priority_class_name, policy),
        *_node_selection(spec.node_selector, spec.affinity, policy),
        *_security_annotations(template.annotations),
        *_chat_template(spec.model.chat_template, spec.model.name),
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


def env_name_allowed(name: str, policy: Policy) -> bool:
    """A documented variable, or one the admin's patterns allow; never the operator's own."""
    if name in DOCUMENTED_ENV:
        return True
    if name.startswith(RESERVED_ENV_PREFIX) or name in RESERVED_ENV:
        return False
    return any(fnmatchcase(name, p) for p in policy.allowed_env)


def _env_names(env: list[EnvVar], policy: Policy) -> list[str]:
    return [
        f"spec.podTemplate.env[{i}].name {_q(var.name)} is not an allowed variable: the trainer takes the documented "
        f"ones ({', '.join(DOCUMENTED_ENV)}) and policy.allowedEnv: {_names(policy.allowed_env)}"
        + ("; LFT_* (but the documented ones) and HOME are the operator's"
           if var.name.startswith(RESERVED_ENV_PREFIX) or var.name in RESERVED_ENV else "")
        for i, var in enumerate(env)
        if not env_name_allowed(var.name, policy)
    ]


def _volume_kinds(volumes: list[Volume], policy: Policy) -> list[str]:
    return [
        f"spec.podTemplate.volumes[{i}] ({_q(volume.name)}) has kind {kind}, not an allowed volume kind "
        f"(policy.allowedVolumeKinds: {_names(policy.allowed_volume_kinds)})"
        for i, volume in enumerate(volumes)
        for kind in volume.kinds()
        if kind not in policy.allowed_volume_kinds
    ]


def mount_path_allowed(path: str, policy: Policy) -> bool:
    """Inside one of the allowed directories, after normalization (no `..` way out)."""
    normal = posixpath.normpath(path)
    if not path.startswith("/") or normal != path.rstrip("/"):
        return False
    return any(normal == d or normal.startswith(d.rstrip("/") + "/") for d in (*MOUNT_PATH_PREFIXES, *policy.allowed_mount_paths))


def _mount_paths(mounts: list[VolumeMount], policy: Policy) -> list[str]:
    allowed = _names((*MOUNT_PATH_PREFIXES, *policy.allowed_mount_paths))
    return [
        f"spec.podTemplate.volumeMounts[{i}].mountPath {_q(mount.mount_path)} is not allowed: mounts go under "
        f"{allowed} (absolute and normalized; policy.allowedMountPaths adds directories), never over the image's code"
        for i, mount in enumerate(mounts)
        if not mount_path_allowed(mount.mount_path, policy)
    ]


def _service_account(name: str | None, policy: Policy) -> list[str]:
    if name is None or name in policy.allowed_service_accounts:
        return []
    return [
        f"spec.podTemplate.serviceAccountName {_q(name)} is not allowed: trainers run as their generated "
        f"ServiceAccount unless the policy names another (policy.allowedServiceAccounts: "
        f"{_names(policy.allowed_service_accounts)})"
    ]


def secret_refs(env: list[EnvVar], volumes: list[Volume]) -> list[tuple[str, str]]:
    """(field path, Secret name) of every Secret the pod template reads."""
    refs: list[tuple[str, str]] = []
    for i, var in enumerate(env):
        ref = var.value_from.secret_key_ref if var.value_from else None
        if ref is not None:
            refs.append((f"spec.podTemplate.env[{i}].valueFrom.secretKeyRef.name", ref.name))
    for i, volume in enumerate(volumes):
        if volume.secret is not None:
            refs.append((f"spec.podTemplate.volumes[{i}].secret.secretName", volume.secret.secret_name))
        for j, source in enumerate(volume.projected.sources if volume.projected else []):
            if source.secret is not None:
                refs.append((f"spec.podTemplate.volumes[{i}].projected.sources[{j}].secret.name", source.secret.name))
    return refs


def _secret_refs(env: list[EnvVar], volumes: list[Volume], policy: Policy, storage_secret: str | None) -> list[str]:
    allowed = {*policy.allowed_secrets, *([storage_secret] if storage_secret else [])}
    storage = _q(storage_secret) if storage_secret else "none"
    return [
        f"{path} {_q(name)} is not an allowed Secret (allowed: the storage Secret {storage} and "
        f"policy.allowedSecrets: {_names(policy.allowed_secrets)})"
        for path, name in secret_refs(env, volumes)
        if name not in allowed
    ]


def _storage_secret(spec: LoRAFineTuneSpec, policy: Policy, default_storage_secret: str | None) -> list[str]:
    """The Secrets the pod gets whole as envFrom: the storage Secret and the experiment trackers' credentials."""
    allowed = (*([default_storage_secret] if default_storage_secret else []), *policy.allowed_storage_secrets)
    refs = [("storageSecretRef", spec.storage_secret_ref.name)] if spec.storage_secret_ref is not None else []
    refs += spec.credential_secrets()
    return [
        f"spec.{field}.name {_q(name)} is not allowed: every key of it would become the trainer's environment "
        f"(allowed: the operator's storage Secret and policy.allowedStorageSecrets: {_names(allowed)})"
        for field, name in refs
        if name not in allowed
    ]


def _tolerations(tolerations: list[Toleration], policy: Policy) -> list[str]:
    rules = policy.allowed_tolerations
    shown = _names(_q(r.model_dump(by_alias=True, exclude_none=True)) for r in rules)
    return [
        f"spec.tolerations[{i}] {_q(t.to_wire())} is not allowed (policy.allowedTolerations: {shown})"
        for i, t in enumerate(tolerations)
        if not any(rule.allows(t) for rule in rules)
    ]


def _priority_class(name: str | None, policy: Policy) -> list[str]:
    allowed = policy.allowed_priority_classes
    if not name or name in allowed:
        return []
    return [f"spec.priorityClassName {_q(name)} is not allowed (policy.allowedPriorityClasses: {_names(allowed)})"]


def _node_selection(selector: dict[str, str], affinity: Affinity | None, policy: Policy) -> list[str]:
    allowed = policy.allowed_node_selectors
    if allowed is None:
        return []
    shown = _q({k: list(v) for k, v in allowed.items()})
    out = [
        f"spec.nodeSelector[{_q(key)}] {_q(value)} is not allowed (policy.allowedNodeSelectors: {shown})"
        for key, value in selector.items()
        if not any(fnmatchcase(value, pattern) for pattern in allowed.get(key, ()))
    ]
    if affinity is not None and affinity.node_affinity is not None:
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


def _local_path(value: str) -> str | None:
    """The local path a model or template reference names (plain path or file://), else None."""
    m = _SCHEME.match(value)
    if m:
        return value[len(m.group(0)):] if m.group(1).lower() == "file" else None
    return value if value.startswith(("/", ".", "~")) or "/" in value else None


def _chat_template(template: str | None, model: str) -> list[str]:
    """Inline Jinja, a template name, an object-store URI, or a file inside the model's own directory."""
    if template is None or "{{" in template or "{%" in template:
        return []
    m = _SCHEME.match(template)
    if m and m.group(1).lower() in TEMPLATE_URI_SCHEMES:
        return []
    path = _local_path(template)
    if path is None and not m:
        return []  # a template name (the trainer checks that it knows it)
    model_dir = _local_path(model)
    if path is not None and path.startswith("/") and model_dir is not None and model_dir.startswith("/"):
        tpl, root = posixpath.normpath(path), posixpath.normpath(model_dir)
        if root != "/" and any(root == d or root.startswith(d + "/") for d in MODEL_DIR_PREFIXES) and tpl.startswith(
                root + "/"):
            return []
    return [
        f"spec.model.chatTemplate {_q(template)} is not allowed: give inline Jinja, a template name, an object-store "
        f"URI ({', '.join(s + '://' for s in TEMPLATE_URI_SCHEMES)}), or a file inside the model's own directory "
        f"(spec.model.name {_q(model)}); other files of the pod are never read"
    ]
