"""output.push.oci against a real OCI registry (CNCF Distribution v3, on a free loopback port, data in a temp dir):
the trainer trains the tiny model, uploads the adapter and pushes it; `oras pull` gets the files back by name;
the pulled adapter loads with PEFT onto the tiny base and changes its logits. Basic auth with the registry's
htpasswd backend (bcrypt from the C library's crypt); a refused push fails the run with the adapter kept.

The registry and oras come from hack/build-from-modules.sh (registry, oras); without them this skips, or fails
with LFT_REQUIRE_TOOLS=1. The bearer-token flow needs a token server: tests/unit/trainer/storage/test_oci.py's
in-memory registry covers it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from lft_api.oci_spec import ADAPTER_ARTIFACT_TYPE, OciPushSpec
from lft_trainer.errors import InvalidInput
from lft_trainer.storage import oci
from tests.support.tools import go_tool
from tests.support.trainer_run import config, logits_before_and_after, run_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGISTRY = go_tool("registry", "3.1.2", "registry")
ORAS = go_tool("oras", "1.3.6", "oras")
USER, PASSWORD = "pusher", "s3cret-pw"


def _tools() -> None:
    if REGISTRY is None or ORAS is None:
        message = "registry or oras not built (bash hack/build-from-modules.sh registry; ... oras)"
        if os.environ.get("LFT_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # Python 3.13 removed it
            pytest.skip("no crypt module for the htpasswd file")
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("the C library's crypt has no bcrypt")
    return hashed


def _start_registry(root: Path, htpasswd: bool = False) -> Iterator[str]:
    _tools()
    port = _free_port()
    auth = ""
    if htpasswd:
        (root / "htpasswd").write_text(f"{USER}:{_bcrypt(PASSWORD)}\n")
        auth = f"auth:\n  htpasswd:\n    realm: lft-test\n    path: {root / 'htpasswd'}\n"
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen([str(REGISTRY), "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # 401: up, with auth
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    yield from _start_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory) -> Iterator[str]:
    yield from _start_registry(tmp_path_factory.mktemp("registry-auth"), htpasswd=True)


def _oras(*args: str) -> str:
    done = subprocess.run([str(ORAS), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _train(tiny_model: Path, tmp_path: Path, monkeypatch, push: dict) -> tuple[int, dict, Path]:
    out = tmp_path / "out"
    cfg = config(tiny_model, str(out), None, maxSteps=12, evalSteps=6)
    cfg["checkpointing"]["everySteps"] = 6
    cfg["evaluation"] = {"samples": 0}
    cfg["output"]["push"] = {"oci": push}
    code, message = run_in_process(cfg, tmp_path, monkeypatch)
    return code, message, out


def test_trained_adapter_pushed_pulled_with_oras_and_loaded_with_peft(registry, tiny_model, tmp_path, monkeypatch):
    repository = f"{registry}/team/adapters/tiny"
    code, message, out = _train(tiny_model, tmp_path, monkeypatch, {"repository": repository, "plainHttp": True})
    assert code == 0, message
    pushed = message["adapter"]["oci"]
    assert pushed["reference"] == f"{repository}:latest"  # outside Kubernetes: no resource name
    assert pushed["digest"].startswith("sha256:")
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["oci"] == pushed

    pulled = tmp_path / "pulled"
    _oras("pull", "--plain-http", "-o", str(pulled), f"{repository}@{pushed['digest']}")
    adapter = out / "adapter"
    names = sorted(p.name for p in adapter.iterdir() if p.is_file())
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= set(names)
    assert sorted(p.name for p in pulled.iterdir()) == names
    for name in names:
        assert (pulled / name).read_bytes() == (adapter / name).read_bytes(), name

    manifest = json.loads(_oras("manifest", "fetch", "--plain-http", f"{repository}:latest"))
    assert manifest["artifactType"] == ADAPTER_ARTIFACT_TYPE
    assert manifest["annotations"]["dev.finetune.lft.base-model"] == str(tiny_model)

    import torch

    _, before, after = logits_before_and_after(tiny_model, pulled)
    assert not torch.allclose(before, after), "the pulled adapter does not change the base model's logits"


def test_basic_auth_push_and_pull(auth_registry, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    spec = OciPushSpec(repository=f"{auth_registry}/team/private", plain_http=True, tag="v1")
    env = {oci.ENV_USERNAME: USER, oci.ENV_PASSWORD: PASSWORD}
    ref = oci.push_adapter(adapter, spec, None, {}, env)
    pulled = tmp_path / "pulled"
    _oras("pull", "--plain-http", "-u", USER, "-p", PASSWORD, "-o", str(pulled), f"{spec.repository}@{ref.digest}")
    assert (pulled / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()

    with pytest.raises(InvalidInput) as err:
        oci.push_adapter(adapter, spec, None, {}, {oci.ENV_USERNAME: USER, oci.ENV_PASSWORD: "wrong"})
    assert err.value.reason == "OciPushFailed" and "401" in err.value.message and "wrong" not in err.value.message


def test_a_refused_push_fails_the_run_and_keeps_the_adapter(auth_registry, tiny_model, tmp_path, monkeypatch):
    push = {"repository": f"{auth_registry}/team/adapters/tiny", "plainHttp": True, "tag": "v1"}
    code, message, out = _train(tiny_model, tmp_path, monkeypatch, push)  # no credentials
    assert code == 3 and message["reason"] == "OciPushFailed", message
    assert f"the adapter is at file://{out / 'adapter'}" in message["message"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["oci"]["reference"].endswith(":v1") and "credentials" in summary["oci"]["error"]
