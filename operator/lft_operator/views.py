"""Small, immutable views of the Job and pods the status logic needs (pure).

The operator's indexes keep these instead of whole objects: less memory per watched pod, and
the status logic gets plain values to test against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lft_api import contract
from lft_api.scrub import scrub

from .builders import APPLIED_SPEC_ANNOTATION, CONTAINER_NAME, KUEUE_QUEUE_LABEL, RUN_POLICY_ANNOTATION

# Multi-node runs (multinode.py): the Job controller's completion index of an Indexed Job's pod is its node
# rank (a label since Kubernetes 1.28, an annotation always); the operator's label names the attempt.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
NODE_RANK_LABEL = COMPLETION_INDEX  # the pod label holding a multi-node pod's rank (lft_cli reads it too)
ATTEMPT_LABEL = f"{contract.API_GROUP}/attempt"


def completion_index(meta: dict[str, Any]) -> int | None:
    value = (meta.get("labels") or {}).get(COMPLETION_INDEX) or (meta.get("annotations") or {}).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def label_int(meta: dict[str, Any], key: str) -> int | None:
    value = (meta.get("labels") or {}).get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def controller_uid(meta: dict[str, Any]) -> str | None:
    """uid of the object's controlling owner (the Job of a pod, the LoRAFineTune of a Job)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def name_holder(kind: str, name: str, wanted: dict[str, Any], existing: dict[str, Any]) -> tuple[bool, str] | None:
    """Who holds a name the operator wants for a run's object, from both objects' metadata: None when it is
    the run itself; else (transient, message): transient when it is an earlier LoRAFineTune of the same
    name's object (the garbage collector removes it), not when nothing or something else owns it."""
    wanted_uid = controller_uid(wanted)
    if wanted_uid is None or controller_uid(existing) == wanted_uid:
        return None
    ref = next((r for r in existing.get("ownerReferences") or [] if r.get("controller")), None)
    if ref is not None and ref.get("kind") == contract.KIND:
        return True, (f"{kind} {name} belongs to an earlier LoRAFineTune of this name (UID {ref.get('uid')}), "
                      "which is being deleted")
    holder = f"owned by {ref.get('kind')} {ref.get('name')}" if ref is not None else "no owner"
    return False, (f"{kind} {name} exists and was not created for this LoRAFineTune ({holder}); the operator does "
                   "not use or change it: delete it, or give the LoRAFineTune another name")


def _scrubbed(text: str | None) -> str | None:
    """Text from a pod, credentials masked by pattern: the kubelet's log tail (terminationMessagePolicy
    FallbackToLogsOnError) may hold what a crashing process printed."""
    return scrub(text) if text else text


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    created: str
    job_uid: str | None = None
    deleted: bool = False
    phase: str = "Pending"  # pod.status.phase
    exit_code: int | None = None  # trainer container terminated
    term_reason: str | None = None  # e.g. Error, OOMKilled, Completed
    term_message: str | None = None  # the termination message (JSON from the trainer, or log tail)
    finished_at: str | None = None
    running: bool = False  # trainer container running
    waiting_reason: str | None = None  # e.g. ImagePullBackOff, CreateContainerConfigError
    waiting_message: str | None = None
    pod_reason: str | None = None  # pod.status.reason, e.g. Evicted
    pod_message: str | None = None
    unschedulable: str | None = None  # the scheduler's message while the pod cannot be placed
    disrupted: str | None = None  # the DisruptionTarget condition's reason (eviction, preemption, drain)
    disrupted_message: str | None = None
    node_rank: int | None = None  # multi-node runs only: the completion index
    attempt: int | None = None
    node_name: str | None = None  # spec.nodeName: the machine it was scheduled to
    # The Ready condition False while the container last reported running: the trainer has no readiness probe,
    # so only the node controller sets that (its node stopped reporting: MarkPodsNotReady); since when.
    not_ready_since: str | None = None

    @property
    def node_lost(self) -> bool:
        """The pod's node stopped reporting: its last known state is running, the node controller says not ready."""
        return self.running and self.not_ready_since is not None and not self.terminated

    @property
    def terminated(self) -> bool:
        return self.exit_code is not None or self.phase in ("Succeeded", "Failed")

    @classmethod
    def from_pod(cls, body: dict[str, Any]) -> PodView:
        meta = body.get("metadata", {})
        status = body.get("status") or {}
        fields: dict[str, Any] = {}
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") != CONTAINER_NAME:
                continue
            state = cs.get("state") or {}
            if "terminated" in state and state["terminated"] is not None:
                t = state["terminated"]
                fields.update(
                    exit_code=t.get("exitCode"),
                    term_reason=t.get("reason"),
                    term_message=_scrubbed(t.get("message")),
                    finished_at=t.get("finishedAt"),
                )
            elif state.get("running") is not None:
                fields["running"] = True
            elif state.get("waiting") is not None:
                fields.update(
                    waiting_reason=state["waiting"].get("reason"),
                    waiting_message=_scrubbed(state["waiting"].get("message")),
                )
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                fields["unschedulable"] = cond.get("message") or "Unschedulable"
            elif cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
                fields["disrupted"] = cond.get("reason") or "DisruptionTarget"
                fields["disrupted_message"] = cond.get("message")
            elif cond.get("type") == "Ready" and cond.get("status") == "False":
                fields["not_ready_since"] = cond.get("lastTransitionTime") or ""
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            created=meta.get("creationTimestamp") or "",
            job_uid=controller_uid(meta),
            deleted=meta.get("deletionTimestamp") is not None,
            phase=status.get("phase") or "Pending",
            pod_reason=status.get("reason"),
            pod_message=_scrubbed(status.get("message")),
            node_rank=completion_index(meta) if label_int(meta, ATTEMPT_LABEL) is not None else None,
            attempt=label_int(meta, ATTEMPT_LABEL),
            node_name=(body.get("spec") or {}).get("nodeName"),
            **fields,
        )


@dataclass(frozen=True)
class JobView:
    name: str
    uid: str
    owner_uid: str | None = None
    created: str = ""
    parallelism: int = 1
    suspended: bool = False  # spec.suspend (the run's spec.suspend, or Kueue holding a queued Job)
    complete: bool = False
    failed_reason: str | None = None  # set when the Job has condition Failed=True
    failed_message: str | None = None
    completion_time: str | None = None
    applied_spec: str | None = None  # JSON
    run_policy: str | None = None  # JSON of the runPolicy last applied
    attempt: int | None = None  # multi-node runs only: one Indexed Job per attempt
    nodes: int = 1  # spec.completions
    deleting: bool = False  # deletionTimestamp set
    # Kueue: the kueue.x-k8s.io/queue-name label as the Job has it (the operator's from spec.queueName, or the one
    # Kueue's webhook set from the namespace's default LocalQueue), and the Job's Workload (the watch cache's).
    queue_name: str | None = None
    workload: WorkloadView | None = None

    @classmethod
    def from_job(cls, body: dict[str, Any]) -> JobView:
        meta = body.get("metadata", {})
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        complete = False
        failed_reason = failed_message = None
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Complete":
                complete = True
            elif cond.get("type") == "Failed":
                failed_reason = cond.get("reason") or "Failed"
                failed_message = cond.get("message")
        annotations = meta.get("annotations") or {}
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            owner_uid=controller_uid(meta),
            created=meta.get("creationTimestamp") or "",
            parallelism=spec.get("parallelism", 1),
            suspended=bool(spec.get("suspend")),
            complete=complete,
            failed_reason=failed_reason,
            failed_message=failed_message,
            completion_time=status.get("completionTime"),
            applied_spec=annotations.get(APPLIED_SPEC_ANNOTATION),
            run_policy=annotations.get(RUN_POLICY_ANNOTATION),
            attempt=label_int(meta, ATTEMPT_LABEL),
            nodes=spec.get("completions") or 1,
            deleting=meta.get("deletionTimestamp") is not None,
            queue_name=(meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL) or None,
        )


# Kueue's label on the Workload it makes for a Job (v0.17.0: jobframework sets it to the Job's uid; the Workload
# is also controlled by the Job through an ownerReference).
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


@dataclass(frozen=True)
class KueueCondition:
    status: str  # True | False | Unknown
    reason: str = ""
    message: str = ""
    since: str = ""  # lastTransitionTime

    @property
    def true(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True)
class WorkloadView:
    """What the status reads of a kueue.x-k8s.io/v1beta2 Workload: its conditions (QuotaReserved, Admitted,
    Evicted, Preempted, Requeued, Finished; apis/kueue/v1beta2/workload_types.go), spec.active, the queue."""

    name: str
    uid: str
    job_uid: str | None = None
    queue_name: str | None = None  # spec.queueName: the LocalQueue
    active: bool = True  # spec.active (default true); false: deactivated, evicted with reason Deactivated
    cluster_queue: str | None = None  # status.admission.clusterQueue, while admitted
    conditions: tuple[tuple[str, KueueCondition], ...] = ()

    def condition(self, type_: str) -> KueueCondition | None:
        return next((c for t, c in self.conditions if t == type_), None)

    def is_true(self, type_: str) -> bool:
        found = self.condition(type_)
        return found is not None and found.true

    @property
    def admitted_at(self) -> str:
        """When Kueue last admitted it ("" while not admitted): its Job wants pods from then on."""
        found = self.condition("Admitted")
        return found.since if found is not None and found.true else ""

    @classmethod
    def from_workload(cls, body: dict[str, Any]) -> WorkloadView:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        job_uid = (meta.get("labels") or {}).get(KUEUE_JOB_UID_LABEL)
        if not job_uid:
            job_uid = next((r.get("uid") for r in meta.get("ownerReferences") or []
                            if r.get("controller") and r.get("kind") == "Job"), None)
        conditions = tuple(
            (c.get("type", ""), KueueCondition(c.get("status", "Unknown"), c.get("reason") or "",
                                               _scrubbed(c.get("message")) or "", c.get("lastTransitionTime") or ""))
            for c in status.get("conditions") or [] if isinstance(c, dict)
        )
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            job_uid=job_uid,
            queue_name=spec.get("queueName") or None,
            active=spec.get("active") is not False,
            cluster_queue=(status.get("admission") or {}).get("clusterQueue") or None,
            conditions=conditions,
        )
