"""`kubectl lft` against the real API server and the real S3 server (moto), run as a program in its own process.

No operator runs here: each test creates a LoRAFineTune and writes its status through the status subresource
the way the operator and the trainer do, so what the CLI reads is exactly what they would leave.
The program's environment holds no AWS_* credentials: plot and pull must get them from the run's Secret.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from lft_api.contract import FileDigest
from lft_operator.builders import Owner, config_map, job
from lft_operator.settings import Settings
from tests.support.cli import clean_env, install_cli, run_lft
from tests.support.kube import KUBECTL, Kube, fresh_namespace
from tests.support.operator import spec as base_spec
from tests.support.s3 import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY

pytestmark = pytest.mark.integration

ADAPTER_FILES = {"adapter_config.json": b'{"r": 16, "base_model_name_or_path": "/opt/lft/models/tiny-phi3"}',
                 "adapter_model.safetensors": bytes(range(256)) * 64, "README.md": b"# LoRA adapter\n",
                 "chat_template.jinja": b"{{ messages }}"}
PNG = b"\x89PNG\r\n\x1a\n" + b"picture" * 100


def _digest(name: str, data: bytes) -> dict:
    return FileDigest(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()).to_wire()


def _cond(type_: str, status: str, reason: str, message: str, at: str) -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


def patch_status(kube: Kube, ns: str, name: str, status: dict) -> None:
    kube.merge_patch(kube.lft_path(ns, name, "status"), {"status": status})


@pytest.fixture
def namespace(kube: Kube):
    """Outside the session operator's namespaces (it runs when an operator test ran first, as on the oldest
    minor's suite): here the tests write the status themselves, and an operator would overwrite it."""
    with fresh_namespace(kube, prefix="lft-cli-") as name:
        yield name


@pytest.fixture
def lft(kube: Kube, namespace: str, tmp_path: Path):
    """lft(*args) runs the program against this namespace; returns the CompletedProcess."""
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_lft(*args, "-n", namespace, kubeconfig=kube.kubeconfig, home=home, timeout=timeout)

    return run


def succeeded_status(output: str) -> dict:
    return {
        "phase": "Succeeded", "message": f"Training completed; adapter at {output}/adapter.",
        "progress": {"step": 200, "totalSteps": 200, "percent": 100.0, "display": "200/200 (100%)", "eta": "0s"},
        "metrics": {"loss": 1.5059, "evalLoss": 1.6677, "evalLossBefore": 7.3217, "perplexity": 5.2998,
                    "evalLossChange": -5.654},
        "attempts": 1, "jobName": "x-trainer",
        "adapter": {"uri": f"{output}/adapter", "files": [_digest(n, d) for n, d in ADAPTER_FILES.items()]},
        "artifacts": {"adapter": f"{output}/adapter", "summary": f"{output}/training_summary.json",
                      "lossPlot": f"{output}/loss.png"},
        "conditions": [_cond("Accepted", "True", "Accepted", "Training Job x-trainer created.", "2026-01-01T00:00:00Z"),
                       _cond("Succeeded", "True", "Completed", "Training completed.", "2026-01-01T00:05:00Z")],
    }


def test_status_prints_what_the_operator_and_trainer_wrote(kube, namespace, lft):
    kube.create_lft(namespace, "run", base_spec())
    patch_status(kube, namespace, "run", succeeded_status("s3://b/runs/run"))
    out = lft("status", "run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"Namespace:   {namespace}" in text and "Phase:       Succeeded" in text
    assert "Eval loss:   7.3217 before -> 1.6677 after (change -5.6540: better)" in text
    assert "Perplexity:  5.2998" in text
    assert "Adapter:     s3://b/runs/run/adapter (4 files with sha256)" in text
    assert "lossPlot  s3://b/runs/run/loss.png" in text
    assert text.rstrip().splitlines()[-1].split()[:3] == ["Succeeded", "True", "Completed"]
    missing = lft("status", "nope")
    assert missing.returncode == 3
    assert f'lorafinetune "nope" not found in namespace "{namespace}"' in missing.stderr


def test_wait_exit_codes_succeeded_failed_timeout(kube, namespace, lft):
    for name in ("ok", "bad", "slow"):
        kube.create_lft(namespace, name, base_spec())
    patch_status(kube, namespace, "ok", succeeded_status("s3://b/runs/ok"))
    patch_status(kube, namespace, "bad", {"phase": "Failed", "message": "train.jsonl row 7: role 'robot' is not allowed",
                                          "conditions": [_cond("Failed", "True", "InvalidDataset", "x", "2026-01-01T00:00:00Z")]})
    patch_status(kube, namespace, "slow", {"phase": "Running", "progress": {"step": 3, "totalSteps": 9, "display": "3/9 (33%)"}})
    ok = lft("wait", "ok", "--timeout", "20s")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok Succeeded (Completed): adapter at s3://b/runs/ok/adapter")
    bad = lft("wait", "bad")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "bad Failed (InvalidDataset): train.jsonl row 7: role 'robot' is not allowed"
    started = time.monotonic()
    slow = lft("wait", "slow", "--timeout", "3s")
    assert slow.returncode == 2, slow.stderr
    assert time.monotonic() - started >= 3
    assert "timed out after 3s waiting for slow (phase Running, 3/9 (33%))" in slow.stderr


def test_wait_follows_the_run_until_it_ends(kube, namespace, lft):
    kube.create_lft(namespace, "later", base_spec())
    patch_status(kube, namespace, "later", {"phase": "Running"})
    timer = threading.Timer(3.0, patch_status, (kube, namespace, "later", {
        "phase": "Failed", "message": "CUDA out of memory at micro-batch 8",
        "conditions": [_cond("Failed", "True", "OutOfMemory", "x", "2026-01-01T00:00:00Z")]}))
    started = time.monotonic()
    timer.start()
    try:
        out = lft("wait", "later", "--timeout", "60s")
    finally:
        timer.cancel()
    assert out.returncode == 1, out.stderr
    assert "later Failed (OutOfMemory): CUDA out of memory at micro-batch 8" in out.stderr
    assert 3 <= time.monotonic() - started < 30


def _put_run(s3_bucket, prefix: str) -> None:
    for name, data in ADAPTER_FILES.items():
        s3_bucket.put_bytes(f"{prefix}/adapter/{name}", data)
    s3_bucket.put_bytes(f"{prefix}/loss.png", PNG)
    summary = {"files": [_digest(n, d) for n, d in ADAPTER_FILES.items()]}
    s3_bucket.put_bytes(f"{prefix}/training_summary.json", json.dumps(summary).encode())


def _storage_secret(kube: Kube, namespace: str, name: str) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY}})


def test_plot_and_pull_download_real_objects_with_the_runs_secret(kube, namespace, lft, s3_bucket, tmp_path):
    output = s3_bucket.uri("runs/run")
    _put_run(s3_bucket, "runs/run")
    _storage_secret(kube, namespace, "my-s3")
    kube.create_lft(namespace, "run", base_spec(output={"uri": output}, storage={"endpointUrl": s3_bucket.endpoint_url},
                                                storageSecretRef={"name": "my-s3"}))
    patch_status(kube, namespace, "run", succeeded_status(output))

    plot = lft("plot", "run", str(tmp_path / "curve.png"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "curve.png").read_bytes() == PNG
    assert plot.stdout.strip() == f"{tmp_path / 'curve.png'} ({len(PNG)} bytes) from {output}/loss.png"
    default = lft("plot", "run")  # NAME-loss.png in the working directory
    assert default.returncode == 0 and (tmp_path / "home" / "run-loss.png").read_bytes() == PNG

    pulled = lft("pull", "run", str(tmp_path / "adapter"))
    assert pulled.returncode == 0, pulled.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()} == ADAPTER_FILES
    assert f"4 files from {output}/adapter; 4 verified against the sha256 manifest (status.adapter.files)" \
        in pulled.stdout
    assert "warning" not in pulled.stderr

    s3_bucket.put_bytes("runs/run/adapter/adapter_model.safetensors", b"tampered")
    s3_bucket.put_bytes("runs/run/adapter/extra.txt", b"not in the manifest")
    bad = lft("pull", "run", str(tmp_path / "again"))
    assert bad.returncode == 1
    assert f"does not match status.adapter.files (4 files listed); nothing was written to {tmp_path / 'again'}" \
        in bad.stderr
    assert "adapter_model.safetensors: size 8 != 16384" in bad.stderr
    assert "extra.txt: not in status.adapter.files" in bad.stderr
    assert not (tmp_path / "again").exists()
    assert FAKE_SECRET_ACCESS_KEY not in plot.stdout + plot.stderr + pulled.stdout + pulled.stderr + bad.stderr


def test_operator_defaults_endpoint_from_the_config_map_and_secret_from_the_job(kube, namespace, lft, s3_bucket,
                                                                                 tmp_path):
    """No endpoint and no Secret in the spec: the CLI finds what the trainer got, in the ConfigMap and the Job the
    operator built (the same builders, with the Helm chart's default endpoint and Secret)."""
    output = s3_bucket.uri("runs/dflt")
    _put_run(s3_bucket, "runs/dflt")
    _storage_secret(kube, namespace, "chart-default-s3")
    spec = base_spec(output={"uri": output})
    body = kube.create_lft(namespace, "dflt", spec)
    from lft_api.resource import LoRAFineTuneSpec

    owner, model = Owner.from_body(body), LoRAFineTuneSpec.model_validate(spec)
    settings = Settings(default_storage_endpoint=s3_bucket.endpoint_url, default_storage_secret="chart-default-s3")
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps", config_map(owner, model, settings))
    made = kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job(owner, model, settings))
    patch_status(kube, namespace, "dflt", {**succeeded_status(output), "jobName": made["metadata"]["name"]})
    out = lft("pull", "dflt", str(tmp_path / "a"))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(ADAPTER_FILES)


def test_storage_errors_name_the_secret_and_never_print_its_values(kube, namespace, lft, s3_bucket, s3_server,
                                                                     tmp_path):
    output = s3_bucket.uri("runs/denied")
    _put_run(s3_bucket, "runs/denied")
    kube.create_lft(namespace, "denied", base_spec(output={"uri": output}, storageSecretRef={"name": "absent"},
                                                   storage={"endpointUrl": s3_bucket.endpoint_url}))
    patch_status(kube, namespace, "denied", succeeded_status(output))
    absent = lft("plot", "denied")
    assert absent.returncode == 3
    assert f'the storage Secret "absent" does not exist in namespace "{namespace}"' in absent.stderr
    _storage_secret(kube, namespace, "absent")
    with s3_server.iam_auth():  # moto now refuses the key: access denied, with the server's message
        refused = lft("plot", "denied")
    assert refused.returncode == 3
    assert 'credentials from Secret "absent"' in refused.stderr and "InvalidAccessKeyId" in refused.stderr
    assert FAKE_SECRET_ACCESS_KEY not in refused.stdout + refused.stderr
    assert not (tmp_path / "home" / "denied-loss.png").exists()


def test_installed_console_scripts_and_the_kubectl_plugin(kube, namespace, tmp_path):
    """pip install puts `lft` and `kubectl-lft` on PATH; the real kubectl finds the plugin: `kubectl lft`."""
    bindir = install_cli(tmp_path / "site")
    kube.create_lft(namespace, "plug", base_spec())
    patch_status(kube, namespace, "plug", succeeded_status("s3://b/runs/plug"))
    env = clean_env(kube.kubeconfig, tmp_path, PYTHONPATH=str(tmp_path / "site"))
    env["PATH"] = f"{bindir}:{env['PATH']}"
    for cmd in ([KUBECTL, "lft", "status", "plug", "-n", namespace], [str(bindir / "lft"), "-n", namespace,
                                                                       "wait", "plug"]):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, (cmd, out.stderr)
        assert "Succeeded" in out.stdout
    listed = subprocess.run([KUBECTL, "plugin", "list"], capture_output=True, text=True, env=env, timeout=30)
    assert str(bindir / "kubectl-lft") in listed.stdout


def test_pull_refuses_object_names_that_leave_the_directory(kube, namespace, lft, s3_bucket, tmp_path):
    output = s3_bucket.uri("runs/evil")
    _put_run(s3_bucket, "runs/evil")
    s3_bucket.put_bytes("runs/evil/adapter/../../escaped.txt", b"x")  # a valid S3 key; a path outside DIR
    _storage_secret(kube, namespace, "s3")
    kube.create_lft(namespace, "evil", base_spec(output={"uri": output}, storageSecretRef={"name": "s3"},
                                                 storage={"endpointUrl": s3_bucket.endpoint_url}))
    patch_status(kube, namespace, "evil", succeeded_status(output))
    out = lft("pull", "evil", str(tmp_path / "deep" / "er" / "adapter"))
    assert out.returncode == 3
    assert "object names leave the directory: ../../escaped.txt" in out.stderr
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not (tmp_path / "deep" / "er" / "adapter").exists()


def test_samples_reads_samples_jsonl_from_the_bucket(kube, namespace, lft, s3_bucket):
    output = s3_bucket.uri("runs/smp")
    rows = [{"prompt": f"question {i}", "reference": f"answer {i}", "baseOutput": "noise", "tunedOutput": f"answer {i}"}
            for i in range(3)]
    s3_bucket.put_bytes("runs/smp/samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    _storage_secret(kube, namespace, "s3")
    kube.create_lft(namespace, "smp", base_spec(output={"uri": output}, storageSecretRef={"name": "s3"},
                                                storage={"endpointUrl": s3_bucket.endpoint_url}))
    patch_status(kube, namespace, "smp", {**succeeded_status(output), "artifacts": {"samples": f"{output}/samples.jsonl"}})
    out = lft("samples", "smp", "--count", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:5] == ["sample 1 of 3", "  prompt:    question 0", "  reference: answer 0",
                                           "  base:      noise", "  tuned:     answer 0"]
    assert "sample 2 of 3" in out.stdout and "sample 3 of 3" not in out.stdout
    patch_status(kube, namespace, "smp", {"artifacts": {"samples": None}})
    none = lft("samples", "smp")
    assert none.returncode == 3 and "has no samples.jsonl" in none.stderr


def test_an_unreachable_api_server_is_one_clear_line(tmp_path):
    """No cluster needed: a kubeconfig whose server refuses connections (a port nobody listens on)."""
    from tests.support.s3 import free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "team"}}]}))
    out = run_lft("status", "x", kubeconfig=str(kubeconfig), home=tmp_path, timeout=60)
    assert out.returncode == 3
    assert out.stderr.startswith("error: cannot reach the Kubernetes API server 127.0.0.1: MaxRetryError"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
