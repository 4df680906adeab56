"""output.push.oci: the reference rules (spec), the artifact (pure), and the push's auth and retries against an
in-memory registry (tests/support/fake_registry.py). The real registry and oras: tests/integration/test_adapter_oci.py."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lft_api.contract import AdapterRef, OciArtifactRef, RunIdentity, TerminationMessage
from lft_api.errors import format_validation_errors
from lft_api.oci_spec import (
    ADAPTER_ARTIFACT_TYPE,
    EMPTY_CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    OciPushSpec,
    OciReference,
)
from lft_api.spec import TrainerConfig
from lft_trainer.errors import InvalidInput, StorageError
from lft_trainer.storage import oci
from lft_trainer.storage.retry import RetryPolicy
from tests.support.fake_registry import FakeRegistry

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}
FAST = RetryPolicy(total_seconds=2.0, initial_delay=0.01, max_delay=0.05)


def _config(oci_spec: dict) -> TrainerConfig:
    return TrainerConfig.model_validate({**BASE, "output": {"uri": "s3://b/p", "push": {"oci": oci_spec}}})


# --- the spec ----------------------------------------------------------------------------------
@pytest.mark.parametrize("repository", [
    "registry.example.com/team/adapters/phi3-chat", "127.0.0.1:5000/a/b", "localhost/x", "localhost:5000/x",
    "registry:5000/x", "[::1]:5000/x", "reg.io/a--b/c__d.e_f", "docker.io/user/adapter",
])
def test_repository_accepted(repository):
    assert OciReference.parse(repository).host == repository.split("/")[0]
    assert _config({"repository": repository}).output.push is not None


@pytest.mark.parametrize(("repository", "why"), [
    ("team/adapters", "must start with the registry's host"),
    ("registry.example.com", "must start with the registry's host"),
    ("registry.example.com/Team/x", "path components must be lowercase"),
    ("registry.example.com/a//b", "path components must be lowercase"),
    ("registry.example.com/a/b-", "path components must be lowercase"),
    ("registry.example.com/x:v1", "must not contain a tag or digest"),
    ("registry.example.com/x@sha256:" + "0" * 64, "must not contain a tag or digest"),
    ("https://registry.example.com/x", "must start with the registry's host"),
    ("r.io/" + "a" * 251, "at most 255"),
])
def test_repository_refused_naming_the_field(repository, why):
    with pytest.raises(ValidationError) as err:
        _config({"repository": repository})
    text = format_validation_errors(err.value, "spec")
    assert "spec.output.push.oci.repository" in text and why in text


@pytest.mark.parametrize(("tag", "ok"), [("v1", True), ("run-1.2_x", True), ("_x", True), ("-x", False),
                                          (".x", False), ("a" * 128, True), ("a" * 129, False), ("a/b", False)])
def test_tag_rule(tag, ok):
    if ok:
        assert _config({"repository": "r.io/x", "tag": tag}).output.push.oci.tag == tag
    else:
        with pytest.raises(ValidationError, match="output.push.oci.tag|tag"):
            _config({"repository": "r.io/x", "tag": tag})


@pytest.mark.parametrize(("repository", "ok"), [
    ("127.0.0.1:5000/x", True), ("localhost:5000/x", True), ("registry:5000/x", True),
    ("registry.registry.svc:5000/x", True), ("registry.registry.svc.cluster.local/x", True),
    ("10.96.0.12:5000/x", True), ("192.168.1.5/x", True), ("172.20.0.1:5000/x", True),
    ("registry.example.com/x", False), ("8.8.8.8:5000/x", False), ("172.40.0.1/x", False),
])
def test_plain_http_only_inside_the_cluster(repository, ok):
    spec = {"repository": repository, "plainHttp": True}
    if ok:
        assert _config(spec).output.push.oci.plain_http
    else:
        with pytest.raises(ValidationError, match="plainHttp is only for"):
            _config(spec)


def test_default_tag_is_the_resource_name():
    spec = OciPushSpec(repository="r.io/team/x")
    assert spec.reference("phi3-run") == "r.io/team/x:phi3-run"
    assert spec.reference(None) == "r.io/team/x:latest"
    assert OciPushSpec(repository="r.io/x", tag="v2").reference("n") == "r.io/x:v2"


def test_the_credentials_secret_is_governed_like_the_trackers():
    config = _config({"repository": "r.io/x", "credentialsSecretRef": {"name": "reg-creds"}})
    assert config.credential_secrets() == [("output.push.oci.credentialsSecretRef", "reg-creds")]
    assert _config({"repository": "r.io/x"}).credential_secrets() == []


def test_the_operator_passes_the_credentials_secret_by_reference_and_the_policy_governs_it():
    from lft_api.resource import LoRAFineTuneSpec
    from lft_operator import builders
    from lft_operator.policy import Policy, violations
    from lft_operator.settings import Settings

    spec = LoRAFineTuneSpec.model_validate({**BASE, "output": {"uri": "s3://b/p", "push": {"oci": {
        "repository": "r.io/x", "credentialsSecretRef": {"name": "reg-creds"}}}}})
    job = builders.job(builders.Owner("ft", "team-a", "u-1"), spec, Settings())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "reg-creds", "optional": False}} in container["envFrom"]
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == "reg-creds" for v in volumes)  # its values are masked
    found = violations(spec, Policy(), "lft/trainer:cpu", "s3-creds", "s3-creds")
    assert [m.split(" is ")[0] for m in found] == ['spec.output.push.oci.credentialsSecretRef.name "reg-creds"']
    assert violations(spec, Policy(allowed_storage_secrets=["reg-creds"]), "lft/trainer:cpu", "s3-creds", "s3-creds") == []


def test_the_crd_checks_the_repository_and_plain_http():
    from lft_operator import crdgen

    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    node = spec["properties"]["output"]["properties"]["push"]["properties"]["oci"]
    repo = node["properties"]["repository"]
    assert repo["maxLength"] == 255 and "self.matches(" in repo["x-kubernetes-validations"][0]["rule"]
    assert node["x-kubernetes-validations"][0]["fieldPath"] == ".plainHttp"
    assert node["properties"]["tag"]["pattern"] == "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"


def test_the_adapter_ref_carries_the_pushed_digest_through_the_termination_message():
    ref = OciArtifactRef(reference="r.io:5000/x:run", digest="sha256:" + "a" * 64)
    assert ref.pinned() == "r.io:5000/x@sha256:" + "a" * 64
    message = TerminationMessage(outcome="succeeded", reason="Completed", adapter=AdapterRef(uri="s3://b/p/adapter", oci=ref))
    assert TerminationMessage.decode(message.encode()).adapter.oci == ref


# --- the artifact (pure) -----------------------------------------------------------------------
def _adapter(tmp_path: Path) -> Path:
    d = tmp_path / "adapter"
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text('{"r": 8}')
    (d / "adapter_model.safetensors").write_bytes(b"\x00weights" * 1000)
    (d / "tokenizer.json").write_text('{"v": 1}')
    (d / ".hidden").write_text("no")
    (d / "sub").mkdir()
    return d


def test_manifest_one_titled_layer_per_file(tmp_path):
    layers = oci.adapter_layers(_adapter(tmp_path))
    manifest = json.loads(oci.build_manifest(layers, {"a": "b"}))
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE and manifest["artifactType"] == ADAPTER_ARTIFACT_TYPE
    assert manifest["config"] == {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "size": 2, "data": "e30=",
                                  "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    titles = [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]]
    assert titles == ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json"]
    first = manifest["layers"][1]
    data = (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()
    assert first["mediaType"] == LAYER_MEDIA_TYPE and first["size"] == len(data)
    assert first["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert manifest["annotations"] == {"a": "b"} and manifest["schemaVersion"] == 2


def test_not_an_adapter(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="no adapter_config.json"):
        oci.adapter_layers(tmp_path)


def test_annotations_name_the_base_and_the_run():
    config = TrainerConfig.model_validate({**BASE, "model": {"name": "microsoft/Phi-3-mini-4k-instruct", "revision": "abc"}})
    identity = RunIdentity(namespace="team-a", name="run", uid="u-1", spec_hash="h")
    got = oci.adapter_annotations(config, identity, "s3://b/p/adapter", "2025-01-01T00:00:00Z")
    assert got["dev.finetune.lft.base-model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert got["dev.finetune.lft.base-model-revision"] == "abc" and got["dev.finetune.lft.run"] == "team-a/run"
    assert got["dev.finetune.lft.adapter-uri"] == "s3://b/p/adapter"


def test_challenge_parsing():
    assert oci.parse_challenge('Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull"') == (
        "bearer", {"realm": "https://auth.io/token", "service": "reg.io", "scope": "repository:a/b:pull"})
    assert oci.parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


# --- the push against an in-memory registry ----------------------------------------------------
def _push(tmp_path: Path, reg: FakeRegistry, env: dict[str, str] | None = None, **spec) -> OciArtifactRef:
    push = OciPushSpec(repository=f"{reg.host}/team/adapter", plain_http=True, **spec)
    return oci.push_adapter(_adapter(tmp_path), push, "run-1", {"k": "v"}, env or {}, FAST)


def test_push_anonymous(tmp_path):
    with FakeRegistry() as reg:
        ref = _push(tmp_path, reg)
    content_type, body = reg.manifests["run-1"]
    assert content_type == MANIFEST_MEDIA_TYPE and ref.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert ref.reference == f"{reg.host}/team/adapter:run-1"
    assert len(reg.blobs) == 4  # the empty config and three files
    assert reg.blobs[json.loads(body)["layers"][0]["digest"]] == b'{"r": 8}'


def test_push_skips_blobs_the_registry_has(tmp_path):
    with FakeRegistry() as reg:
        _push(tmp_path / "a", reg)
        before = len([r for r in reg.requests if r[0] == "POST"])
        ref = _push(tmp_path / "b", reg, tag="v2")
    assert before == 4 and len([r for r in reg.requests if r[0] == "POST"]) == 4
    assert ref.reference.endswith(":v2")


def test_push_bearer_token_flow(tmp_path):
    with FakeRegistry(auth="bearer", users={"bot": "s3cret"}) as reg:
        ref = _push(tmp_path, reg, env={oci.ENV_USERNAME: "bot", oci.ENV_PASSWORD: "s3cret"})
    assert ref.digest.startswith("sha256:") and "run-1" in reg.manifests
    assert reg.token_requests[0]["scope"] == ["repository:team/adapter:pull,push"]
    assert reg.token_requests[0]["service"] == ["fake"]
    assert len(reg.token_requests) == 1  # the token is kept for the following calls
    assert all(a == f"Bearer {reg_token()}" for _, _, a in reg.requests[1:])


def reg_token() -> str:
    from tests.support.fake_registry import TOKEN

    return TOKEN


def test_push_anonymous_bearer_token(tmp_path):
    with FakeRegistry(auth="bearer") as reg:
        _push(tmp_path, reg)
    assert "run-1" in reg.manifests


def test_push_basic_auth(tmp_path):
    with FakeRegistry(auth="basic", users={"bot": "s3cret"}) as reg:
        _push(tmp_path, reg, env={oci.ENV_USERNAME: "bot", oci.ENV_PASSWORD: "s3cret"})
    assert "run-1" in reg.manifests
    assert reg.requests[-1][2] == "Basic " + base64.b64encode(b"bot:s3cret").decode()


@pytest.mark.parametrize(("auth", "env"), [("basic", {}), ("basic", {oci.ENV_USERNAME: "bot", oci.ENV_PASSWORD: "no"}),
                                           ("bearer", {oci.ENV_USERNAME: "bot", oci.ENV_PASSWORD: "no"})])
def test_bad_credentials_fail_for_good_without_the_password(tmp_path, auth, env):
    with FakeRegistry(auth=auth, users={"bot": "s3cret"}) as reg, pytest.raises(InvalidInput) as err:
        _push(tmp_path, reg, env=env)
    assert err.value.reason == "OciPushFailed" and err.value.field == "output.push.oci"
    assert "credentialsSecretRef" in err.value.message and "s3cret" not in err.value.message
    assert f"{reg.host}/team/adapter:run-1" in err.value.message and not reg.manifests


def test_transient_errors_are_retried(tmp_path):
    with FakeRegistry(fail_first=3) as reg:
        ref = _push(tmp_path, reg)
    assert ref.digest and "run-1" in reg.manifests


def test_a_registry_that_stays_down_is_a_storage_error(tmp_path):
    with FakeRegistry(fail_first=10_000) as reg, pytest.raises(StorageError, match="gave up"):
        _push(tmp_path, reg)


def test_no_registry_is_a_storage_error(tmp_path):
    with FakeRegistry() as reg:
        host = reg.host
    push = OciPushSpec(repository=f"{host}/team/adapter", plain_http=True)
    with pytest.raises(StorageError, match="gave up"):
        oci.push_adapter(_adapter(tmp_path), push, "run-1", {}, {}, RetryPolicy(total_seconds=0.3, initial_delay=0.05))


def test_a_forbidden_repository_fails_for_good(tmp_path):
    with FakeRegistry(fail_first=1, fail_status=403) as reg, pytest.raises(InvalidInput, match="HTTP 403"):
        _push(tmp_path, reg)
