"""The kopf operator for LoRAFineTune resources (`python -m lft_operator`).

Modules, in the order data flows through them:

- lft_api        (not here: api/lft_api, shared with the trainer) spec, status, contract, conditions
- crdgen.py      the CRD, generated from lft_api.resource (`python -m lft_operator.crdgen --write|--check`)
- handlers.py    kopf wiring: watches of LoRAFineTunes, their Jobs and pods trigger the reconciler
- reconcile.py   one reconcile: read, validate, create children, decide, write status, post Events
- validation.py  what the schema cannot say (unknown fields, QLoRA needs a GPU, mounts need volumes) (pure)
- ownership.py   one live run per output prefix of a namespace, accepted runs first: OutputInUse
                 (claims come from a kopf index)
- builders.py    ConfigMap, ServiceAccount, Role, RoleBinding and Job manifests (pure)
- status/        phase, conditions, attempts, Events and Job patches from what was observed (pure):
                 the LoRAFineTuneStatus model built by rules (decide.py), failures outside the
                 trainer (failures.py: refused Jobs, uncreatable pods, checkpoint health)
- views.py       the few fields of Jobs and pods the status logic reads (pure)
- events.py      Kubernetes Events, posted in the background
- kube.py        a small async REST client (aiohttp, credentials from the official client's loaders);
                 every write asks for strict server-side field validation
- workqueue.py   per-resource coalescing queue with retry backoff
- multinode.py   a multi-node run's objects: one Job per node, the Service, its NetworkPolicy, the env of
                 torchrun (pure)
- gang_reconcile.py  the reconcile of a multi-node run: every node's Job and pod, one attempt
                 ended on every node when any pod fails (status/gang.py decides, pure)
- policy.py      the admin policy a podTemplate must satisfy (pure)
- kopf_workarounds.py  two kopf 1.45 defects that left the operator blind (namespaces), patched at start
- leader.py      high availability: leader election on a coordination.k8s.io/v1 Lease; only the
                 leader reconciles (lease.py: the acquire/renew/expire decisions, pure)
- settings.py (pydantic-settings, LFT_*), metrics.py, rbac.py (the API verbs the operator needs), main.py

Design: level-triggered, like controller-runtime. Any event of a resource, its Job or its pods
queues one reconcile of the resource, which recomputes the status from the current state. No
kopf change handlers, so no finalizers and no kopf annotations on the resources: deleting one
never waits for the operator, the garbage collector removes the children (ownerReferences).

Kubernetes 1.20 has no Job suspend and no pod failure policy: suspend sets the Job's parallelism
to 0 (the Job controller deletes the pod gracefully; the trainer checkpoints on SIGTERM and exits
4) and resume sets it back to 1 (a new pod resumes from the checkpoint). A permanent failure
(invalid input) or the operator's own retry count stops the Job with parallelism 0 and a past
activeDeadlineSeconds, so the Job ends Failed (keeping the failed pod for its logs) and its
ttlSecondsAfterFinished still applies.

Multi-node runs (training.nodes > 1) are one Job per node with a fixed node rank, not one Indexed
Job: Kubernetes 1.20 (our local cluster) has no Indexed Jobs (1.21 alpha, 1.24 GA), and a Job per
node works on every version. The Jobs have backoffLimit 0 and the operator, not the Job controller,
owns retries: a failed pod of any node ends the attempt on every node (deleting its Jobs), and the
next attempt's ranks all resume from the newest checkpoint. The rendezvous master is the cluster IP
of the run's Service (no cluster DNS needed), and torchrun's static rendezvous does the rest.

Why a hand-written client, work queue and CRD generator rather than the obvious libraries:
- kube.py, workqueue.py: the apply -> Job latency benchmark (bench/operator_scale.py: N resources
  applied at once, targets p50 <= 0.5 s and all N Jobs within 60 s) set the design. kopf's timers
  and change handlers are per object and come with its finalizer (deleting a resource then waits
  for the operator) and its annotations; the official client is synchronous (a thread per call).
  So kopf only watches and indexes, and one asyncio reconciler does the work: a coalescing queue
  that puts never-reconciled resources first, and an aiohttp client of ~150 lines, whose status
  write is a JSON patch guarded by uid and resourceVersion.
- crdgen.py: Kubernetes 1.20 accepts only structural schemas (no $ref, no anyOf with null, typed
  nodes, boolean exclusive bounds): pydantic's JSON Schema 2020-12 needs that conversion, and
  generating it from the same models the operator validates with keeps the two from drifting.
"""
