"""The admin policy (lft_operator.policy): each rule allowed and refused, with its exact message."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from lft_api.conditions import Reason
from lft_api.pod_types import Toleration
from lft_api.resource import LoRAFineTuneSpec
from lft_operator import builders
from lft_operator.policy import DEFAULT_VOLUME_KINDS, Policy, TolerationRule, image_repository, violations
from lft_operator.settings import Settings
from lft_operator.validation import validate
from tests.support.pod_security import RESTRICTED_VOLUMES, restricted_violations

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}
TRAINER = "lft/trainer:cpu"
DEFAULT_KINDS = "persistentVolumeClaim, configMap, secret, emptyDir, projected"


def check(policy: Policy | None = None, storage_secret: str | None = None, **spec) -> list[str]:
    parsed = LoRAFineTuneSpec.model_validate({**BASE, **spec})
    return violations(parsed, policy or Policy(), TRAINER, storage_secret)


def template(**fields) -> dict:
    return {"podTemplate": fields}


# --- images -----------------------------------------------------------------------------------


def test_images_default_to_the_trainer_repository_with_any_tag_or_digest():
    assert check() == []  # spec.image unset: the operator's trainer image
    assert check(image="lft/trainer:gpu") == []
    assert check(image="lft/trainer@sha256:" + "a" * 64) == []
    assert check(image="evil/miner:1") == [
        'spec.image "evil/miner:1" is not an allowed trainer image (policy.allowedImages: lft/trainer:*, lft/trainer@*)'
    ]
    # Another repository that merely starts like the trainer's is refused.
    assert len(check(image="lft/trainer-evil:1")) == 1
    assert len(check(image="docker.io/lft/trainer:cpu")) == 1


def test_images_from_an_allow_list_of_globs():
    policy = Policy(allowed_images=("registry.local/ml/*",))
    assert check(policy, image="registry.local/ml/trainer:2") == []
    assert check(policy, image=TRAINER) == []  # the operator's own image is always allowed
    assert check(policy, image="lft/trainer:gpu") == [
        'spec.image "lft/trainer:gpu" is not an allowed trainer image (policy.allowedImages: registry.local/ml/*)'
    ]


def test_image_repository():
    assert image_repository("lft/trainer:cpu") == "lft/trainer"
    assert image_repository("reg:5000/team/trainer:1.2") == "reg:5000/team/trainer"
    assert image_repository("reg:5000/team/trainer") == "reg:5000/team/trainer"
    assert image_repository("trainer@sha256:abc") == "trainer"
    assert Policy().image_patterns("reg:5000/t:1") == ("reg:5000/t:*", "reg:5000/t@*")


def test_trust_remote_code_only_when_the_admin_allows_it():
    assert check(model={"name": "m", "trustRemoteCode": False}) == []
    assert check(model={"name": "m", "trustRemoteCode": True}) == [
        "spec.model.trustRemoteCode true is not allowed: it runs code from the model's repository in the trainer "
        "pod (policy.allowTrustRemoteCode: false)"
    ]
    assert check(Policy(allow_trust_remote_code=True), model={"name": "m", "trustRemoteCode": True}) == []


# --- volumes ----------------------------------------------------------------------------------


def test_volume_kinds_default():
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "bare"},  # no source: an emptyDir
        {"name": "p", "projected": {"sources": [{"configMap": {"name": "c"}}]}},
    ]
    assert check(**template(volumes=volumes)) == []
    refused = check(**template(volumes=[{"name": "host", "hostPath": {"path": "/"}}]))
    assert refused == [
        'spec.podTemplate.volumes[0] ("host") has kind hostPath, not an allowed volume kind '
        f"(policy.allowedVolumeKinds: {DEFAULT_KINDS})"
    ]
    assert len(check(**template(volumes=[{"name": "n", "nfs": {"server": "s", "path": "/"}}]))) == 1


def test_default_volume_kinds_are_restricted_ones():
    assert set(DEFAULT_VOLUME_KINDS) <= RESTRICTED_VOLUMES and "hostPath" not in DEFAULT_VOLUME_KINDS


def test_volume_kinds_set_by_the_admin():
    host = template(volumes=[{"name": "host", "hostPath": {"path": "/data"}}])
    assert check(Policy(allowed_volume_kinds=("hostPath",)), **host) == []
    assert check(Policy(allowed_volume_kinds=()), **template(volumes=[{"name": "bare"}])) == [
        'spec.podTemplate.volumes[0] ("bare") has kind emptyDir, not an allowed volume kind '
        "(policy.allowedVolumeKinds: none)"
    ]
    with pytest.raises(ValidationError, match="unknown volume kinds hostpath"):
        Policy.model_validate({"allowedVolumeKinds": ["hostpath"]})


# --- ServiceAccount ---------------------------------------------------------------------------


def test_service_account_only_from_the_allow_list():
    assert check() == []  # the generated per-run one
    assert check(**template(serviceAccountName="admin")) == [
        'spec.podTemplate.serviceAccountName "admin" is not allowed: trainers run as their generated '
        "ServiceAccount unless the policy names another (policy.allowedServiceAccounts: none)"
    ]
    policy = Policy(allowed_service_accounts=("workload-id",))
    assert check(policy, **template(serviceAccountName="workload-id")) == []
    assert "(policy.allowedServiceAccounts: workload-id)" in check(policy, **template(serviceAccountName="x"))[0]


# --- Secrets ----------------------------------------------------------------------------------


def secret_env(name: str, secret: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}


def test_env_from_the_storage_secret_and_the_allow_list_only():
    env = [secret_env("AWS_ACCESS_KEY_ID", "s3"), {"name": "TZ", "value": "UTC"},
           {"name": "OMP_NUM_THREADS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
    assert check(None, "s3", **template(env=env)) == []
    hf = template(env=[secret_env("HF_TOKEN", "hf-token")])
    assert check(None, "s3", **hf) == [
        'spec.podTemplate.env[0].valueFrom.secretKeyRef.name "hf-token" is not an allowed Secret '
        '(allowed: the storage Secret "s3" and policy.allowedSecrets: none)'
    ]
    assert check(Policy(allowed_secrets=("hf-token",)), None, **hf) == []
    assert check(None, None, **hf) == [
        'spec.podTemplate.env[0].valueFrom.secretKeyRef.name "hf-token" is not an allowed Secret '
        "(allowed: the storage Secret none and policy.allowedSecrets: none)"
    ]


def test_secret_volumes_and_projected_secrets_follow_the_same_rule():
    volumes = [
        {"name": "a", "secret": {"secretName": "s3"}},
        {"name": "b", "secret": {"secretName": "db-password"}},
        {"name": "c", "projected": {"sources": [{"configMap": {"name": "x"}}, {"secret": {"name": "tls"}}]}},
    ]
    assert check(None, "s3", **template(volumes=volumes)) == [
        'spec.podTemplate.volumes[1].secret.secretName "db-password" is not an allowed Secret '
        '(allowed: the storage Secret "s3" and policy.allowedSecrets: none)',
        'spec.podTemplate.volumes[2].projected.sources[1].secret.name "tls" is not an allowed Secret '
        '(allowed: the storage Secret "s3" and policy.allowedSecrets: none)',
    ]
    assert check(Policy(allowed_secrets=("db-password", "tls")), "s3", **template(volumes=volumes)) == []


def refused_fields(raw_spec: dict) -> str:
    """The UnknownField message of a spec that does not parse."""
    spec, problems = validate({**BASE, **raw_spec}, "run")
    assert spec is None and [p.reason for p in problems] == [Reason.UNKNOWN_FIELD], problems
    return problems[0].message


def test_keys_that_differ_only_in_case_are_refused_with_their_path():
    # The issue's reproduction: the policy used to read "Name", the Job got "name".
    repro = template(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"Name": "s3-credentials", "name": "victim",
                                                                         "key": "k"}}}])
    assert "spec.podTemplate.env.0.valueFrom.secretKeyRef.Name" in refused_fields(repro)
    assert "spec.podTemplate.env.0.valueFrom.SecretKeyRef" in refused_fields(
        template(env=[{"name": "X", "valueFrom": {"SecretKeyRef": {"name": "db", "key": "p"}}}]))
    assert "spec.podTemplate.volumes.0.secret.SecretName" in refused_fields(
        template(volumes=[{"name": "v", "secret": {"SecretName": "s3", "secretName": "victim"}}]))
    assert "spec.podTemplate.volumes.0.projected.sources.0.secret.Name" in refused_fields(
        template(volumes=[{"name": "v", "projected": {"sources": [{"secret": {"Name": "s3", "name": "victim"}}]}}]))
    assert "spec.podTemplate.volumes.0.Secret" in refused_fields(
        template(volumes=[{"name": "v", "Secret": {"secretName": "victim"}}]))
    assert "spec.affinity.NodeAffinity" in refused_fields({"affinity": {"NodeAffinity": {"x": 1}}})
    assert "spec.podTemplate.volumeMounts.0.MountPath" in refused_fields(
        template(volumeMounts=[{"name": "v", "mountPath": "/data", "MountPath": "/opt/lft/src"}]))
    assert "spec.tolerations.0.Operator" in refused_fields({"tolerations": [{"key": "a", "Operator": "Exists"}]})


def test_the_job_carries_exactly_the_validated_fields():
    raw = {**BASE, **template(env=[secret_env("HF_TOKEN", "s3")],
                              volumes=[{"name": "v", "secret": {"secretName": "s3"}}])}
    spec, problems = validate(raw, "run", Settings(default_storage_secret="s3"))
    assert spec is not None and problems == []
    pod = builders.job(builders.Owner("run", "ns", "uid"), spec, Settings(default_storage_secret="s3"))["spec"]["template"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "token"}}}
    assert {"name": "v", "secret": {"secretName": "s3"}} in pod["spec"]["volumes"]


def test_malformed_pod_fields_are_refused_before_the_policy():
    for bad in ({"env": [{"name": "A", "valueFrom": "s3"}]}, {"volumes": [{"name": "p", "projected": "x"}]},
                {"volumes": [{"name": "r", "secret": "x"}]}):
        spec, problems = validate({**BASE, "podTemplate": bad}, "run")
        assert spec is None and [p.reason for p in problems] == [Reason.INVALID_SPEC], bad


# --- environment variables ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONINSPECT", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "BASH_ENV",
    "ENV", "BROWSER", "HF_ENDPOINT", "HF_HOME", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY", "LFT_CONFIG",
    "LFT_UID", "LFT_SECRET_DIRS", "LFT_PREFLIGHT_REPORT", "KUBERNETES_SERVICE_HOST", "NCCL_NET_PLUGIN", "HOME",
    "hf_token", "CUDA_VISIBLE_DEVICES", "TRANSFORMERS_CACHE", "SSL_CERT_FILE", "AWS_CA_BUNDLE", "AWS_CONFIG_FILE",
])
def test_env_names_outside_the_allow_list_are_refused(name):
    (message,) = check(**template(env=[{"name": name, "value": "/mnt/x"}]))
    assert message.startswith(f'spec.podTemplate.env[0].name "{name}" is not an allowed variable: the trainer takes '
                              "the documented ones (HF_TOKEN, ")
    assert message.split(") and ")[1].startswith("policy.allowedEnv: none")


def test_the_admin_may_allow_more_env_names_but_never_the_operators_own():
    policy = Policy(allowed_env=("MY_APP_*", "*"))
    assert check(policy, **template(env=[{"name": "MY_APP_MODE", "value": "x"}, {"name": "ANYTHING", "value": "x"}])) == []
    for name in ("LFT_CONFIG", "LFT_KUBE_API", "HOME"):
        (message,) = check(policy, **template(env=[{"name": name, "value": "x"}]))
        assert message.endswith("LFT_* (but the documented ones) and HOME are the operator's"), message
    # Documented LFT_* knobs (multi-node timeouts) stay the user's.
    assert check(**template(env=[{"name": "LFT_DDP_TIMEOUT_SECONDS", "value": "60"}])) == []


# --- mount paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/opt/lft/src", "/opt/venv", "/usr/lib/python3", "/etc", "/home/trainer",
                                  "/tmp", "/", "/data/../opt/lft", "/dataset", "data", "/var/run/lft/secret-values"])
def test_mounts_over_the_image_are_refused(path):
    (message,) = check(**template(volumes=[{"name": "v", "configMap": {"name": "c"}}],
                                  volumeMounts=[{"name": "v", "mountPath": path}]))
    assert message.startswith(f'spec.podTemplate.volumeMounts[0].mountPath "{path}" is not allowed: mounts go under '
                              "/data, /mnt, /models, /datasets, /cache, /workspace")


def test_mounts_under_the_allowed_directories():
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]
    for path in ("/data", "/data/train", "/mnt/x", "/models/phi3/", "/workspace"):
        assert check(**template(volumes=volumes, volumeMounts=[{"name": "v", "mountPath": path}])) == [], path
    policy = Policy(allowed_mount_paths=("/srv/datasets",))
    assert check(policy, **template(volumes=volumes, volumeMounts=[{"name": "v", "mountPath": "/srv/datasets/a"}])) == []
    with pytest.raises(ValidationError, match="allowedMountPaths"):
        Policy(allowed_mount_paths=("/",))


# --- chat template ------------------------------------------------------------------------------


@pytest.mark.parametrize("template_", [
    "/proc/self/environ", "file:///proc/self/environ", "/var/run/secrets/kubernetes.io/serviceaccount/token",
    "/opt/lft/models/tiny-phi3/../../../../proc/self/environ", "./x.jinja", "~/.bashrc", "http://10.0.0.1/t.jinja",
    "ftp://x/t", "/opt/lft/models/tiny-phi3-evil/t.jinja",
])
def test_chat_template_cannot_name_a_pod_file(template_):
    (message,) = check(model={"name": "/opt/lft/models/tiny-phi3", "chatTemplate": template_})
    assert message.startswith(f'spec.model.chatTemplate "{template_}" is not allowed: give inline Jinja, a template '
                              "name, an object-store URI (s3://")


def test_chat_template_inside_the_model_directory_or_elsewhere_than_the_pod():
    model = "/opt/lft/models/tiny-phi3"
    for ok in (f"{model}/chat.jinja", f"file://{model}/t/chat.jinja", "phi3", "{{ messages }}", "s3://b/t.jinja",
               "gs://b/t.jinja"):
        assert check(model={"name": model, "chatTemplate": ok}) == [], ok
    # A hub model has no local directory: no local template then; a model at / or under /proc gives none either.
    for model_, tpl in (("microsoft/Phi-3-mini-4k-instruct", "/opt/t.jinja"), ("/", "/proc/self/environ"),
                        ("/proc/self", "/proc/self/environ"), ("file:///proc", "file:///proc/self/environ")):
        assert len(check(model={"name": model_, "chatTemplate": tpl})) == 1, (model_, tpl)


def test_the_operators_default_storage_secret_counts_as_the_storage_secret():
    spec = {**BASE, **template(env=[secret_env("HF_TOKEN", "cluster-s3")])}
    assert validate(spec, "run", Settings(default_storage_secret="cluster-s3"))[1] == []
    assert [p.reason for p in validate(spec, "run", Settings())[1]] == [Reason.POLICY_VIOLATION]
    # The spec's own storage Secret replaces the default one.
    _, problems = validate({**spec, "storageSecretRef": {"name": "mine"}}, "run", Settings(default_storage_secret="cluster-s3"))
    assert '"cluster-s3" is not an allowed Secret (allowed: the storage Secret "mine"' in problems[0].message


def test_storage_secrets_default_to_the_operators_own():
    ref = {"storageSecretRef": {"name": "other-team-creds"}}
    assert check(**ref) == [
        'spec.storageSecretRef.name "other-team-creds" is not allowed: every key of it would become the trainer\'s '
        "environment (allowed: the operator's storage Secret and policy.allowedStorageSecrets: none)"
    ]
    spec = {**BASE, **ref}
    assert validate(spec, "run", Settings(default_storage_secret="other-team-creds"))[1] == []
    tracker = {**BASE, "training": {"reportTo": ["mlflow"], "mlflow": {"trackingUri": "http://m",
                                                                        "credentialsSecretRef": {"name": "ml"}}}}
    assert [p.message.split(" is ")[0] for p in validate(tracker, "run", Settings(default_storage_secret="s3"))[1]] == [
        'spec.training.mlflow.credentialsSecretRef.name "ml"']
    policy = Policy(allowed_storage_secrets=("s3-credentials",))
    assert check(policy, **ref)[0].endswith("(allowed: the operator's storage Secret and "
                                            "policy.allowedStorageSecrets: s3-credentials)")
    assert check(policy, storageSecretRef={"name": "s3-credentials"}) == []
    # null, the former "anything", is closed too (an upgrade that kept it in its values).
    assert Policy.model_validate({"allowedStorageSecrets": None}).allowed_storage_secrets == ()


# --- scheduling -------------------------------------------------------------------------------


def test_tolerations_default_to_none():
    everything = {"operator": "Exists"}
    assert len(check(tolerations=[everything])) == 1
    policy = Policy(allowed_tolerations=(TolerationRule(key="nvidia.com/gpu"),))
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert check(policy, tolerations=[gpu]) == []
    assert check(policy, tolerations=[gpu, everything]) == [
        'spec.tolerations[1] {"operator":"Exists"} is not allowed (policy.allowedTolerations: {"key":"nvidia.com/gpu"})'
    ]
    assert len(check(Policy(allowed_tolerations=()), tolerations=[gpu])) == 1


def test_toleration_rules_match_as_kubernetes_reads_tolerations():
    def t(**fields) -> Toleration:
        return Toleration.model_validate(fields)

    rule = TolerationRule(key="dedicated", value="ml", effect="NoSchedule")
    assert rule.allows(t(key="dedicated", value="ml", effect="NoSchedule"))  # operator defaults to Equal
    assert not rule.allows(t(key="dedicated", operator="Exists", effect="NoSchedule"))  # any value
    assert not rule.allows(t(key="dedicated", value="ml"))  # every effect, NoExecute included
    assert not rule.allows(t(operator="Exists"))
    assert TolerationRule(key="dedicated", operator="Equal").allows(t(key="dedicated", value="x"))
    assert not TolerationRule(key="dedicated", operator="Equal").allows(t(key="dedicated", operator="Exists"))


def test_priority_classes_default_to_none():
    assert check(priorityClassName="system-node-critical") == [
        'spec.priorityClassName "system-node-critical" is not allowed (policy.allowedPriorityClasses: none)'
    ]
    policy = Policy(allowed_priority_classes=("training", "batch-low"))
    assert check(policy, priorityClassName="training") == []
    assert check(policy) == []
    assert check(policy, priorityClassName="system-node-critical") == [
        'spec.priorityClassName "system-node-critical" is not allowed (policy.allowedPriorityClasses: training, batch-low)'
    ]


def test_node_selectors_allow_list_is_optional():
    master = {"node-role.kubernetes.io/master": ""}
    assert check(nodeSelector=master, affinity={"nodeAffinity": {"x": 1}}) == []
    policy = Policy(allowed_node_selectors={"pool": ("gpu-*",)})
    assert check(policy, nodeSelector={"pool": "gpu-a100"}, affinity={"podAntiAffinity": {}}) == []
    assert check(policy, nodeSelector={"pool": "cpu", **master}, affinity={"nodeAffinity": {"x": 1}}) == [
        'spec.nodeSelector["pool"] "cpu" is not allowed (policy.allowedNodeSelectors: {"pool":["gpu-*"]})',
        'spec.nodeSelector["node-role.kubernetes.io/master"] "" is not allowed '
        '(policy.allowedNodeSelectors: {"pool":["gpu-*"]})',
        'spec.affinity.nodeAffinity is not allowed while the policy limits node selection '
        '(policy.allowedNodeSelectors: {"pool":["gpu-*"]}): choose nodes with spec.nodeSelector',
    ]


# --- Pod Security restricted ------------------------------------------------------------------


def test_security_annotations_are_always_refused():
    annotations = {
        "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/trainer": "unconfined",
        "prometheus.io/scrape": "true",
    }
    permissive = Policy(allowed_volume_kinds=("hostPath",), allowed_tolerations=None)
    assert check(permissive, **template(annotations=annotations)) == [
        'spec.podTemplate.annotations["seccomp.security.alpha.kubernetes.io/pod"] "unconfined" is not allowed: '
        "seccomp and AppArmor profiles are set by the operator (trainer pods are always Pod Security restricted)",
        'spec.podTemplate.annotations["container.apparmor.security.beta.kubernetes.io/trainer"] "unconfined" is not '
        "allowed: seccomp and AppArmor profiles are set by the operator (trainer pods are always Pod Security restricted)",
    ]


@pytest.mark.parametrize(
    "field",
    [{"securityContext": {"runAsUser": 0, "privileged": True}}, {"hostNetwork": True}, {"containers": []}],
    ids=["securityContext", "hostNetwork", "containers"],
)
def test_pod_template_cannot_reach_the_security_context(field):
    spec, problems = validate({**BASE, "podTemplate": field}, "run")
    assert spec is None and [p.reason for p in problems] == [Reason.UNKNOWN_FIELD]
    assert f"spec.podTemplate.{next(iter(field))}" in problems[0].message


def test_everything_the_default_policy_allows_builds_a_restricted_pod():
    raw = {
        **BASE,
        "storageSecretRef": {"name": "s3"},
        "resources": {"gpus": 2},
        "podTemplate": {
            "labels": {"team": "a"},
            "annotations": {"prometheus.io/scrape": "true"},
            "env": [secret_env("HF_TOKEN", "s3")],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "sec", "secret": {"secretName": "s3"}},
                {"name": "scratch"},
                {"name": "p", "projected": {"sources": [{"configMap": {"name": "c"}}]}},
            ],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
    }
    settings = Settings(default_storage_secret="s3")  # the chart's storage.secretName
    spec, problems = validate(raw, "run", settings)
    assert spec is not None and problems == []
    job = builders.job(builders.Owner("run", "ns", "uid"), spec, settings)
    assert restricted_violations(job["spec"]["template"]) == []


def test_the_restricted_check_catches_what_the_admin_lets_through():
    """The checker above can fail: hostPath (allowed by an admin) makes a non-restricted pod."""
    raw = {**BASE, "podTemplate": {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}}
    settings = Settings(policy=Policy(allowed_volume_kinds=("hostPath",)))
    spec, problems = validate(raw, "run", settings)
    assert spec is not None and problems == []
    template_ = builders.job(builders.Owner("run", "ns", "uid"), spec, settings)["spec"]["template"]
    assert restricted_violations(template_) == ["volume host: hostPath"]
    template_["metadata"]["annotations"] = {"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}
    template_["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert len(restricted_violations(template_)) == 3


# --- through validate() and the settings ------------------------------------------------------


def test_each_broken_rule_is_one_policy_violation():
    raw = {**BASE, "image": "evil/x:1", "podTemplate": {"serviceAccountName": "admin"}}
    spec, problems = validate(raw, "run", Settings(trainer_image=TRAINER))
    assert spec is not None
    assert [p.reason for p in problems] == [Reason.POLICY_VIOLATION] * 2
    assert problems[0].message.startswith('spec.image "evil/x:1"')
    assert problems[1].message.startswith('spec.podTemplate.serviceAccountName "admin"')


def test_policy_from_the_environment():
    policy = {
        "allowedImages": ["reg/*"],
        "allowedVolumeKinds": ["emptyDir"],
        "allowedServiceAccounts": ["wi"],
        "allowedSecrets": ["hf-token"],
        "allowTrustRemoteCode": True,
        "allowedStorageSecrets": None,
        "allowedTolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        "allowedPriorityClasses": [],
        "allowedNodeSelectors": {"pool": ["a", "b"]},
    }
    s = Settings.from_env({"LFT_POLICY": json.dumps(policy)}).policy
    assert s.allowed_images == ("reg/*",) and s.allowed_volume_kinds == ("emptyDir",)
    assert s.allowed_service_accounts == ("wi",) and s.allowed_secrets == ("hf-token",)
    assert s.allow_trust_remote_code is True
    assert s.allowed_storage_secrets == () and s.allowed_priority_classes == ()
    assert s.allowed_tolerations == (TolerationRule(key="nvidia.com/gpu", effect="NoSchedule"),)
    assert s.allowed_node_selectors == {"pool": ("a", "b")}
    assert Settings.from_env({}).policy == Policy() == Settings.from_env({"LFT_POLICY": ""}).policy
    with pytest.raises(ValidationError, match="alowedImages"):
        Settings.from_env({"LFT_POLICY": '{"alowedImages": []}'})
