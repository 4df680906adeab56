"""The kopf operator for LoRAFineTune resources (`python -m lft_operator`).

Modules, in the order data flows through them:

- lft_api        (not here: api/lft_api, shared with the trainer) spec, status, contract, conditions
- crdgen.py      the CRD, generated from lft_api.resource (`python -m lft_operator.crdgen --write|--check`)
- handlers.py    kopf wiring: watches of LoRAFineTunes, their Jobs and pods trigger the reconciler
- reconcile.py   one reconcile: read, validate, create children, decide, write status, post Events
- validation.py  what the schema cannot say (QLoRA needs a GPU, mounts need volumes, ...) (pure)
- builders.py    ConfigMap, ServiceAccount, Role, RoleBinding and Job manifests (pure)
- status.py      phase, conditions, attempts, Events and Job patches from what was observed (pure)
- views.py       the few fields of Jobs and pods the status logic reads (pure)
- kube.py        a small async REST client (aiohttp, credentials from the official client's loaders)
- workqueue.py   per-resource coalescing queue with retry backoff
- settings.py, metrics.py, rbac.py (the API verbs the operator needs), main.py

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
"""
