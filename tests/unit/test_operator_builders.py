"""Manifests the operator creates for a LoRAFineTune (pure builders)."""

from __future__ import annotations

import json

import pytest

from lft_api import contract
from lft_api.resource import LoRAFineTuneSpec
from lft_api.spec import TrainerConfig
from lft_operator import builders
from lft_operator.settings import Settings
from tests.support.operator import make_spec

OWNER = builders.Owner(name="phi3-chat", namespace="team-a", uid="1111-2222")
SETTINGS = Settings(trainer_image="lft/trainer:test", default_storage_endpoint="http://minio.storage:9000")


def _container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _env(job: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in _container(job)["env"]}


def test_deterministic_names():
    assert builders.child_name("x") == "x-trainer"
    assert builders.config_map_name("x") == "x-trainer-config"
    assert builders.job(OWNER, make_spec(), SETTINGS) == builders.job(OWNER, make_spec(), SETTINGS)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: builders.job(OWNER, s, SETTINGS),
        lambda s: builders.config_map(OWNER, s, SETTINGS),
        lambda s: builders.service_account(OWNER),
        lambda s: builders.trainer_role(OWNER),
        lambda s: builders.role_binding(OWNER, s),
    ],
)
def test_every_child_is_owned_by_the_resource(build):
    manifest = build(make_spec())
    meta = manifest["metadata"]
    assert meta["namespace"] == "team-a"
    assert meta["labels"][builders.NAME_LABEL] == "phi3-chat"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "LoRAFineTune",
            "name": "phi3-chat",
            "uid": "1111-2222",
            "controller": True,
        }
    ]


def test_config_map_holds_the_trainer_config():
    cm = builders.config_map(OWNER, make_spec(lora={"r": 8}), SETTINGS)
    config = TrainerConfig.model_validate(json.loads(cm["data"]["config.json"]))
    assert config.lora.r == 8
    assert config.model.name == "/opt/lft/models/tiny-phi3"
    # The operator-wide default endpoint fills the gap; operator-only fields stay out.
    assert config.storage.endpoint_url == "http://minio.storage:9000"
    assert "storageSecretRef" not in cm["data"]["config.json"] and "image" not in json.loads(cm["data"]["config.json"])


def test_config_keeps_the_specs_own_endpoint_and_sets_processes_from_gpus():
    spec = make_spec(storage={"endpointUrl": "http://other:9000"}, resources={"gpus": 4})
    config = builders.trainer_config(spec, SETTINGS)
    assert config["storage"]["endpointUrl"] == "http://other:9000"
    assert config["training"]["numProcesses"] == 4
    assert builders.trainer_config(make_spec(resources={"gpus": 1}), SETTINGS)["training"]["numProcesses"] == 1
    # auto resolved for the pod: 1 on CPU; an explicit count on CPU is kept.
    assert builders.trainer_config(make_spec(), SETTINGS)["training"]["numProcesses"] == 1
    two = make_spec(training={"numProcesses": 2, "nodes": 3})
    assert builders.trainer_config(two, SETTINGS)["training"]["numProcesses"] == 2
    assert builders.trainer_config(two, SETTINGS)["training"]["nodes"] == 3
    # 1, the stored default of earlier versions, on a 4-GPU pod: one process per GPU (as the CRD says).
    legacy = make_spec(training={"numProcesses": 1}, resources={"gpus": 4})
    assert builders.trainer_config(legacy, SETTINGS)["training"]["numProcesses"] == 4


def test_trainer_role_may_only_patch_this_resources_status():
    role = builders.trainer_role(OWNER)
    assert role["rules"] == [
        {
            "apiGroups": ["finetune.dev"],
            "resources": ["lorafinetunes/status"],
            "resourceNames": ["phi3-chat"],
            "verbs": ["patch"],
        }
    ]
    binding = builders.role_binding(OWNER, make_spec())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "phi3-chat-trainer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "phi3-chat-trainer", "namespace": "team-a"}]


def test_custom_service_account_is_bound_instead():
    spec = make_spec(podTemplate={"serviceAccountName": "workload-identity"})
    assert builders.role_binding(OWNER, spec)["subjects"][0]["name"] == "workload-identity"
    assert builders.job(OWNER, spec, SETTINGS)["spec"]["template"]["spec"]["serviceAccountName"] == "workload-identity"


def test_job_shape():
    job = builders.job(OWNER, make_spec(runPolicy={"backoffLimit": 2, "activeDeadlineSeconds": 3600}), SETTINGS)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert job["metadata"]["name"] == "phi3-chat-trainer"
    assert spec["parallelism"] == 1 and spec["completions"] == 1 and spec["suspend"] is False
    # The Job controller counts the retries: runPolicy.backoffLimit is the Job's.
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 3600
    assert spec["podReplacementPolicy"] == "Failed"  # a new pod only once the last one ended (checkpoint saved)
    assert "completionMode" not in spec
    assert "ttlSecondsAfterFinished" not in spec
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] >= 60  # room for a checkpoint upload
    assert pod["serviceAccountName"] == "phi3-chat-trainer"
    assert spec["template"]["metadata"]["labels"][builders.NAME_LABEL] == "phi3-chat"
    container = _container(job)
    assert container["image"] == "lft/trainer:test"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == contract.DEFAULT_TERMINATION_LOG


def test_job_env_and_secret_by_reference_only():
    job = builders.job(OWNER, make_spec(), SETTINGS)
    env = _env(job)
    assert env[contract.ENV_CONFIG_PATH] == "/etc/lft/config.json"
    assert env[contract.ENV_RESOURCE_NAME] == "phi3-chat"
    assert env[contract.ENV_RESOURCE_NAMESPACE] == "team-a"
    assert env[contract.ENV_RESOURCE_UID] == "1111-2222"
    assert _container(job)["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": False}}]
    mounts = {m["mountPath"]: m for m in _container(job)["volumeMounts"]}
    assert mounts["/etc/lft"]["readOnly"] is True
    assert "/tmp" in mounts and builders.HOME_DIR in mounts
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "phi3-chat-trainer-config"
    # The API token: a projected, expiring one at the usual path (no legacy token Secret needed).
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    sources = volumes["kube-api-access"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"]["readOnly"] is True


def test_default_secret_is_optional_and_absent_without_one():
    spec = make_spec(storageSecretRef=None)
    job = builders.job(OWNER, spec, Settings(default_storage_secret="cluster-s3"))
    assert _container(job)["envFrom"] == [{"secretRef": {"name": "cluster-s3", "optional": True}}]
    assert _container(builders.job(OWNER, spec, Settings()))["envFrom"] == []


def test_user_env_cannot_override_the_contract_variables():
    spec = make_spec(
        podTemplate={"env": [{"name": "LFT_NAME", "value": "evil"}, {"name": "HF_HUB_OFFLINE", "value": "1"}]}
    )
    env = builders.job(OWNER, spec, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "LFT_NAME"] == ["phi3-chat"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in env


def test_restricted_pod_security():
    job = builders.job(OWNER, make_spec(), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(job)["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_resources_gpus_and_scheduling():
    spec = make_spec(
        resources={"gpus": 2, "cpu": 8, "memory": "64Gi", "ephemeralStorage": "100Gi"},
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {}},
        priorityClassName="training",
        queueName="team-a-queue",
    )
    job = builders.job(OWNER, spec, SETTINGS)
    res = _container(job)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "2"
    assert res["requests"]["cpu"] == "8" and "cpu" not in res["limits"]  # no CPU throttling
    assert res["requests"]["memory"] == res["limits"]["memory"] == "64Gi"
    assert res["limits"]["ephemeral-storage"] == "100Gi"
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["priorityClassName"] == "training"
    assert job["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "team-a-queue"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])  # /dev/shm for NCCL
    assert _container(builders.job(OWNER, make_spec(), SETTINGS))["resources"] == {}


def test_suspended_at_creation_is_a_natively_suspended_job():
    spec = builders.job(OWNER, make_spec(suspend=True), SETTINGS)["spec"]
    assert spec["suspend"] is True and spec["parallelism"] == 1  # no parallelism 0 work-around


def test_pod_failure_policy_fails_on_invalid_input_and_ignores_disruptions():
    rules = builders.job(OWNER, make_spec(), SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    assert rules == [
        {"action": "FailJob",
         "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [contract.ExitCode.INVALID_INPUT]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
    assert rules[0]["onExitCodes"]["values"] == [3]
    assert json.loads(json.dumps(rules)) == rules  # plain JSON (no IntEnum surprises on the wire)
    pod = builders.job(OWNER, make_spec(), SETTINGS)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # what a podFailurePolicy requires
    assert pod["containers"][0]["name"] == rules[0]["onExitCodes"]["containerName"]


def test_suspend_patch_sets_the_jobs_own_suspend():
    assert builders.suspend_patch(True) == {"spec": {"suspend": True}}
    assert builders.suspend_patch(False) == {"spec": {"suspend": False}}


def test_pod_template_extras():
    spec = make_spec(
        podTemplate={
            "labels": {"team": "a", builders.NAME_LABEL: "spoofed"},
            "annotations": {"sidecar.istio.io/inject": "false"},
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
        }
    )
    job = builders.job(OWNER, spec, SETTINGS)
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"][builders.NAME_LABEL] == "phi3-chat"  # ours win
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}} in template["spec"]["volumes"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in _container(job)["volumeMounts"]


def _pull_secrets(spec: LoRAFineTuneSpec, settings: Settings = SETTINGS) -> list[dict[str, str]] | None:
    return builders.job(OWNER, spec, settings)["spec"]["template"]["spec"].get("imagePullSecrets")


DEFAULT_PULL = Settings.from_env({"LFT_TRAINER_IMAGE_PULL_SECRETS": "regcred, mirror"})


def test_image_pull_secrets_default_per_resource_and_both():
    # Neither: no field at all (as before).
    assert _pull_secrets(make_spec()) is None
    # The operator's default only.
    assert _pull_secrets(make_spec(), DEFAULT_PULL) == [{"name": "regcred"}, {"name": "mirror"}]
    # The resource's own only.
    own = make_spec(imagePullSecrets=[{"name": "team-a-registry"}])
    assert _pull_secrets(own) == [{"name": "team-a-registry"}]
    # Both: the resource's are added after the default ones, each name once.
    both = make_spec(imagePullSecrets=[{"name": "team-a-registry"}, {"name": "regcred"}])
    assert _pull_secrets(both, DEFAULT_PULL) == [{"name": "regcred"}, {"name": "mirror"}, {"name": "team-a-registry"}]
    # Operator-only: not in the trainer's config.
    assert "imagePullSecrets" not in builders.config_map(OWNER, both, SETTINGS)["data"]["config.json"]


def test_image_pull_secrets_need_a_name():
    with pytest.raises(ValueError):
        make_spec(imagePullSecrets=[{"name": ""}])
    with pytest.raises(ValueError):
        make_spec(imagePullSecrets=["regcred"])


def test_applied_spec_annotation_excludes_mutable_fields():
    job_a = builders.job(OWNER, make_spec(suspend=False, runPolicy={"backoffLimit": 1}), SETTINGS)
    job_b = builders.job(OWNER, make_spec(suspend=True, runPolicy={"backoffLimit": 5}), SETTINGS)
    ann_a, ann_b = job_a["metadata"]["annotations"], job_b["metadata"]["annotations"]
    assert ann_a[builders.APPLIED_SPEC_ANNOTATION] == ann_b[builders.APPLIED_SPEC_ANNOTATION]
    applied = json.loads(ann_a[builders.APPLIED_SPEC_ANNOTATION])
    assert "suspend" not in applied and "runPolicy" not in applied and applied["lora"]["r"] == 16
    job_c = builders.job(OWNER, make_spec(lora={"r": 32}), SETTINGS)
    assert job_c["metadata"]["annotations"][builders.APPLIED_SPEC_ANNOTATION] != ann_a[builders.APPLIED_SPEC_ANNOTATION]


def test_run_policy_patch_compares_with_the_applied_annotation():
    job = builders.job(OWNER, make_spec(runPolicy={"backoffLimit": 3}), SETTINGS)
    applied = job["metadata"]["annotations"][builders.RUN_POLICY_ANNOTATION]
    assert builders.run_policy_patch(make_spec(runPolicy={"backoffLimit": 3}), applied) is None
    patch = builders.run_policy_patch(make_spec(runPolicy={"backoffLimit": 5, "ttlSecondsAfterFinished": 60}), applied)
    assert patch["spec"] == {"backoffLimit": 5, "activeDeadlineSeconds": None, "ttlSecondsAfterFinished": 60}
    new_applied = patch["metadata"]["annotations"][builders.RUN_POLICY_ANNOTATION]
    # Once applied, no further patch, even if the API server dropped a field of it.
    assert (
        builders.run_policy_patch(make_spec(runPolicy={"backoffLimit": 5, "ttlSecondsAfterFinished": 60}), new_applied)
        is None
    )


def test_stop_patch_ends_the_job_as_failed_by_its_deadline():
    assert builders.stop_patch() == {"spec": {"activeDeadlineSeconds": 1}}


def test_the_secrets_the_trainer_receives_are_mounted_for_it_to_mask_their_values():
    spec = make_spec(
        storageSecretRef={"name": "s3"},
        podTemplate={
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                    {"name": "PLAIN", "value": "x"}],
            "volumes": [{"name": "gcs", "secret": {"secretName": "gcs-key"}}, {"name": "data", "emptyDir": {}}],
            "volumeMounts": [{"name": "gcs", "mountPath": "/var/gcs"}, {"name": "data", "mountPath": "/data"}],
        },
    )
    pod = builders.job(OWNER, spec, SETTINGS)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == builders.SECRET_VALUES_VOLUME]
    assert volume["projected"]["sources"] == [
        {"secret": {"name": "s3", "optional": False}},
        {"secret": {"name": "hf", "optional": False, "items": [{"key": "token", "path": "env-0/token"}]}},
    ]
    container = pod["containers"][0]
    assert {"name": builders.SECRET_VALUES_VOLUME, "mountPath": contract.SECRET_VALUES_DIR, "readOnly": True} in (
        container["volumeMounts"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[contract.ENV_SECRET_DIRS] == f"{contract.SECRET_VALUES_DIR}:/var/gcs"
    # No Secret at all: nothing mounted, nothing to read.
    bare = builders.job(OWNER, make_spec(storageSecretRef=None), SETTINGS)["spec"]["template"]["spec"]
    assert builders.SECRET_VALUES_VOLUME not in {v["name"] for v in bare["volumes"]}


def test_the_trackers_secrets_are_passed_unread_and_mounted_one_volume_each_for_masking():
    training = {"reportTo": ["mlflow", "wandb"],
                "mlflow": {"trackingUri": "http://mlflow:5000", "credentialsSecretRef": {"name": "mlflow-creds"}},
                "wandb": {"project": "p", "mode": "offline", "credentialsSecretRef": {"name": "wandb-key"}}}
    pod = builders.job(OWNER, make_spec(storageSecretRef={"name": "s3"}, training=training), SETTINGS)
    pod = pod["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == ["s3", "mlflow-creds", "wandb-key"]
    # One volume per Secret: their keys are unknown to the operator and could collide in one projection.
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert sorted(secrets.values()) == ["mlflow-creds", "wandb-key"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    paths = [mounts[name]["mountPath"] for name in secrets]
    assert all(mounts[name]["readOnly"] for name in secrets) and len(set(paths)) == 2
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[contract.ENV_SECRET_DIRS].split(":") == [contract.SECRET_VALUES_DIR, *paths]
