"""Manifests of a multi-node run (training.nodes > 1): one Job per node, a Service in front of node 0 (pure builders)."""

from __future__ import annotations

from lft_api.resource import LoRAFineTuneSpec
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


def test_one_job_per_node_with_a_fixed_rank_and_the_master_at_the_services_ip():
    jobs = multinode.node_jobs(OWNER, spec(nodes=3), SETTINGS, attempt=2, service_ip="10.96.7.7")
    assert [j["metadata"]["name"] for j in jobs] == ["big-trainer-node-0", "big-trainer-node-1", "big-trainer-node-2"]
    for rank, job in enumerate(jobs):
        pod = job["spec"]["template"]["spec"]
        assert pod["hostname"] == f"big-node-{rank}" and "subdomain" not in pod  # no cluster DNS needed
        assert job["spec"]["backoffLimit"] == 0 and job["spec"]["parallelism"] == 1 == job["spec"]["completions"]
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["finetune.dev/node-rank"] == str(rank) and labels["finetune.dev/attempt"] == "2"
        assert job["metadata"]["labels"]["finetune.dev/node-rank"] == str(rank)
        env = env_of(job)
        assert env["LFT_NODE_RANK"] == str(rank)  # the user's LFT_NODE_RANK never wins
        # Node 0 is the master itself (loopback: no hairpin through its own Service); the others use the Service.
        assert env["LFT_MASTER_ADDR"] == ("127.0.0.1" if rank == 0 else "10.96.7.7") and env["LFT_MASTER_PORT"] == "29500"
        assert job["metadata"]["ownerReferences"][0]["uid"] == "1111-2222"


def test_communication_defaults_are_set_and_the_users_values_win():
    env = env_of(multinode.node_job(OWNER, spec(nodes=2), SETTINGS, rank=1, attempt=1, service_ip="10.0.0.1"))
    assert env["NCCL_SOCKET_IFNAME"] == "ib0"  # the user's
    assert env["GLOO_SOCKET_IFNAME"] == "eth0" and env["LFT_DDP_TIMEOUT_SECONDS"] == "1800"
    assert env["LFT_SHUTDOWN_TIMEOUT_SECONDS"] == str(SETTINGS.termination_grace_seconds)
    assert env["LFT_CONFIG"] == "/etc/lft/config.json"  # the single-pod env is kept


def test_dev_shm_is_a_sized_memory_volume_and_the_pod_stays_restricted():
    job = multinode.node_job(OWNER, spec(nodes=2), SETTINGS, rank=0, attempt=1, service_ip="10.0.0.1")
    pod = job["spec"]["template"]["spec"]
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]}
    gpu = LoRAFineTuneSpec.model_validate({**spec(nodes=2).to_wire(), "resources": {"gpus": 2}})
    gpu_pod = multinode.node_job(OWNER, gpu, Settings(trainer_image="x", shm_size_limit="8Gi"), 0, 1, "10.0.0.1")
    volumes = [v for v in gpu_pod["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"]
    assert volumes == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]  # one, sized


def test_the_service_is_a_cluster_ip_in_front_of_node_0_and_is_owned():
    svc = multinode.service(OWNER, spec(nodes=2))
    assert svc["metadata"]["name"] == "big-trainer" and "clusterIP" not in svc["spec"]  # allocated, not headless
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"]["finetune.dev/name"] == "big"
    assert svc["spec"]["selector"]["finetune.dev/node-rank"] == "0"  # only the rendezvous master
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
    jobs = multinode.node_jobs(OWNER, built, SETTINGS, attempt=2, service_ip="10.0.0.1")
    assert len(jobs) == 2
    # The Jobs say what they were built from: the edit is reported (SpecChangeIgnored), attempt after attempt.
    view = JobView.from_job(jobs[0])
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
    return [j["spec"]["template"]["metadata"]["labels"]
            for j in multinode.node_jobs(owner, run, SETTINGS, attempt=1, service_ip="10.0.0.1")]


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

    r = SimpleNamespace(_create=create, _ensure_companions=companions, settings=SETTINGS)
    asyncio.run(gang_reconcile._create_attempt(r, OWNER, spec(nodes=2), 1, 2))  # type: ignore[arg-type]
    kinds = [m["kind"] for m in created]
    assert kinds[:2] == ["Service", "NetworkPolicy"] and kinds.count("Job") == 2
    assert kinds.index("NetworkPolicy") < kinds.index("Job")
