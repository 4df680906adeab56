"""Secret scrubbing: the patterns (lft_api.scrub), the trainer's values (lft_trainer.security.scrubbing), the stream
wrapper, the status client, and a trainer process with planted secrets in every output."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lft_api.scrub import scrub as pattern_scrub
from lft_trainer.reporting import progress
from lft_trainer.security import scrubbing
from tests.support.status_api import StatusApi

ROOT = Path(__file__).resolve().parents[4]
PRESIGNED = ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDPLANTED%2F2026"
             "&X-Amz-Security-Token=SESSPLANTED&X-Amz-Signature=SIGPLANTED0123&X-Amz-Expires=60")


@pytest.mark.parametrize(("text", "secret"), [
    (PRESIGNED, "SIGPLANTED0123"),
    (PRESIGNED, "AKIDPLANTED"),
    (PRESIGNED, "SESSPLANTED"),
    ("https://acct.blob.core.windows.net/c/f?sv=2022&se=2026&sig=AzSigPlanted%3D&sp=r", "AzSigPlanted"),
    ("https://storage.googleapis.com/b/o?X-Goog-Credential=gsa%40p&X-Goog-Signature=GoogSigPlanted", "GoogSigPlanted"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=AzKeyPlanted==;EndpointSuffix=core", "AzKeyPlanted"),
    ("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=SasKeyPlanted", "SasKeyPlanted"),
    ("401 for header Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.tokenPlanted", "tokenPlanted"),
    ("login with hf_AbCdEfGhIjKlMnOpQrStUvWx01 failed", "hf_AbCdEfGhIjKlMnOpQrStUvWx01"),
    ("key id AKIAABCDEFGHIJKLMNOP denied", "AKIAABCDEFGHIJKLMNOP"),
    ('{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvPlanted\\n-----END PRIVATE KEY-----\\n"}', "MIIEvPlanted"),
    ('{"private_key_id": "0123abcdPlanted", "type": "service_account"}', "0123abcdPlanted"),
    ("failed at http://user:pwPlanted@minio:9000/b", "pwPlanted"),
])
def test_patterns_mask_each_kind(text: str, secret: str) -> None:
    out = pattern_scrub(text)
    assert secret not in out and "***" in out, out


def test_patterns_keep_json_valid_and_plain_text_alone() -> None:
    message = json.dumps({"outcome": "error", "reason": "X", "message": f"GET {PRESIGNED} -> 403"})
    assert json.loads(pattern_scrub(message))["reason"] == "X"
    plain = "step 30/30 loss 0.42 max_tokens=128 s3://bucket/run/adapter eos_token=<|end|>"
    assert pattern_scrub(plain) == plain


def test_values_by_name_by_file_and_from_gcs_credentials(tmp_path) -> None:
    secrets = tmp_path / "secrets"
    (secrets / "env-3").mkdir(parents=True)
    (secrets / "WEIRD_NAME").write_text("file-only-value-1")  # a key whose name says nothing
    (secrets / "env-3" / "token").write_text("nested-value-22\n")
    (secrets / "AWS_REGION").write_text("eu-central-1")  # a setting, not a credential
    (secrets / "..data").mkdir()
    gcs = tmp_path / "gcs.json"
    gcs.write_text(json.dumps({"type": "service_account", "private_key_id": "pkid-value-9",
                               "private_key": "-----BEGIN PRIVATE KEY-----\nPEMBODYVALUE0123456789\n-----END"}))
    env = {"HF_TOKEN": "hf-token-value", "HUGGING_FACE_HUB_TOKEN": "hub-token-value",
           "AZURE_STORAGE_KEY": "azure+key/value==", "AZURE_STORAGE_CONNECTION_STRING": "conn-string-value",
           "AWS_SECRET_ACCESS_KEY": "aws-secret-value", "MY_DB_PASSWORD": "db-pass-value",
           "LFT_NAME": "my-run-name", "TOKENIZERS_PARALLELISM": "false-ish", "PATH": "/usr/bin:/bin",
           "LFT_SECRET_DIRS": str(secrets), "GOOGLE_APPLICATION_CREDENTIALS": str(gcs)}
    s = scrubbing.Scrubber.from_environment(env)
    for value in ("hf-token-value", "hub-token-value", "azure+key/value==", "azure%2Bkey%2Fvalue%3D%3D",
                  "conn-string-value", "aws-secret-value", "db-pass-value", "file-only-value-1", "nested-value-22",
                  "pkid-value-9", "PEMBODYVALUE0123456789"):
        assert value not in s(f"x {value} y"), value
    for kept in ("my-run-name", "false-ish", "/usr/bin:/bin", "eu-central-1"):
        assert s(kept) == kept


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # '/' and '+': the URL-safe alphabet differs


@pytest.mark.parametrize("shift", [0, 1, 2])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode, bytes.hex,
                                    lambda b: b.hex().upper().encode()], ids=["b64", "b64url", "hex", "HEX"])
def test_a_secret_encoded_inside_a_longer_blob_is_masked(shift, encode) -> None:
    """The secret at any offset mod 3 of a blob encoded whole: what is left of the encoding cannot give
    the secret back (its characters that depend on the secret alone are gone)."""
    blob = b"k=" + b"x" * shift + SECRET.encode() + b";tail"
    encoded = encode(blob)
    encoded = encoded.decode() if isinstance(encoded, bytes) else encoded
    out = scrubbing.Scrubber.from_environment({"AWS_SECRET_ACCESS_KEY": SECRET})(f"message: {encoded} end")
    assert "***" in out and encoded not in out, out
    # What is left around the mask encodes b"k=x..." and b";tail" (and a character or two of the secret).
    left = out.removeprefix("message: ").removesuffix(" end").split("***")
    assert len(left) == 2 and all(len(part) <= 16 for part in left), out


def test_short_encodings_are_not_looked_for() -> None:
    """A 6-character value's base64 at an awkward alignment is 7 characters: too short to mean anything."""
    forms = scrubbing.secret_variants({"MY_TOKEN": "abcdef"})
    assert "YWJjZGVm" in forms and "616263646566" in forms  # shift 0 (8 chars) and hex are kept
    assert all(len(f) >= 6 for f in forms)
    assert all(len(f) >= scrubbing.MIN_ENCODED for f in forms if f not in ("abcdef",))


def test_values_and_variants_are_apart(tmp_path) -> None:
    env = {"HF_TOKEN": "  hf-token-value\n", "LFT_NAME": "my-run-name"}
    assert scrubbing.secret_values(env) == ["hf-token-value"]
    variants = scrubbing.secret_variants(env)
    # 14 bytes at offset 0: the first 18 characters of the base64 come from them alone (18 * 6 <= 14 * 8)
    assert "hf-token-value" in variants and base64.b64encode(b"hf-token-value").decode()[:18] in variants
    assert "hf-token-value".encode().hex() in variants


def test_the_service_account_token_is_a_secret_value(tmp_path, monkeypatch) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.planted-sa-token.sig0123")
    monkeypatch.setattr(scrubbing, "SERVICE_ACCOUNT_TOKEN", str(token))
    assert "eyJhbGciOiJSUzI1NiJ9.planted-sa-token.sig0123" in scrubbing.secret_values({})
    out = scrubbing.Scrubber.from_environment({})("token: eyJhbGciOiJSUzI1NiJ9.planted-sa-token.sig0123")
    assert "planted-sa-token" not in out
    token.write_text("eyJhbGciOiJSUzI1NiJ9.rotated-sa-token.sig4567")  # the kubelet rotates it
    assert "rotated-sa-token" not in scrubbing.scrub("token eyJhbGciOiJSUzI1NiJ9.rotated-sa-token.sig4567")


def test_the_token_is_read_where_the_operator_mounts_it() -> None:
    from lft_operator import builders

    assert scrubbing.SERVICE_ACCOUNT_TOKEN == f"{builders.SERVICE_ACCOUNT_DIR}/token"


def test_the_stream_masks_a_secret_split_over_writes() -> None:
    out = io.StringIO()
    stream = scrubbing.ScrubbingStream(out, scrubbing.Scrubber(["split-secret-value"]))
    stream.write("a split-sec")
    stream.write("ret-value b\nnext ")
    assert out.getvalue() == "a *** b\n"
    stream.write("split-secret-value")
    stream.flush()
    assert out.getvalue() == "a *** b\nnext ***"


def test_status_client_scrubs_every_string(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "status-secret-value")
    api = StatusApi()
    try:
        client = progress.KubeStatusClient("ft", "ns", api_url=api.url, sa_dir=str(tmp_path), uid="u-1")
        client.patch({"status": {"checkpointHealth": {"healthy": False, "message": f"PUT status-secret-value {PRESIGNED}"}}})
        sent = json.dumps(api.seen[0][2])
    finally:
        api.stop()
    assert "status-secret-value" not in sent and "SIGPLANTED" not in sent and '"trainerUid": "u-1"' in sent


CRASH = f"""
from lft_trainer.security import scrubbing
scrubbing.install()
print("env value:", __import__("os").environ["HF_TOKEN"], flush=True)
raise RuntimeError("download failed: {PRESIGNED} with " + __import__("os").environ["STORAGE_PASS"])
"""


def _trainer_env(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secret-values"
    secrets.mkdir()
    (secrets / "STORAGE_PASS").write_text("planted-storage-pass")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("api", "trainer_image")),
            "HF_TOKEN": "hf_PlantedHfToken0123456789abcd", "STORAGE_PASS": "planted-storage-pass",
            "AZURE_STORAGE_KEY": "planted-azure-key", "LFT_SECRET_DIRS": str(secrets)}


PLANTED = ("hf_PlantedHfToken0123456789abcd", "planted-storage-pass", "planted-azure-key", "SIGPLANTED0123",
           "AKIDPLANTED", "SESSPLANTED")


def test_an_uncaught_traceback_is_scrubbed(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASH], env=_trainer_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "RuntimeError: download failed" in proc.stderr and "env value: ***" in proc.stdout
    for secret in PLANTED:
        assert secret not in proc.stdout + proc.stderr, secret


def test_the_trainer_masks_planted_secrets_in_stdout_stderr_and_the_termination_message(tmp_path) -> None:
    """A run that fails on a model URI holding a presigned URL and the planted values: none of them in
    any output (the error line on stdout, the log on stderr, the termination message)."""
    env = _trainer_env(tmp_path)
    term = tmp_path / "termination-log"
    uri = f"{PRESIGNED}&x=planted-storage-pass&y=planted-azure-key&h=hf_PlantedHfToken0123456789abcd"
    config = {"model": {"name": uri}, "dataset": {"uri": str(tmp_path / "no-data.jsonl")},
              "output": {"uri": str(tmp_path / "out")}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env.update(LFT_TERMINATION_LOG=str(term), LFT_CONFIG=str(tmp_path / "config.json"))
    proc = subprocess.run([sys.executable, "-m", "lft_trainer"], env=env, capture_output=True, text=True, timeout=300)
    outputs = {"stdout": proc.stdout, "stderr": proc.stderr, "termination message": term.read_text()}
    assert proc.returncode in (1, 3), outputs
    assert "***" in outputs["termination message"], outputs
    for where, text in outputs.items():
        for secret in PLANTED:
            assert secret not in text, f"{secret} in {where}: {text[-2000:]}"
