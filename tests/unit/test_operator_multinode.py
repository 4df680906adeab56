"""Manifests of a multi-node run (training.nodes > 1): one Indexed Job per attempt, a Service in front of index 0
(pure builders)."""

from __future__ import annotations

import re

from lft_api.resource import MAX_NAME_LENGTH, LoRAFineTuneSpec
from lft_api.spec import MAX_NODES
from lft_operator import builders, kube, multinode
from lft_operator.settings import Settings

OWNER = builders.Owner(name="big", namespace="team-a", uid="1111-2222")
SETTINGS = Settings(trainer_image="lft/trainer:test")


def spec(**training) -> LoRAFineTuneSpec:
    return LoRAFineTuneSpec.model_validate({
        "model": {"name": "m"}, "dataset": {"uri": "s3://d/x.jsonl"}, "output": {"uri": "s3://o/big"},
        "training": training,
        "podTemplate": {"env": [{"name": "NCCL_SOCKET_IFNAME", "value": "ib0"}, {"name": "LFT_NODE_RANK", "value": "7"}]},
    })


def env_of(job: dict) -> dict[str, str]:
    pairs = [(e["name"], e.get("value")) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    return dict(pairs)  # the last entry of a name wins, as in Kubernetes


def env_entries(job: dict, name: str) -> list[dict]:
    return [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == name]


def test_a_long_name_still_gives_every_pod_a_valid_hostname():
    # The longest resource name the CRD allows, the largest index, many attempts: `<job>-<index>` is a DNS label.
    longest = "r" * MAX_NAME_LENGTH
    for attempt in (1, 9, 12345):
        name = multinode.job_name(longest, attempt)
        hostname = f"{name}-{MAX_NODES - 1}"
        assert len(hostname) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", hostname), hostname
        assert name.endswith(f"-trainer-a{attempt}")
    assert multinode.job_name(longest, 2) != multinode.job_name(longest[:-1] + "s", 2)  # two runs, two Jobs
    assert multinode.job_name(longest, 2) == multinode.job_name(longest, 2)  # the same at every reconcile
    assert multinode.job_name("big", 12) == "big-trainer-a12"  # short names as before


def test_one_indexed_job_per_attempt_with_the_rank_from_the_completion_index():
    job = multinode.job(OWNER, spec(nodes=3), SETTINGS, attempt=2, master_addr="10.96.7.7")
    js = job["spec"]
    assert job["metadata"]["name"] == "big-trainer-a2" == multinode.job_name("big", 2)
    assert js["completionMode"] == "Indexed" and js["completions"] == 3 == js["parallelism"]
    assert js["backoffLimit"] == 0  # one failed pod fails the attempt; the Job controller stops the others
    assert js["podFailurePolicy"] == {"rules": [builders.INVALID_INPUT_RULE]}  # exit 3: reason PodFailurePolicy
    assert js["podReplacementPolicy"] == "Failed" and js["suspend"] is False
    pod = js["template"]["spec"]
    assert "hostname" not in pod and "subdomain" not in pod  # no cluster DNS needed
    assert js["template"]["metadata"]["labels"]["finetune.dev/attempt"] == "2"
    assert job["metadata"]["labels"]["finetune.dev/attempt"] == "2"
    assert not any(k.endswith("node-rank") for k in js["template"]["metadata"]["labels"])
    # The rank is the pod's completion index (downward API); the user's LFT_NODE_RANK never wins.
    (rank,) = [e for e in env_entries(job, "LFT_NODE_RANK") if "valueFrom" in e]
    assert env_entries(job, "LFT_NODE_RANK")[-1] == rank
    assert rank["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    # One template for every rank: the Service's address (node 0 uses loopback itself: the launcher).
    env = env_of(job)
    assert env["LFT_MASTER_ADDR"] == "10.96.7.7" and env["LFT_MASTER_PORT"] == "29500"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "1111-2222"


def test_the_pods_of_an_attempt_spread_over_the_nodes_softly():
    # One pod per machine where there is room (a "node" of the run is a machine); ScheduleAnyway: a one-node
    # cluster, or one with a machine down, still runs the gang on what is left.
    pod = multinode.job(OWNER, spec(nodes=2), SETTINGS, attempt=3, master_addr="10.96.7.7")["spec"]["template"]
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    # It counts this attempt's pods only: exactly the labels the pods carry.
    selector = spread["labelSelector"]["matchLabels"]
    assert selector == {"finetune.dev/name": "big", "finetune.dev/attempt": "3"}
    assert selector.items() <= pod["metadata"]["labels"].items()
    # The single-pod Job has nothing to spread.
    assert "topologySpreadConstraints" not in builders.job(OWNER, spec(nodes=1), SETTINGS)["spec"]["template"]["spec"]


def test_a_suspended_run_builds_a_suspended_indexed_job():
    suspended = LoRAFineTuneSpec.model_validate({**spec(nodes=2).to_wire(), "suspend": True})
    assert multinode.job(OWNER, suspended, SETTINGS, attempt=1, master_addr="10.0.0.1")["spec"]["suspend"] is True


def test_communication_defaults_are_set_and_the_users_values_win():
    env = env_of(multinode.job(OWNER, spec(nodes=2), SETTINGS, attempt=1, master_addr="10.0.0.1"))
    assert env["NCCL_SOCKET_IFNAME"] == "ib0"  # the user's
    assert env["GLOO_SOCKET_IFNAME"] == "eth0" and env["LFT_DDP_TIMEOUT_SECONDS"] == "1800"
    assert env["LFT_SHUTDOWN_TIMEOUT_SECONDS"] == str(SETTINGS.termination_grace_seconds)
    assert env["LFT_CONFIG"] == "/etc/lft/config.json"  # the single-pod env is kept


def test_dev_shm_is_a_sized_memory_volume_and_the_pod_stays_restricted():
    job = multinode.job(OWNER, spec(nodes=2), SETTINGS, attempt=1, master_addr="10.0.0.1")
    pod = job["spec"]["template"]["spec"]
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]}
    gpu = LoRAFineTuneSpec.model_validate({**spec(nodes=2).to_wire(), "resources": {"gpus": 2}})
    gpu_pod = multinode.job(OWNER, gpu, Settings(trainer_image="x", shm_size_limit="8Gi"), 1, "10.0.0.1")
    volumes = [v for v in gpu_pod["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"]
    assert volumes == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]  # one, sized


def test_the_service_is_a_cluster_ip_in_front_of_node_0_and_is_owned():
    svc = multinode.service(OWNER, spec(nodes=2))
    assert svc["metadata"]["name"] == "big-trainer" and "clusterIP" not in svc["spec"]  # allocated, not headless
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"]["finetune.dev/name"] == "big"
    # Only the rendezvous master: the index-0 pod (the Job controller's label) of this run.
    assert svc["spec"]["selector"]["batch.kubernetes.io/job-completion-index"] == "0"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "trainer"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "1111-2222"
    assert kube.collection_path(svc) == "/api/v1/namespaces/team-a/services"  # the reconciler can create it


def test_one_node_keeps_the_single_pod_job():
    one = spec()
    assert not multinode.is_multinode(one) and multinode.is_multinode(spec(nodes=2))
    job = builders.job(OWNER, one, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "big-trainer" and "hostname" not in pod and "subdomain" not in pod
    assert not any(e["name"].startswith("LFT_MASTER") for e in pod["containers"][0]["env"])


def test_every_attempt_is_built_from_the_spec_the_run_started_with():
    from lft_operator.status import ignored_changes
    from lft_operator.views import JobView

    started = LoRAFineTuneSpec.model_validate({**spec(nodes=2).to_wire(), "runPolicy": {"backoffLimit": 1}})
    svc = multinode.service(OWNER, started)  # created with the first attempt; the API server returns it as is
    assert multinode.run_spec(svc, started, nodes=2) == started  # unchanged: the Jobs are the ones the spec gives
    edited = LoRAFineTuneSpec.model_validate({**started.to_wire(), "training": {"nodes": 3, "learningRate": 0.5},
                                              "suspend": True, "runPolicy": {"backoffLimit": 4}})
    built = multinode.run_spec(svc, edited, nodes=2)
    assert built.training.nodes == 2 and built.training.learning_rate == started.training.learning_rate
    assert built.suspend and built.run_policy.backoff_limit == 4  # the mutable fields are the current ones
    job = multinode.job(OWNER, built, SETTINGS, attempt=2, master_addr="10.0.0.1")
    assert job["spec"]["completions"] == 2
    # The Job says what it was built from: the edit is reported (SpecChangeIgnored), attempt after attempt.
    view = JobView.from_job(job)
    assert ignored_changes(edited, view) == ["spec.training.learningRate", "spec.training.nodes"]
    # A Service made by an earlier operator version (no annotation): the current spec, on the run's nodes.
    old = {k: v for k, v in svc.items() if k != "metadata"}
    fallback = multinode.run_spec(old, edited, nodes=2)
    assert fallback.training.nodes == 2 and fallback.training.learning_rate == 0.5


# -- the run's NetworkPolicy: rendezvous and collectives reachable from the run's own pods only ------------------


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector of matchLabels only (what the NetworkPolicy uses) against a pod's labels."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def pod_labels(owner: builders.Owner, run: LoRAFineTuneSpec) -> list[dict[str, str]]:
    """The labels of each index's pod (the Job controller adds the completion index)."""
    job = multinode.job(owner, run, SETTINGS, attempt=1, master_addr="10.0.0.1")
    labels = job["spec"]["template"]["metadata"]["labels"]
    return [{**labels, "batch.kubernetes.io/job-completion-index": str(i)} for i in range(job["spec"]["completions"])]


def test_the_network_policy_selects_the_runs_pods_and_is_owned_like_the_service():
    policy = multinode.network_policy(OWNER)
    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert policy["metadata"]["name"] == "big-trainer" and policy["metadata"]["namespace"] == "team-a"
    assert policy["metadata"]["ownerReferences"] == multinode.service(OWNER, spec(nodes=2))["metadata"]["ownerReferences"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (storage, hub, the other ranks) is not restricted
    assert all(selects(policy["spec"]["podSelector"], labels) for labels in pod_labels(OWNER, spec(nodes=3)))
    assert kube.collection_path(policy) == "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies"


def test_the_network_policy_admits_tcp_only_from_pods_of_the_same_run():
    policy = multinode.network_policy(OWNER)
    (rule,) = policy["spec"]["ingress"]
    # Every TCP port (the rendezvous port and the ephemeral ports of gloo and NCCL), the rendezvous port included.
    assert rule["ports"] == [{"protocol": "TCP"}]
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}  # no namespaceSelector or ipBlock: this namespace's pods only
    mine = pod_labels(OWNER, spec(nodes=2))
    assert all(any(selects(peer["podSelector"], labels) for peer in rule["from"]) for labels in mine)
    # Another run's pods, even one whose podTemplate.labels claim this run's name, are not admitted.
    other = builders.Owner(name="other", namespace="team-a", uid="3333")
    forged = LoRAFineTuneSpec.model_validate({**spec(nodes=2).to_wire(),
                                              "podTemplate": {"labels": {"finetune.dev/name": "big"}}})
    for labels in pod_labels(other, forged) + pod_labels(other, spec(nodes=2)):
        assert not selects(policy["spec"]["podSelector"], labels)  # not isolated by this policy: not its pod
        assert not any(selects(peer["podSelector"], labels) for peer in rule["from"])


def test_the_network_policy_is_created_with_the_service_before_any_job():
    import asyncio
    from types import SimpleNamespace

    from lft_operator import gang_reconcile

    created: list[dict] = []

    async def create(manifest: dict) -> tuple[dict, bool]:
        created.append(manifest)
        if manifest["kind"] == "Service":
            manifest = {**manifest, "spec": {**manifest["spec"], "clusterIP": "10.0.0.9"}}
        return manifest, True

    async def companions(*_args, **_kwargs) -> None:
        return None

    r = SimpleNamespace(create_or_adopt=create, ensure_companions=companions, settings=SETTINGS)
    asyncio.run(gang_reconcile._create_attempt(r, OWNER, spec(nodes=2), 1, 2))  # type: ignore[arg-type]
    kinds = [m["kind"] for m in created]
    assert kinds[:2] == ["Service", "NetworkPolicy"] and kinds.count("Job") == 1
    (job,) = [m for m in created if m["kind"] == "Job"]
    assert job["spec"]["completions"] == 2 and env_of(job)["LFT_MASTER_ADDR"] == "10.0.0.9"
    assert kinds.index("NetworkPolicy") < kinds.index("Job")
