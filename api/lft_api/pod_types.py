"""The core/v1 types a tenant sets on the trainer pod, typed where the admin policy judges them.

Why typed: the policy must judge exactly what the Job will carry. Read as free-form dicts, a key
that differs only in case (`secretKeyRef: {Name: allowed, name: victim}`) was judged by one spelling
and sent to the API server with the other. These models read every key with its exact case and
refuse unknown ones (extra="forbid", the path named), and the operator builds the pod from the
validated models, never from the raw input: what the policy saw is what the Job gets.

Only the parts the policy reads are typed in depth (env sources, volume sources that name Secrets,
mounts, tolerations, which affinity is used). The inner parts of node/pod affinity and of volume
kinds outside the default allow list are passed through as objects: the policy does not read them.
The CRD still types them in full (core_type: crdgen inlines the core/v1 type's schema from the
Kubernetes OpenAPI, core_v1_schemas.json), so the API server validates and documents them at apply
time, and again when the operator creates the Job (fieldValidation=Strict).

Imports only pydantic: the trainer image shares this package.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from .spec_base import SpecModel

FreeForm = dict[str, Any]

# json_schema_extra key naming the core/v1 type (its name in core_v1_schemas.json) of a FreeForm field; crdgen
# replaces the field's schema with that type's structural schema.
CORE_TYPE = "x-lft-core-v1-type"
# core_v1_schemas.json: the core/v1 types of the Kubernetes OpenAPI the CRD inlines (crdgen --vendor-core-types).
CORE_SCHEMAS_FILE = "core_v1_schemas.json"


def core_type(type_name: str, description: str, **kw: Any) -> Any:
    """An optional FreeForm field that the CRD types as the core/v1 type `type_name`."""
    return Field(default=None, description=description, json_schema_extra={CORE_TYPE: type_name}, **kw)

# Environment variable names the trainer documents for users to set (spec.podTemplate.env): credentials
# of the model hub, object stores and experiment trackers, and tuning knobs that load no code. Every other
# name is refused unless the admin allows it (policy.allowedEnv): interpreter and loader variables
# (PYTHONPATH, LD_PRELOAD, PATH, BASH_ENV...), proxies and hub endpoints, and the operator's own LFT_*
# would let a tenant run its own code or redirect the pod's traffic.
DOCUMENTED_ENV = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", "PYTORCH_CUDA_ALLOC_CONF", "TZ",
    # multi-node communication (docs/multi-node.md: overridable defaults)
    "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    "LFT_DDP_TIMEOUT_SECONDS", "LFT_RENDEZVOUS_TIMEOUT_SECONDS",
)
# Names only the operator sets (the operator's contract with the trainer): a user may set none of them but the
# documented LFT_* knobs above, whatever the policy says.
RESERVED_ENV_PREFIX = "LFT_"
RESERVED_ENV = ("HOME",)

# Where a tenant's volumes may be mounted in the trainer container. Allow-listed: a mount over the image's
# code (/opt/lft/src, /opt/venv, /usr) would replace the trainer with the tenant's own code.
MOUNT_PATH_PREFIXES = ("/data", "/mnt", "/models", "/datasets", "/cache", "/workspace")


class SecretKeySelector(SpecModel):
    name: str = Field(min_length=1, description="Secret name (in the resource's namespace).")
    key: str = Field(min_length=1, description="Key of the Secret.")
    optional: Optional[bool] = Field(default=None, description='Whether the Secret or its key may be absent.')


class ConfigMapKeySelector(SpecModel):
    name: str = Field(min_length=1, description="ConfigMap name (in the resource's namespace).")
    key: str = Field(min_length=1, description="Key of the ConfigMap.")
    optional: Optional[bool] = Field(default=None, description='Whether the ConfigMap or its key may be absent.')


class ObjectFieldSelector(SpecModel):
    field_path: str = Field(min_length=1, description='Field of the pod, e.g. metadata.name.')
    api_version: Optional[str] = Field(default=None, description='Schema version of fieldPath (default v1).')


class ResourceFieldSelector(SpecModel):
    resource: str = Field(min_length=1, description='Container resource, e.g. limits.cpu.')
    container_name: Optional[str] = Field(default=None, description='Container to read (the trainer).')
    divisor: Optional[int | str] = Field(default=None, description='Output unit of the resource (default 1).')


class EnvVarSource(SpecModel):
    secret_key_ref: Optional[SecretKeySelector] = Field(default=None, description='A key of a Secret (policy.allowedSecrets or the storage Secret).')
    config_map_key_ref: Optional[ConfigMapKeySelector] = Field(default=None, description='A key of a ConfigMap.')
    field_ref: Optional[ObjectFieldSelector] = Field(default=None, description='A field of the pod.')
    resource_field_ref: Optional[ResourceFieldSelector] = Field(default=None, description='A resource of the container.')


class EnvVar(SpecModel):
    """core/v1 EnvVar. Names: the documented ones (HF_TOKEN, tracker and storage credentials...) or the admin's."""

    name: str = Field(min_length=1, description="Variable name: documented names, or those policy.allowedEnv allows.")
    value: Optional[str] = Field(default=None, description='The value.')
    value_from: Optional[EnvVarSource] = Field(default=None, description='Where the value comes from.')


class KeyToPath(SpecModel):
    key: str = Field(min_length=1, description='The key to project.')
    path: str = Field(min_length=1, description='Relative path of the file.')
    mode: Optional[int] = Field(default=None, description='File mode bits.')


class SecretVolumeSource(SpecModel):
    secret_name: str = Field(min_length=1, description="Secret name (in the resource's namespace).")
    items: Optional[list[KeyToPath]] = Field(default=None, description='Keys to project (default: all).')
    default_mode: Optional[int] = Field(default=None, description='File mode bits (default 0644).')
    optional: Optional[bool] = Field(default=None, description='Whether the Secret may be absent.')


class ConfigMapVolumeSource(SpecModel):
    name: str = Field(min_length=1, description='ConfigMap name.')
    items: Optional[list[KeyToPath]] = Field(default=None, description='Keys to project (default: all).')
    default_mode: Optional[int] = Field(default=None, description='File mode bits (default 0644).')
    optional: Optional[bool] = Field(default=None, description='Whether the ConfigMap may be absent.')


class SecretProjection(SpecModel):
    name: str = Field(min_length=1, description='Secret name (policy.allowedSecrets or the storage Secret).')
    items: Optional[list[KeyToPath]] = Field(default=None, description='Keys to project (default: all).')
    optional: Optional[bool] = Field(default=None, description='Whether the Secret may be absent.')


class ConfigMapProjection(SpecModel):
    name: str = Field(min_length=1, description='ConfigMap name.')
    items: Optional[list[KeyToPath]] = Field(default=None, description='Keys to project (default: all).')
    optional: Optional[bool] = Field(default=None, description='Whether the ConfigMap may be absent.')


class VolumeProjection(SpecModel):
    secret: Optional[SecretProjection] = Field(default=None, description="A Secret's keys.")
    config_map: Optional[ConfigMapProjection] = Field(default=None, description="A ConfigMap's keys.")
    downward_api: Optional[FreeForm] = core_type(
        "DownwardAPIProjection", "Pod fields (core/v1 DownwardAPIProjection).", alias="downwardAPI")
    service_account_token: Optional[FreeForm] = core_type(
        "ServiceAccountTokenProjection", "A token of the pod's ServiceAccount (core/v1 ServiceAccountTokenProjection).")
    cluster_trust_bundle: Optional[FreeForm] = core_type(
        "ClusterTrustBundleProjection", "A ClusterTrustBundle's certificates (core/v1 ClusterTrustBundleProjection).")


class ProjectedVolumeSource(SpecModel):
    sources: list[VolumeProjection] = Field(default_factory=list, description='The projections.')
    default_mode: Optional[int] = Field(default=None, description='File mode bits (default 0644).')


class PersistentVolumeClaimVolumeSource(SpecModel):
    claim_name: str = Field(min_length=1, description="PersistentVolumeClaim name (in the resource's namespace).")
    read_only: Optional[bool] = Field(default=None, description='Mount read-only.')


class EmptyDirVolumeSource(SpecModel):
    medium: Optional[str] = Field(default=None, description='"" (node disk) or Memory.')
    size_limit: Optional[int | str] = Field(default=None, description='Size limit, e.g. 10Gi.')


# Typed volume kinds: the default allow list and those that name Secrets the policy must see.
TYPED_VOLUME_KINDS = ("secret", "configMap", "projected", "persistentVolumeClaim", "emptyDir")
# Every other source field of core/v1 Volume, passed through as an object when the admin allows its kind.
OTHER_VOLUME_KINDS = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "downwardAPI", "ephemeral", "fc",
    "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs",
    "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos", "vsphereVolume",
)
VOLUME_KINDS = tuple(sorted(TYPED_VOLUME_KINDS + OTHER_VOLUME_KINDS))


def _other_kind(type_name: str, **kw: Any) -> Any:
    return core_type(type_name, f"A core/v1 {type_name}, where policy.allowedVolumeKinds allows this kind.", **kw)


class Volume(SpecModel):
    """core/v1 Volume: a name and one source (none: an emptyDir, as in Kubernetes)."""

    name: str = Field(min_length=1, max_length=63, description='Volume name (a DNS label), referenced by volumeMounts.')
    secret: Optional[SecretVolumeSource] = Field(default=None, description='A Secret (policy.allowedSecrets or the storage Secret).')
    config_map: Optional[ConfigMapVolumeSource] = Field(default=None, description='A ConfigMap.')
    projected: Optional[ProjectedVolumeSource] = Field(default=None, description='Several sources in one directory.')
    persistent_volume_claim: Optional[PersistentVolumeClaimVolumeSource] = Field(default=None, description='A PersistentVolumeClaim, e.g. one holding the dataset or the model.')
    empty_dir: Optional[EmptyDirVolumeSource] = Field(default=None, description="Scratch space for the pod's lifetime.")
    aws_elastic_block_store: Optional[FreeForm] = _other_kind("AWSElasticBlockStoreVolumeSource")
    azure_disk: Optional[FreeForm] = _other_kind("AzureDiskVolumeSource")
    azure_file: Optional[FreeForm] = _other_kind("AzureFileVolumeSource")
    cephfs: Optional[FreeForm] = _other_kind("CephFSVolumeSource")
    cinder: Optional[FreeForm] = _other_kind("CinderVolumeSource")
    csi: Optional[FreeForm] = _other_kind("CSIVolumeSource")
    downward_api: Optional[FreeForm] = _other_kind("DownwardAPIVolumeSource", alias="downwardAPI")
    ephemeral: Optional[FreeForm] = _other_kind("EphemeralVolumeSource")
    fc: Optional[FreeForm] = _other_kind("FCVolumeSource")
    flex_volume: Optional[FreeForm] = _other_kind("FlexVolumeSource")
    flocker: Optional[FreeForm] = _other_kind("FlockerVolumeSource")
    gce_persistent_disk: Optional[FreeForm] = _other_kind("GCEPersistentDiskVolumeSource")
    git_repo: Optional[FreeForm] = _other_kind("GitRepoVolumeSource")
    glusterfs: Optional[FreeForm] = _other_kind("GlusterfsVolumeSource")
    host_path: Optional[FreeForm] = _other_kind("HostPathVolumeSource")
    image: Optional[FreeForm] = _other_kind("ImageVolumeSource")
    iscsi: Optional[FreeForm] = _other_kind("ISCSIVolumeSource")
    nfs: Optional[FreeForm] = _other_kind("NFSVolumeSource")
    photon_persistent_disk: Optional[FreeForm] = _other_kind("PhotonPersistentDiskVolumeSource")
    portworx_volume: Optional[FreeForm] = _other_kind("PortworxVolumeSource")
    quobyte: Optional[FreeForm] = _other_kind("QuobyteVolumeSource")
    rbd: Optional[FreeForm] = _other_kind("RBDVolumeSource")
    scale_io: Optional[FreeForm] = _other_kind("ScaleIOVolumeSource", alias="scaleIO")
    storageos: Optional[FreeForm] = _other_kind("StorageOSVolumeSource")
    vsphere_volume: Optional[FreeForm] = _other_kind("VsphereVirtualDiskVolumeSource")

    def kinds(self) -> list[str]:
        """The source fields set (wire names); none is an emptyDir, Kubernetes' default."""
        return [key for key in self.to_wire() if key != "name"] or ["emptyDir"]


class VolumeMount(SpecModel):
    name: str = Field(min_length=1, max_length=63, description='Name of a volume of spec.podTemplate.volumes.')
    mount_path: str = Field(
        min_length=1, description=f"Absolute path under one of {', '.join(MOUNT_PATH_PREFIXES)} (the image's own "
        "directories are not to be covered)."
    )
    read_only: Optional[bool] = Field(default=None, description='Mount read-only.')
    sub_path: Optional[str] = Field(default=None, description='Path within the volume to mount (default: its root).')
    sub_path_expr: Optional[str] = Field(default=None, description='subPath with $(VAR) references expanded.')
    mount_propagation: Optional[Literal["None", "HostToContainer"]] = Field(default=None, description='None or HostToContainer.')
    recursive_read_only: Optional[Literal["Disabled", "IfPossible", "Enabled"]] = Field(default=None, description='Disabled, IfPossible or Enabled.')


class Toleration(SpecModel):
    key: Optional[str] = Field(default=None, description='Taint key (empty with operator Exists: every taint).')
    operator: Optional[Literal["Exists", "Equal"]] = Field(default=None, description='Exists or Equal (default).')
    value: Optional[str] = Field(default=None, description='Taint value (operator Equal).')
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(default=None, description='NoSchedule, PreferNoSchedule or NoExecute (empty: all).')
    toleration_seconds: Optional[int] = Field(default=None, description='How long a NoExecute taint is tolerated.')


class Affinity(SpecModel):
    """core/v1 Affinity. The policy reads which kind is used (nodeAffinity picks nodes); the API server
    validates the terms."""

    node_affinity: Optional[FreeForm] = core_type(
        "NodeAffinity", "core/v1 NodeAffinity (refused while policy.allowedNodeSelectors is set).")
    pod_affinity: Optional[FreeForm] = core_type("PodAffinity", "core/v1 PodAffinity.")
    pod_anti_affinity: Optional[FreeForm] = core_type("PodAntiAffinity", "core/v1 PodAntiAffinity.")
