"""The API calls the operator makes: the one table its RBAC comes from.

USES lists every (API group, resource, verbs) the operator needs, with where the calls are made.
Three checks keep it true (tests/unit/test_operator_rbac.py and test_chart.py):
- a scan of this package's code finds every API call (Kube methods on a resource path, kopf
  watches and indexes) and fails on a call the table lacks, and on a "code" row no call uses;
- the chart's rendered Roles grant exactly these rules (nothing cluster-wide on Secrets, no
  verb the table does not list), and the per-run trainer Role only what the operator holds;
- tests/integration/test_operator_rbac.py runs the operator with OPERATOR_RULES (and LEASE_RULES in
  its own namespace) only.

No Secret permission at all: the storage Secret reaches the trainer pod as envFrom, resolved by
the kubelet; a missing one shows as the pod's CreateContainerConfigError in the status. No delete
verb: a Job's own policies end its pods (suspend, podFailurePolicy, backoffLimit; a multi-node attempt's
Indexed Job fails as a whole), and the garbage collector removes every child through its ownerReferences.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Use:
    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    # "code": calls in this package (the scan finds them); "kopf": kopf's own machinery.
    by: str = "code"

    def rule(self) -> dict[str, list[str]]:
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": list(self.verbs)}


USES: tuple[Use, ...] = (
    Use("finetune.dev", "lorafinetunes", ("get", "list", "watch"),
        "kopf watches and indexes them; the reconciler reads the fresh object (reconcile.py)"),
    Use("finetune.dev", "lorafinetunes/status", ("patch",),
        "the operator's status writes; also what each trainer Role grants (RBAC escalation check)"),
    Use("batch", "jobs", ("get", "list", "watch", "create", "patch"),
        "the training Job (a multi-node run: one Indexed Job per attempt): created, patched for spec.suspend "
        "(suspend/resume), runPolicy changes and a stop when no pod can be created (activeDeadlineSeconds)"),
    Use("", "services", ("get", "create"), "the Service of a multi-node run (its cluster IP is the rendezvous master)"),
    Use("networking.k8s.io", "networkpolicies", ("get", "create"),
        "the NetworkPolicy of a multi-node run: its rendezvous and collectives admit the run's own pods only "
        "(get: after a 409)"),
    Use("", "pods", ("list", "watch"), "attempts, exit codes and termination messages (watch, and a list by label)"),
    Use("", "configmaps", ("get", "create"), "the per-run trainer config, created once (get: after a 409)"),
    Use("", "serviceaccounts", ("get", "create"), "the per-run trainer identity"),
    Use("rbac.authorization.k8s.io", "roles", ("get", "create"), "the per-run trainer Role"),
    Use("rbac.authorization.k8s.io", "rolebindings", ("get", "create"), "the per-run trainer RoleBinding"),
    Use("", "events", ("create", "list"),
        "Events for every transition (events.py); list: the Job controller's FailedCreate Events of a "
        "Job without a pod (reconcile._pod_failure)"),
    Use("", "namespaces", ("list", "watch"), "kopf observes the watched namespaces (namespace list only)", by="kopf"),
    Use("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"),
        "kopf discovers the resources it watches", by="kopf"),
)

# The Kueue integration (settings.kueue; the chart's kueue.enabled adds these rules to the operator's role only then).
KUEUE_USES: tuple[Use, ...] = (
    Use("kueue.x-k8s.io", "workloads", ("list", "watch", "patch"),
        "the Workload of each queued Job: its conditions fill the status (kueue_handlers.py index); patch: "
        "spec.active for spec.suspend under Kueue (kueue.patch_workloads)"),
)

# Leader election (leader.py): one Lease in the operator's own namespace, through a namespaced Role
# (never list/watch/delete): read, create, renew (PUT with the resourceVersion it read).
LEASE_USES: tuple[Use, ...] = (
    Use("coordination.k8s.io", "leases", ("get", "create", "update"), "leader election (leader.py)"),
)

OPERATOR_RULES: list[dict[str, list[str]]] = [u.rule() for u in USES]
LEASE_RULES: list[dict[str, list[str]]] = [u.rule() for u in LEASE_USES]
KUEUE_RULES: list[dict[str, list[str]]] = [u.rule() for u in KUEUE_USES]

# What the trainer's per-run Role (builders.trainer_role) grants on its one resource: patch only. RBAC
# cannot limit the fields; the operator ignores and reverts whatever a trainer writes outside
# contract's trainer-owned fields, and trainer fields written under another run's UID (status/trust.py).
TRAINER_VERBS = ("patch",)


def triples(uses: tuple[Use, ...]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every row."""
    return {(u.group, u.resource, v) for u in uses for v in u.verbs}
