"""The LoRAFineTune API: the spec (trainer config + what only the operator uses) and the status.

The CRD's openAPIV3Schema is generated from these models (crdgen.py), the operator validates
each resource with them, and the trainer's part of the spec is `lft_api.spec.TrainerConfig`,
shared with the trainer image. The Kubernetes core types a tenant sets on the pod (env, volumes,
mounts, tolerations, affinity) are typed in pod_types.py as deep as the admin policy reads them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from .contract import AdapterRef, Artifacts, CheckpointHealth, CheckpointRef, Metrics, Performance, Progress, WireModel
from .pod_types import Affinity, EnvVar, Toleration, Volume, VolumeMount
from .spec import BNB_OPTIMIZERS, TRAINER_CONFIG_RULES, TrainerConfig
from .spec_base import CelRules, SpecModel, ratcheting_rule
from .tracking_spec import SecretRef

# The Job is named "<name>-trainer" and its name is copied into the pods' `job-name` label,
# whose values are limited to 63 characters.
JOB_SUFFIX = "-trainer"
MAX_NAME_LENGTH = 63 - len(JOB_SUFFIX)

# Kubernetes resource.Quantity, as in the core API's OpenAPI: "2", "500m", "16Gi", "1e3".
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = int | str



def _quantity(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra={"pattern": QUANTITY_PATTERN})


class ResourcesSpec(SpecModel):
    """Compute resources of the trainer pod."""

    gpus: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "GPUs per pod (limit of gpuResourceName). With more than one, the trainer runs one process per GPU."
        ),
    )
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", min_length=1, description="Extended resource name of a GPU (e.g. amd.com/gpu)."
    )
    cpu: Quantity | None = _quantity("CPU request (e.g. 4 or 3500m). No CPU limit is set: throttling slows training.")
    memory: Quantity | None = _quantity("Memory request and limit (e.g. 32Gi).")
    ephemeral_storage: Quantity | None = _quantity(
        "Ephemeral storage request and limit (model download cache, checkpoints before upload), e.g. 50Gi."
    )


class RunPolicy(SpecModel):
    """Retries and lifetime of the training Job. May be changed while the Job runs."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description=(
            "Failed attempts retried before the run fails (errors and preemptions; invalid input is never retried). "
            "Each retry resumes from the newest checkpoint."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Fail the run when its Job has been active this long (the Job's activeDeadlineSeconds: "
        "Kubernetes stops and resets the timer while the Job is suspended).",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete the Job and its pods this long after it finished; the LoRAFineTune and its status stay.",
    )


# Extra volumes and mounts of the trainer pod: bounded, so that the CEL rule below fits the API server's cost budget.
MAX_POD_VOLUMES = 64


class PodTemplateSpec(SpecModel):
    """Extras for the trainer pod."""

    # validation.semantic_problems (InvalidPodTemplate) as CEL: every mount names one of the volumes.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
                "self.volumes.exists(v, v.name == m.name))",
        # (No messageExpression naming the missing ones: the API server estimates any that reads these lists as over
        # its budget, maxItems or not.)
        "message": "every podTemplate.volumeMounts[].name must name a volume of podTemplate.volumes",
        "fieldPath": ".volumeMounts",
    }]})

    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    env: list[EnvVar] = Field(
        default_factory=list,
        description=(
            "Extra environment variables (core/v1 EnvVar): the documented names (HF_TOKEN, storage and tracker "
            "credentials, thread counts) and those the admin allows (policy.allowedEnv); LFT_* are reserved."
        ),
    )
    volumes: list[Volume] = Field(
        default_factory=list, max_length=MAX_POD_VOLUMES,
        description="Extra volumes (core/v1 Volume), e.g. a PVC holding the dataset.",
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, max_length=MAX_POD_VOLUMES,
        description="Mounts of the extra volumes in the trainer container (core/v1 VolumeMount), under /data, /mnt, "
        "/models, /datasets, /cache or /workspace.",
    )
    service_account_name: str | None = Field(
        default=None,
        description=(
            "Run the trainer as this existing ServiceAccount (e.g. one bound to a cloud identity) instead of the "
            "generated <name>-trainer one; it is granted the same right to patch this resource's status."
        ),
    )


# Cross-field rules of the whole spec as CEL (x-kubernetes-validations; self is the spec): TrainerConfig's, and
# those of validation.semantic_problems that read no admin policy (QuantizationNeedsGPU, OptimizerNeedsGPU,
# ProcessesMismatchGPUs).
# (The spec's objects have defaults: lora, training and resources are always there when the rules run.)
SPEC_RULES: CelRules = TRAINER_CONFIG_RULES + [
    ratcheting_rule(
        "self.lora.quantization == 'none' || self.resources.gpus >= 1",
        reads=("lora.quantization", "resources.gpus"),
        messageExpression="'lora.quantization ' + self.lora.quantization + ' (QLoRA, bitsandbytes) needs a GPU: set "
                          "resources.gpus >= 1 or lora.quantization to none'",
        fieldPath=".lora.quantization",
    ),
    ratcheting_rule(
        "!has(self.training.optimizer) || !(self.training.optimizer in " + json.dumps(list(BNB_OPTIMIZERS)).replace('"', "'")
        + ") || self.resources.gpus >= 1",
        reads=("training.optimizer", "resources.gpus"),
        messageExpression="'training.optimizer ' + self.training.optimizer + ' (bitsandbytes) needs a GPU: set "
                          "resources.gpus >= 1 or another optimizer (adamw_torch...)'",
        fieldPath=".training.optimizer",
    ),
    ratcheting_rule(
        "type(self.training.numProcesses) == string || self.training.numProcesses <= 1 || self.resources.gpus <= 1 "
        "|| self.training.numProcesses == self.resources.gpus",
        reads=("training.numProcesses", "resources.gpus"),
        message="training.numProcesses differs from resources.gpus: the trainer runs one process per GPU; leave "
                "numProcesses unset (auto)",
        fieldPath=".training.numProcesses",
    ),
]


class LoRAFineTuneSpec(TrainerConfig):
    """A LoRA fine-tuning run: the trainer's config plus how to run the trainer pod."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SPEC_RULES})

    image: str | None = Field(default=None, description="Trainer image. Default: the operator's LFT_TRAINER_IMAGE.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Pull policy of the trainer image. Default: the operator's setting."
    )
    image_pull_secrets: list[SecretRef] = Field(
        default_factory=list,
        description=(
            "Secrets (type kubernetes.io/dockerconfigjson, in this namespace) for pulling the trainer image: added "
            "after the operator's default ones (Helm value imagePullSecrets, LFT_TRAINER_IMAGE_PULL_SECRETS)."
        ),
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the trainer pod must match.")
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Pod tolerations (core/v1 Toleration), as the admin policy allows."
    )
    affinity: Affinity | None = Field(default=None, description="Pod affinity (core/v1 Affinity).")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the trainer pod.")
    storage_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret whose keys become the trainer's environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, HF_TOKEN...). "
            "Default: the operator's LFT_DEFAULT_STORAGE_SECRET, when that Secret exists. Values are never read "
            "by the operator."
        ),
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        description="Kueue LocalQueue: copied to the Job's kueue.x-k8s.io/queue-name label; with the operator's Kueue "
        "integration on (LFT_KUEUE), the Job is created suspended and Kueue starts it when it admits the run.",
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    suspend: bool = Field(
        default=False,
        description=(
            "true stops the running pod gracefully (the trainer saves a checkpoint first); "
            "false again starts a new attempt that resumes from the newest checkpoint."
        ),
    )
    pod_template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)

    def trainer_config(self) -> TrainerConfig:
        """The trainer's part of this spec."""
        return TrainerConfig.model_validate({name: getattr(self, name) for name in TrainerConfig.model_fields})


# Fields that may change while the Job exists; every other spec change is reported, not applied.
MUTABLE_FIELDS = ("suspend", "runPolicy")


Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]


class QueueStatus(WireModel):
    """Where Kueue holds the run (the operator's Kueue integration, LFT_KUEUE): from the Job's Workload."""

    name: str = Field(description="The LocalQueue (spec.queueName, or the namespace's default that Kueue set).")
    state: Literal["Queued", "Admitted", "Preempted", "Deactivated", "Finished"] = Field(
        description="Queued (waiting for quota), Admitted, Preempted (evicted, requeued), Deactivated, Finished."
    )
    cluster_queue: str | None = Field(default=None, description="The ClusterQueue that admitted the Workload.")
    workload: str | None = Field(default=None, description="The Kueue Workload of the run's current Job.")
    message: str | None = Field(default=None, description="Kueue's own message (e.g. insufficient quota).")
    display: str | None = Field(default=None, description="state (LocalQueue), for the Queue printer column.")


class Condition(WireModel):
    """A condition per the Kubernetes API conventions."""

    type: str = Field(
        max_length=64,  # read by the CRD's immutability rules (crdgen.JOB_EXISTS): bounded for their CEL cost
        description="Accepted, Running, Suspended, Succeeded, Failed, SpecChangeIgnored or CheckpointsHealthy.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed from."
    )

    @model_serializer(mode="wrap")
    def _omit_empty_message(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An empty message is omitted: some API servers (1.20 was one) read "" in a list-map item as null.
        data = handler(self)
        if data.get("message") == "":
            del data["message"]
        return data


AttemptPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped"]


class Attempt(WireModel):
    """One trainer pod."""

    pod: str = Field(description="Pod name.")
    attempt: int | None = Field(default=None, description="Attempt number, from 1; set once the pod started.")
    phase: AttemptPhase = Field(
        description="Pending, Running, Succeeded, Failed, or Stopped (deleted: suspend, or a pod deleted by hand)."
    )
    exit_code: int | None = Field(default=None, description="Exit code of the trainer container.")
    reason: str | None = Field(default=None, description="Why it ended (from the termination message or the pod).")
    message: str | None = Field(default=None, description="Details (truncated).")
    counted: bool | None = Field(default=None, description="Whether this failure counts toward runPolicy.backoffLimit.")
    start_time: str | None = Field(default=None, description="When the pod was created.")
    finish_time: str | None = Field(default=None, description="When the trainer container ended.")


class LoRAFineTuneStatus(WireModel):
    """Observed state. The operator owns every field except progress, metrics, latestCheckpoint,
    checkpointHealth, performance and artifacts, which the trainer patches while it runs."""

    phase: Phase | None = Field(default=None, description="Summary for display; conditions carry the details.")
    message: str | None = Field(default=None, description="Human-readable summary of the current state.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Accepted, Running, Suspended, Succeeded, Failed, SpecChangeIgnored, CheckpointsHealthy.",
    )
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
    job_name: str | None = Field(default=None, description="The training Job.")
    start_time: str | None = Field(default=None, description="When the first trainer pod started.")
    completion_time: str | None = Field(default=None, description="When the run succeeded or failed.")
    attempts: int = Field(
        default=0,
        description="Trainer pods started so far (retries and resumes included; not pods deleted before starting).",
    )
    failed_attempts: int = Field(default=0, description="Failed attempts that count toward runPolicy.backoffLimit.")
    attempt_history: list[Attempt] = Field(default_factory=list, description="The most recent attempts, oldest first.")
    queue: QueueStatus | None = Field(default=None, description="Kueue: the run's queue and Workload state.")
    nodes: int | None = Field(default=None, description="Multi-node runs: the pods of an attempt (training.nodes).")
    ready_nodes: int | None = Field(
        default=None, description="Multi-node runs: pods of the current attempt whose trainer runs."
    )
    nodes_display: str | None = Field(
        default=None,
        description="Multi-node runs: readyNodes/nodes (\"1/2\"), pre-formatted for the Nodes printer column.",
    )
    progress: Progress | None = Field(default=None, description="Training progress, patched by the trainer.")
    metrics: Metrics | None = Field(default=None, description="Latest metrics, patched by the trainer.")
    latest_checkpoint: CheckpointRef | None = Field(
        default=None, description="Newest complete checkpoint, patched by the trainer."
    )
    checkpoint_health: CheckpointHealth | None = Field(
        default=None, description="Whether checkpoint uploads succeed, patched by the trainer."
    )
    adapter: AdapterRef | None = Field(default=None, description="The trained adapter: URI and files with sha256.")
    performance: Performance | None = Field(
        default=None, description="Memory estimate, performance plan and throughput, patched by the trainer."
    )
    artifacts: Artifacts | None = Field(
        default=None,
        description="URIs of the adapter, training_summary.json, metrics.jsonl, loss.png and samples.jsonl, patched by "
        "the trainer as each is first written.",
    )
    trainer_uid: str | None = Field(
        default=None,
        description="The run UID (LFT_UID) the trainer sends with every status patch; trainer fields written under "
        "another UID (e.g. by a pod of an earlier resource of the same name) are ignored and removed by the operator.",
    )


# Status fields the trainer writes; the operator never sends them in its patches (except once,
# when the run succeeded and the trainer has exited: see status.py). RBAC cannot keep a trainer to
# them: the operator reverts what else it writes (operator/lft_operator/status/trust.py).
TRAINER_OWNED_STATUS_FIELDS = (
    "progress", "metrics", "latestCheckpoint", "checkpointHealth", "performance", "artifacts", "trainerUid"
)
# Every other status field is the operator's (wire names, in the model's order).
OPERATOR_OWNED_STATUS_FIELDS = tuple(
    f.alias or n for n, f in LoRAFineTuneStatus.model_fields.items() if (f.alias or n) not in TRAINER_OWNED_STATUS_FIELDS
)
