"""The Helm chart: `helm lint` and `helm template`, with assertions on the rendered manifests.

Needs the helm binary (tests/cluster/install-tools.sh puts it in /var/cache/lft/bin); skipped without it
unless LFT_REQUIRE_TOOLS=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import tomllib
from typing import Any

import pytest
import yaml

from tests.support.tools import CHART, HELM, ROOT

RELEASE, NAMESPACE = "lft", "lft-system"
if HELM is None:
    if os.environ.get("LFT_REQUIRE_TOOLS") == "1":
        pytest.fail("helm not found (LFT_REQUIRE_TOOLS=1): run tests/cluster/install-tools.sh", pytrace=False)
    pytest.skip("helm not found: run tests/cluster/install-tools.sh (or set LFT_HELM)", allow_module_level=True)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, check=check)


def set_args(values: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def render(values: dict[str, str] | None = None, *extra: str) -> list[dict[str, Any]]:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(values or {}), *extra)
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict]) -> dict:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: list[dict]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(docs)["env"]}


def rules_of(docs: list[dict]) -> list[dict]:
    """The rules of every (Cluster)Role bound to the operator's ServiceAccount."""
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    bindings = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    bound = {b["roleRef"]["name"] for b in bindings if any(s["name"] == sa for s in b["subjects"])}
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    return [r for role in roles if role["metadata"]["name"] in bound for r in role["rules"]]


def all_rules(docs: list[dict]) -> list[dict]:
    return [r for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") for r in role["rules"]]


def granted(rules: list[dict], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for r in rules:
        if group in r.get("apiGroups", []) and resource in r.get("resources", []) and not r.get("resourceNames"):
            verbs |= set(r["verbs"])
    return verbs


HA_NAMESPACED = {"watchNamespaces": "{team-a,team-b}", "replicaCount": "3"}
SINGLE = {"leaderElection.enabled": "false", "replicaCount": "1"}


@pytest.mark.parametrize(
    "values",
    [{}, HA_NAMESPACED, {**SINGLE, "metrics.serviceMonitor.enabled": "true"}],
    ids=["defaults", "namespaced-ha", "single-servicemonitor"],
)
def test_helm_lint_strict(values: dict[str, str]) -> None:
    proc = helm("lint", str(CHART), "--strict", *set_args(values), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["name"] == "lora-finetune-operator"
    # One version: the chart's, its appVersion (the operator image tag when image.tag is empty) and the package's.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["version"] == chart["appVersion"] == project == "0.2.0"


def test_default_render_has_the_expected_objects() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",  # part of the release (templates/crd.yaml)
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",  # the aggregated edit and view roles
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
        ]
    ), kinds
    # Off by default: the Prometheus Operator's ServiceMonitor. Never kopf's peering objects or CRDs.
    assert not by_kind(docs, "ServiceMonitor")
    assert not [d for d in render() if "kopf.dev" in d["apiVersion"] + d["metadata"]["name"]]


def test_deployment_is_restricted() -> None:
    docs = render()
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    # Leader election makes old and new pods safe side by side: a rolling update that never drops to zero.
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_liveness_probe_and_metrics_service_target_the_container_ports() -> None:
    docs = render({"metrics.port": "9191", "liveness.port": "8181"})
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9191, "healthz": 8181}
    probe = c["livenessProbe"]["httpGet"]
    assert probe["port"] == "healthz" and probe["path"] == "/healthz"
    env = env_of(docs)
    assert env["LFT_METRICS_PORT"] == "9191" and env["LFT_LIVENESS_PORT"] == "8181"
    svc = one(docs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    deploy_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= deploy_labels.items()


def test_values_flow_into_the_operator_environment() -> None:
    docs = render(
        {
            "image.repository": "registry.local/lft-operator",
            "image.tag": "9.9.9",
            "image.pullPolicy": "Never",
            "trainer.image": "registry.local/lft-trainer:1.2.3",
            "trainer.pullPolicy": "Always",
            "storage.endpoint": "http://minio.storage:9000",
            "storage.secretName": "s3-creds",
            "logLevel": "DEBUG",
            "nodeSelector.role": "system",
            "tolerations[0].key": "dedicated",
            "tolerations[0].operator": "Exists",
            "resources.limits.memory": "300Mi",
        }
    )
    c = container(docs)
    assert c["image"] == "registry.local/lft-operator:9.9.9"
    assert c["imagePullPolicy"] == "Never"
    assert c["resources"]["limits"]["memory"] == "300Mi"
    env = env_of(docs)
    assert env["LFT_TRAINER_IMAGE"] == "registry.local/lft-trainer:1.2.3"
    assert env["LFT_TRAINER_IMAGE_PULL_POLICY"] == "Always"
    assert env["LFT_DEFAULT_STORAGE_ENDPOINT"] == "http://minio.storage:9000"
    assert env["LFT_DEFAULT_STORAGE_SECRET"] == "s3-creds"
    assert env["LFT_NAMESPACES"] == ""  # all namespaces
    assert env["LFT_LOG_LEVEL"] == "DEBUG"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"role": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_the_shm_size_limit_of_multi_node_pods_is_a_value() -> None:
    from pydantic import ValidationError

    from lft_operator.settings import Settings

    default = env_of(render())["LFT_SHM_SIZE_LIMIT"]
    assert default == "1Gi" == Settings.from_env({}).shm_size_limit  # the chart's default is the operator's
    env = env_of(render({"multinode.shmSizeLimit": "8Gi"}))
    assert env["LFT_SHM_SIZE_LIMIT"] == "8Gi"
    assert Settings.from_env({"LFT_SHM_SIZE_LIMIT": env["LFT_SHM_SIZE_LIMIT"]}).shm_size_limit == "8Gi"
    # Not a quantity: refused by the chart's schema, and by the operator at start (not by every Job's creation).
    proc = helm("template", RELEASE, str(CHART), "--set", "multinode.shmSizeLimit=lots", check=False)
    assert proc.returncode != 0 and "shmSizeLimit" in proc.stderr, proc.stderr
    with pytest.raises(ValidationError, match="shm_size_limit"):
        Settings.from_env({"LFT_SHM_SIZE_LIMIT": "lots"})


def test_image_pull_secrets_on_the_operator_pod_and_for_the_trainers() -> None:
    from lft_operator.settings import Settings

    docs = render({"imagePullSecrets[0].name": "regcred", "imagePullSecrets[1].name": "mirror"})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    env = env_of(docs)
    assert env["LFT_TRAINER_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert Settings.from_env(env).trainer_image_pull_secrets == ("regcred", "mirror")
    # Default: none anywhere.
    docs = render()
    assert "imagePullSecrets" not in one(docs, "Deployment")["spec"]["template"]["spec"]
    assert env_of(docs)["LFT_TRAINER_IMAGE_PULL_SECRETS"] == ""


POLICY_VALUES = """
policy:
  allowedImages: [registry.local/ml/*]
  allowedVolumeKinds: [emptyDir, hostPath]
  allowedServiceAccounts: [workload-id]
  allowedSecrets: [hf-token]
  allowTrustRemoteCode: true
  allowedStorageSecrets: [s3-credentials]
  allowedTolerations: [{key: nvidia.com/gpu, effect: NoSchedule}]
  allowedPriorityClasses: []
  allowedNodeSelectors: {pool: [gpu-*]}
"""


def test_policy_values_reach_the_operator(tmp_path) -> None:
    from lft_operator.policy import Policy, TolerationRule
    from lft_operator.settings import Settings

    def settings(*extra: str) -> Settings:
        return Settings.from_env({k: v for k, v in env_of(render({}, *extra)).items() if v is not None})

    values = tmp_path / "policy.yaml"
    values.write_text(POLICY_VALUES)
    assert settings("-f", str(values)).policy == Policy(
        allowed_images=("registry.local/ml/*",),
        allowed_volume_kinds=("emptyDir", "hostPath"),
        allowed_service_accounts=("workload-id",),
        allowed_secrets=("hf-token",),
        allow_trust_remote_code=True,
        allowed_storage_secrets=("s3-credentials",),
        allowed_tolerations=(TolerationRule(key="nvidia.com/gpu", effect="NoSchedule"),),
        allowed_priority_classes=(),
        allowed_node_selectors={"pool": ("gpu-*",)},
    )
    # The chart's defaults are the operator's: the trainer image's repository, the five volume kinds,
    # no other ServiceAccount or Secret, no limits on the optional lists.
    default = settings()
    assert default.policy == Policy()
    assert default.policy.image_patterns(default.trainer_image) == ("lft/trainer:*", "lft/trainer@*")
    moved = settings("--set", "trainer.image=registry.local/lft-trainer:0.1.0")
    assert moved.policy.image_patterns(moved.trainer_image) == ("registry.local/lft-trainer:*", "registry.local/lft-trainer@*")


@pytest.mark.parametrize(
    "bad",
    ["policy.alowedImages={x}", "policy.allowedVolumeKinds={hostpath}", "policy.allowedTolerations[0].operator=Maybe"],
)
def test_values_schema_rejects_bad_policies(bad: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr, proc.stderr


def test_values_schema_knows_the_operators_volume_kinds() -> None:
    import json

    from lft_operator.policy import VOLUME_KINDS

    schema = json.loads((CHART / "values.schema.json").read_text())
    kinds = schema["properties"]["policy"]["properties"]["allowedVolumeKinds"]["items"]["enum"]
    assert tuple(kinds) == VOLUME_KINDS


def test_default_images_are_the_ones_make_images_builds() -> None:
    """A plain `helm install` after `make images` finds its images: no registry publishes them."""
    from lft_operator.settings import DEFAULT_TRAINER_IMAGE

    script = (ROOT / "hack" / "build-images.sh").read_text()
    variant = re.search(r"^VARIANT=(\w+)$", script, re.M).group(1)
    trainer = re.search(r"^TRAINER_IMAGE=\$\{LFT_TRAINER_IMAGE:-(\S+)\}$", script, re.M).group(1)
    operator = re.search(r"^OPERATOR_IMAGE=\$\{LFT_OPERATOR_IMAGE:-(\S+)\}$", script, re.M).group(1)
    trainer = trainer.replace("$VARIANT", variant)
    docs = render()
    assert (container(docs)["image"], env_of(docs)["LFT_TRAINER_IMAGE"]) == (operator, trainer)
    assert DEFAULT_TRAINER_IMAGE == trainer == "lft/trainer:cpu"
    # An empty tag still means the chart's appVersion.
    assert container(render({"image.tag": ""}))["image"] == "lft/operator:0.2.0"


RBAC_VARIANTS = [{}, HA_NAMESPACED, {"replicaCount": "1"},
                 {"rbac.aggregateToDefaultRoles": "false", "watchNamespaces": "{team-a}"},
                 {"kueue.enabled": "true"}, {"kueue.enabled": "true", "watchNamespaces": "{team-a}"}]
RBAC_IDS = ["clusterwide", "namespaced-ha", "clusterwide-ha", "no-aggregation", "kueue", "kueue-namespaced"]


@pytest.mark.parametrize("values", RBAC_VARIANTS, ids=RBAC_IDS)
def test_rbac_is_least_privilege(values: dict[str, str]) -> None:
    docs = render(values)
    # Every role the chart renders, the user-facing aggregated ones included: no wildcard, no Secrets.
    for r in all_rules(docs):
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in r.get(field, []), f"wildcard {field} in {r}"
        assert not {"escalate", "bind", "impersonate"} & set(r["verbs"]), r
        assert "secrets" not in r["resources"], f"Secret access: {r}"
    rules = rules_of(docs)
    # Nothing but reads on pods; nothing on nodes or cluster-wide write access to RBAC bindings.
    assert granted(rules, "", "pods") == {"list", "watch"}
    # A multi-node run's NetworkPolicy: created once (get: after a 409), never changed or deleted by the operator.
    assert granted(rules, "networking.k8s.io", "networkpolicies") == {"get", "create"}
    assert not granted(rules, "rbac.authorization.k8s.io", "clusterroles")
    assert not granted(rules, "rbac.authorization.k8s.io", "clusterrolebindings")
    assert not granted(rules, "", "nodes")


def triples(rules: list[dict]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every grant not limited to resourceNames."""
    return {
        (g, res, v)
        for r in rules
        if not r.get("resourceNames")
        for g in r["apiGroups"]
        for res in r["resources"]
        for v in r["verbs"]
    }


# kopf observes namespaces only when it watches a namespace list, not cluster-wide.
NAMESPACE_OBSERVATION = {("", "namespaces", "list"), ("", "namespaces", "watch")}


@pytest.mark.parametrize("values", RBAC_VARIANTS, ids=RBAC_IDS)
def test_rbac_is_exactly_what_the_operator_uses(values: dict[str, str]) -> None:
    """The chart grants the operator exactly lft_operator.rbac's table, which tests/unit/test_operator_rbac.py
    checks against the calls in the code: a verb no code uses fails here."""
    from lft_operator import rbac

    chart = triples(rules_of(render(values)))
    needed = rbac.triples(rbac.USES)
    assert needed == triples(rbac.OPERATOR_RULES)
    if "watchNamespaces" not in values:
        needed -= NAMESPACE_OBSERVATION
    needed |= rbac.triples(rbac.LEASE_USES)
    if values.get("kueue.enabled") == "true":  # the Kueue integration's rows, only when it is on
        needed |= rbac.triples(rbac.KUEUE_USES)
    assert needed <= chart, f"the operator needs, the chart lacks: {sorted(needed - chart)}"
    assert chart <= needed, f"the chart grants, the operator does not use: {sorted(chart - needed)}"


def test_kueue_integration_is_off_by_default_and_adds_its_env_and_workload_rules() -> None:
    off = render()
    assert env_of(off)["LFT_KUEUE"] == "false"
    assert not granted(rules_of(off), "kueue.x-k8s.io", "workloads")
    for values in ({"kueue.enabled": "true"}, {"kueue.enabled": "true", "watchNamespaces": "{team-a,team-b}"}):
        on = render(values)
        assert env_of(on)["LFT_KUEUE"] == "true"
        # Read the Workloads of queued Jobs, patch spec.active (suspend under Kueue); never create or delete them.
        assert granted(rules_of(on), "kueue.x-k8s.io", "workloads") == {"list", "watch", "patch"}
        assert not {g for r in rules_of(on) for g in r["apiGroups"] if g.startswith("kueue")} - {"kueue.x-k8s.io"}
    proc = helm("template", RELEASE, str(CHART), "--set", "kueue.enabled=yes-please", check=False)
    assert proc.returncode != 0  # values.schema.json: a boolean


def test_operator_may_create_the_trainer_role() -> None:
    """RBAC escalation rule: the operator can only create Roles whose rules it holds itself."""
    from lft_operator import builders

    role = builders.trainer_role(builders.Owner(name="ft", namespace="team-a", uid="u-1"))
    chart = triples(rules_of(render()))
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for res in rule["resources"]:
                for v in rule["verbs"]:
                    assert (g, res, v) in chart, f"operator lacks {v} {res}.{g}, so it cannot grant it"


def test_aggregated_user_roles() -> None:
    """edit/admin holders may manage LoRAFineTunes in their namespace, view holders read them; none may
    write status (only the operator and each run's trainer do). Off with rbac.aggregateToDefaultRoles=false."""
    docs = render()
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    edit, view = roles[f"{RELEASE}-lora-finetune-operator-edit"], roles[f"{RELEASE}-lora-finetune-operator-view"]
    labels = "rbac.authorization.k8s.io/aggregate-to-"
    assert edit["metadata"]["labels"][labels + "edit"] == "true" == edit["metadata"]["labels"][labels + "admin"]
    assert view["metadata"]["labels"][labels + "view"] == "true"
    assert granted(edit["rules"], "finetune.dev", "lorafinetunes") == {
        "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
    assert granted(view["rules"], "finetune.dev", "lorafinetunes") == {"get", "list", "watch"}
    for role in (edit, view):
        assert granted(role["rules"], "finetune.dev", "lorafinetunes/status") == {"get", "list", "watch"}
        assert {g for r in role["rules"] for g in r["apiGroups"]} == {"finetune.dev"}
    # Bound to nobody by the chart: the built-in roles pick them up through their labels.
    bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")}
    assert not bound & {edit["metadata"]["name"], view["metadata"]["name"]}
    off = render({"rbac.aggregateToDefaultRoles": "false"})
    assert not [r for r in by_kind(off, "ClusterRole") if r["metadata"]["name"].endswith(("-edit", "-view"))]


def test_watch_namespaces_bind_the_role_per_namespace_only() -> None:
    docs = render({"watchNamespaces": "{team-a,team-b}"})
    assert env_of(docs)["LFT_NAMESPACES"] == "team-a,team-b"
    # (The leader election Lease's RoleBinding, to a Role, is in the release namespace.)
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    main_role = next(r for r in by_kind(docs, "ClusterRole") if any("jobs" in x["resources"] for x in r["rules"]))
    assert all(b["roleRef"]["name"] == main_role["metadata"]["name"] for b in bindings)
    # The operator's namespaced powers are not granted cluster-wide.
    assert all(b["roleRef"]["name"] != main_role["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding"))


def test_replicas_above_one_require_leader_election() -> None:
    proc = helm("template", RELEASE, str(CHART), *set_args({**SINGLE, "replicaCount": "2"}), check=False)
    assert proc.returncode != 0 and "leaderElection.enabled" in proc.stderr
    proc = helm("template", RELEASE, str(CHART), "--set", "leaderElection.renewDeadlineSeconds=15", check=False)
    assert proc.returncode != 0 and "leaseDurationSeconds > renewDeadlineSeconds" in proc.stderr


@pytest.mark.parametrize("values", [{}, HA_NAMESPACED], ids=["clusterwide", "namespaced-ha"])
def test_leader_election_lease_role_is_namespaced(values: dict[str, str]) -> None:
    """Leases: get/create/update in the release namespace only, never cluster-wide, never elsewhere."""
    docs = render(values)
    lease_rules = [
        (d["kind"], d["metadata"].get("namespace"), r["verbs"])
        for d in by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
        for r in d["rules"]
        if "leases" in r["resources"]
    ]
    assert lease_rules == [("Role", NAMESPACE, ["get", "create", "update"])]
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "Role"]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]
    # Without leader election: no Lease permission at all.
    assert not [r for r in rules_of(render(SINGLE)) if "leases" in r["resources"]]


def test_leader_election_identity_and_timing_reach_the_operator() -> None:
    from lft_operator.settings import Settings

    docs = render({"leaderElection.leaseDurationSeconds": "20", "leaderElection.renewDeadlineSeconds": "12",
                   "leaderElection.retryPeriodSeconds": "3", "leaderElection.leaseName": "my-lease"})
    s = Settings.from_env({k: v for k, v in env_of(docs).items() if v is not None})
    assert s.leader_election and s.leader_election_lease_name == "my-lease"
    assert (s.leader_election_lease_duration_seconds, s.leader_election_renew_deadline_seconds,
            s.leader_election_retry_period_seconds) == (20, 12.0, 3.0)
    # The holder identity starts with the pod name; the Lease lives in the pod's namespace.
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(docs)["env"] if "valueFrom" in e}
    assert fields == {"POD_NAME": "metadata.name", "OPERATOR_NAMESPACE": "metadata.namespace"}
    assert Settings.from_env({k: v for k, v in env_of(render(SINGLE)).items() if v}).leader_election is False


def test_ha_defaults_pdb_and_soft_anti_affinity() -> None:
    docs = render()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]
    hard = one(render({"podAntiAffinity": "hard"}), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert list(hard["podAntiAffinity"]) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    own = one(render({"affinity.nodeAffinity.x": "y"}), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert own == {"nodeAffinity": {"x": "y"}}
    # One replica: no PDB (it would block every node drain), no anti-affinity needed but harmless.
    assert not by_kind(render(SINGLE), "PodDisruptionBudget")


def test_service_monitor_optional() -> None:
    docs = render({"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.release": "prom"})
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_the_release_installs_the_generated_crd_and_keeps_it_on_uninstall() -> None:
    """templates/crd.yaml renders files/crds/ (the generator's output, the same as crds/) with the release's labels
    and helm.sh/resource-policy: keep; crds.install=false renders none, crds.keep=false drops the annotation."""
    generated = ROOT / "crds" / "finetune.dev_lorafinetunes.yaml"
    assert (CHART / "files" / "crds" / generated.name).read_text() == generated.read_text()
    assert not (CHART / "crds").exists()  # Helm would install it once and never upgrade it
    crd = one(render(), "CustomResourceDefinition")
    want = yaml.safe_load(generated.read_text())
    assert crd["spec"] == want["spec"] and crd["metadata"]["name"] == want["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert not by_kind(render({"crds.install": "false"}), "CustomResourceDefinition")
    unkept = one(render({"crds.keep": "false"}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})


def test_make_chart_packages_the_chart(tmp_path) -> None:
    """`make chart` writes a .tgz that holds Chart.yaml, the CRD, values and templates, and installs as is."""
    out = tmp_path / "chart"
    subprocess.run(
        ["make", "-s", "-C", str(ROOT), "chart", f"CHART_OUT={out}", f"HELM={HELM}"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    archive = out / f"{CHART.name}-{version}.tgz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        crd = tar.extractfile(f"{CHART.name}/files/crds/finetune.dev_lorafinetunes.yaml").read().decode()
    expected = {"Chart.yaml", "values.yaml", "values.schema.json", "files/crds/finetune.dev_lorafinetunes.yaml"}
    expected |= {f"templates/{t.name}" for t in (CHART / "templates").iterdir()}
    assert {f"{CHART.name}/{name}" for name in expected} <= names, sorted(names)
    assert crd == (ROOT / "crds" / "finetune.dev_lorafinetunes.yaml").read_text()
    proc = helm("template", RELEASE, str(archive), "--namespace", NAMESPACE)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(proc.stdout) if doc}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount"} <= kinds


@pytest.mark.parametrize(
    "bad",
    [
        "watchNamespaces={Team_A}",
        "trainer.pullPolicy=Sometimes",
        "replicaCount=-1",
        "metrics.port=70000",
        "imagePullSecrets[0]=regcred",
    ],
)
def test_values_schema_rejects_bad_values(bad: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr, proc.stderr


def test_operator_settings_parse_the_rendered_environment() -> None:
    """The env names the chart sets are the ones lft_operator.settings reads."""
    from lft_operator.settings import Settings

    docs = render(
        {
            "trainer.image": "reg/trainer:2",
            "trainer.pullPolicy": "Never",
            "trainer.terminationGraceSeconds": "300",
            "trainer.statusIntervalSeconds": "2",
            "storage.endpoint": "http://s3.local:9000",
            "storage.secretName": "creds",
            "watchNamespaces": "{team-a,team-b}",
            "metrics.port": "9191",
            "liveness.port": "8181",
            "replicaCount": "2",
            "resyncSeconds": "30",
            "apiWorkers": "8",
            "podCreationTimeoutSeconds": "45",
            "jsonLogs": "false",
            "logLevel": "DEBUG",
        }
    )
    s = Settings.from_env({k: v for k, v in env_of(docs).items() if v is not None})
    assert (s.trainer_image, s.trainer_image_pull_policy) == ("reg/trainer:2", "Never")
    assert s.termination_grace_seconds == 300 and s.trainer_status_interval == 2.0
    assert (s.default_storage_endpoint, s.default_storage_secret) == ("http://s3.local:9000", "creds")
    assert s.namespaces == ("team-a", "team-b")
    assert (s.metrics_port, s.liveness_port) == (9191, 8181)
    assert s.leader_election and s.leader_election_lease_name == f"{RELEASE}-lora-finetune-operator"
    assert (s.resync_seconds, s.api_workers, s.json_logs, s.log_level) == (30.0, 8, False, "DEBUG")
    assert s.pod_creation_timeout_seconds == 45

    defaults = Settings.from_env({k: v for k, v in env_of(render()).items() if v is not None})
    assert defaults.namespaces == () and defaults.leader_election is True and defaults.json_logs is True
    assert defaults.trainer_status_interval is None
    assert defaults.pod_creation_timeout_seconds == 600
