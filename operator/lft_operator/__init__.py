"""The kopf operator for LoRAFineTune resources (`python -m lft_operator`).

Modules, in the order data flows through them:

- lft_api        (not here: api/lft_api, shared with the trainer) spec, status, contract, conditions
- crdgen.py      the CRD, generated from lft_api.resource (`python -m lft_operator.crdgen --write|--check`)
- handlers.py    kopf wiring: watches of LoRAFineTunes, their Jobs and pods trigger the reconciler
- reconcile.py   the Reconciler: triggers into the work queue; the reconcile of a single-pod run (read,
                 validate, create the Job, decide); build_reconciler wires its queue and Event poster
- children.py    what both run paths act through (RunChildren): create or adopt a child and its companions,
                 FailedCreate lookups, output claims, the trusted status, apply a decision (patches, Events)
- validation.py  what the schema cannot say (unknown fields, QLoRA needs a GPU, mounts need volumes) (pure)
- ownership.py   one live run per output prefix of a namespace, accepted runs first: OutputInUse
                 (claims come from a kopf index)
- builders.py    ConfigMap, ServiceAccount, Role, RoleBinding and Job manifests (pure); job_policy.py the
                 Job's podFailurePolicy and its suspend, stop and runPolicy patches (pure)
- status/        phase, conditions, attempts, Events and Job patches from what was observed (pure):
                 the LoRAFineTuneStatus model built by rules (decide.py: single-pod, gang.py: multi-node,
                 rules.py: what both apply), failures outside the trainer (failures.py: refused Jobs,
                 uncreatable pods, checkpoint health), Kueue's hold (queue.py)
- views.py       the few fields of Jobs and pods the status logic reads (pure)
- events.py      Kubernetes Events, posted in the background
- kube.py        a small async REST client (aiohttp, credentials from the official client's loaders);
                 every write asks for strict server-side field validation
- workqueue.py   per-resource coalescing queue with retry backoff
- multinode.py   a multi-node run's objects: one Indexed Job per attempt, the Service, its NetworkPolicy,
                 the env of torchrun (pure)
- gang_reconcile.py  the reconcile of a multi-node run, reconcile.py's peer over children.py: the attempt's
                 Job and pods, the next attempt once the Job controller ended a failed one (status/gang.py)
- kueue.py, kueue_handlers.py  Kueue's Workloads: watched into the cache, spec.active patched
- policy.py      the admin policy a podTemplate must satisfy (pure)
- kopf_workarounds.py  two kopf 1.45 defects that left the operator blind (namespaces), patched at start
- leader.py      high availability: leader election on a coordination.k8s.io/v1 Lease; only the
                 leader reconciles (lease.py: the acquire/renew/expire decisions, pure)
- settings.py (pydantic-settings, LFT_*), metrics.py, rbac.py (the API verbs the operator needs), main.py

Design: level-triggered, like controller-runtime. Any event of a resource, its Job or its pods
queues one reconcile of the resource, which recomputes the status from the current state. No
kopf change handlers, so no finalizers and no kopf annotations on the resources: deleting one
never waits for the operator, the garbage collector removes the children (ownerReferences).

Supported Kubernetes: 1.34 to 1.37. The Jobs use the Job controller's own primitives (builders.job,
job_policy.py), and the operator keeps only what a Job cannot do:
- suspend is the Job's spec.suspend (created suspended, patched true/false): the Job controller deletes the
  pod gracefully (the trainer checkpoints on SIGTERM and exits 4; a suspended pod is no failure), and a
  resumed Job's new pod resumes from the checkpoint;
- retries: runPolicy.backoffLimit is the Job's backoffLimit, counted by the Job controller (status.failed);
  the operator reports the attempts (status.attemptHistory) and the Job's verdict, with the last attempt's
  reason;
- its podFailurePolicy fails the Job at once on exit code 3 (invalid input: FailJob, reason PodFailurePolicy;
  the status keeps the trainer's reason and message) and ignores disrupted pods (DisruptionTarget: eviction,
  preemption, drain: no retry spent); podReplacementPolicy Failed starts a new pod only once the last one
  ended (its checkpoint saved);
- the operator stops a Job itself (a past activeDeadlineSeconds) only when no pod could be created for
  longer than its pod-creation timeout.

Multi-node runs (training.nodes > 1) are one Indexed Job per attempt (multinode.py): a pod's completion index
is its node rank, backoffLimit 0 makes one failed pod fail the Job (whose controller stops the other ranks),
and the operator starts the next attempt's Job, every rank resuming from the newest checkpoint (gang
semantics; status/gang.py). The rendezvous master is the cluster IP of the run's Service in front of the
index-0 pod (no cluster DNS needed), and torchrun's static rendezvous does the rest.

Why a hand-written client, work queue and CRD generator rather than the obvious libraries:
- kube.py, workqueue.py: the apply -> Job latency benchmark (bench/operator_scale.py: N resources
  applied at once, targets p50 <= 0.5 s and all N Jobs within 60 s) set the design. kopf's timers
  and change handlers are per object and come with its finalizer (deleting a resource then waits
  for the operator) and its annotations; the official client is synchronous (a thread per call).
  So kopf only watches and indexes, and one asyncio reconciler does the work: a coalescing queue
  that puts never-reconciled resources first, and an aiohttp client of ~150 lines, whose status
  write is a JSON patch guarded by uid and resourceVersion.
- crdgen.py: Kubernetes accepts only structural schemas (no $ref, no anyOf with null, typed
  nodes, boolean exclusive bounds): pydantic's JSON Schema 2020-12 needs that conversion, and
  generating it from the same models the operator validates with keeps the two from drifting.
"""
