"""The API verbs the operator uses: the least-privilege RBAC for its ServiceAccount.

For the Helm chart (charts/lora-finetune-operator): a ClusterRole with exactly these rules
(a Role per namespace works too when LFT_NAMESPACES lists namespaces; kopf then needs no
cluster-scoped watches except the CRD and peering rules marked below).

    apiGroups: [finetune.dev]
      resources: [lorafinetunes]                 verbs: [get, list, watch]
      resources: [lorafinetunes/status]          verbs: [get, patch]
    apiGroups: [batch]
      resources: [jobs]                          verbs: [get, list, watch, create, patch, delete]
    apiGroups: [""]
      resources: [pods]                          verbs: [get, list, watch]
      resources: [configmaps]                    verbs: [get, create]
      resources: [serviceaccounts]               verbs: [get, create]
      resources: [services]                      verbs: [get, create]     (multi-node runs)
      resources: [secrets]                       verbs: [get]
      resources: [events]                        verbs: [create, patch, list]
      resources: [namespaces]                    verbs: [list, watch]     (kopf: namespace patterns)
    apiGroups: [rbac.authorization.k8s.io]
      resources: [roles, rolebindings]           verbs: [get, create]
    apiGroups: [apiextensions.k8s.io]
      resources: [customresourcedefinitions]     verbs: [list, watch]     (kopf: resource discovery)
    apiGroups: [kopf.dev]                                                 (only with peering, LFT_PEERING_NAME)
      resources: [clusterkopfpeerings, kopfpeerings]  verbs: [list, watch, patch, get]

Why each one:
- lorafinetunes get/list/watch: kopf watches them; the reconciler reads the fresh object.
- lorafinetunes/status get/patch: the operator merge-patches status. The operator also grants
  get/patch on lorafinetunes/status (one resourceName) to each trainer's Role, and Kubernetes
  only lets it grant what it holds itself (RBAC escalation check).
- jobs create/patch: the training Job; patch sets parallelism (suspend/resume/stop), backoffLimit,
  activeDeadlineSeconds and ttlSecondsAfterFinished (runPolicy changes). jobs delete: only the per-node
  Jobs of a multi-node run, all at once when an attempt fails or the run is suspended (gang).
- services get/create: the headless Service of a multi-node run (its pods' DNS names).
- pods get/list/watch: attempts, exit codes and termination messages.
- configmaps, serviceaccounts, roles, rolebindings get/create: the per-run children; never updated
  (spec changes after the Job exists are reported, not applied). Their deletion is left to the garbage
  collector through ownerReferences.
- secrets get: only to check that the storage Secret exists, with a metadata-only request
  (Accept: PartialObjectMetadata): the values never reach the operator.
- events create/patch: Kubernetes Events for every transition (kopf also posts its own).
- events list: the Job controller's FailedCreate Events of a Job that has no pod (quota, Pod
  Security admission, a missing ServiceAccount), with a field selector on the Job's uid.

The trainer's own Role (builders.trainer_role): get/patch on lorafinetunes/status, resourceNames
[<the resource's name>], nothing else.
"""

OPERATOR_RULES: list[dict] = [
    {"apiGroups": ["finetune.dev"], "resources": ["lorafinetunes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["finetune.dev"], "resources": ["lorafinetunes/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps", "serviceaccounts", "services"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "list"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["get", "create"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
]

# Only when peering is enabled (LFT_PEERING_NAME set): kopf's peering objects.
PEERING_RULES: list[dict] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings", "kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]
