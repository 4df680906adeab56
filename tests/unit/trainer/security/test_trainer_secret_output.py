"""SecretInOutput: nothing bound for the output holds a secret of the pod, raw or encoded (real files, a real
file:// Storage). A match fails the run for good (exit 3) and nothing of that upload is written."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import ExitCode
from lft_trainer.__main__ import _failure
from lft_trainer.errors import InvalidInput
from lft_trainer.security import scrubbing, secret_scan
from lft_trainer.storage.store import Storage, sha256_file
from lft_trainer.storage.uploader import CheckpointUploader

SECRET = "s3cr3t/Planted+Value-0123456789"  # '/' and '+': percent-encoding and URL-safe base64 differ
TOKEN = "eyJhbGciOiJSUzI1NiJ9.planted-service-account-token.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def secrets(monkeypatch, tmp_path_factory) -> None:
    """The pod's secrets: a credential variable and the ServiceAccount token (at a test path)."""
    token = tmp_path_factory.mktemp("sa") / "token"
    token.write_text(TOKEN)
    monkeypatch.setattr(scrubbing, "SERVICE_ACCOUNT_TOKEN", str(token))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


def out_storage(tmp_path: Path) -> tuple[Storage, Path]:
    root = tmp_path / "out"
    return Storage(f"file://{root}"), root


def written(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def refused(exc: InvalidInput, name: str) -> None:
    assert exc.reason == Reason.SECRET_IN_OUTPUT == "SecretInOutput"
    assert exc.file == name and exc.message.startswith(f"{name} holds the value of one of this pod's secrets")
    shown = json.dumps([exc.message, exc.details()])
    assert SECRET not in shown and TOKEN not in shown and "Planted" not in shown


def _b64(shift: int) -> bytes:
    return base64.b64encode(b"x" * shift + SECRET.encode() + b"!")


FORMS = {
    "raw": SECRET.encode(),
    "json-escaped": json.dumps({"k": SECRET}).encode(),
    "percent-encoded": quote(SECRET, safe="").encode(),
    "base64-0": _b64(0), "base64-1": _b64(1), "base64-2": _b64(2),
    "base64url-1": base64.urlsafe_b64encode(b"y" + SECRET.encode()),
    "hex": SECRET.encode().hex().encode(), "HEX": SECRET.encode().hex().upper().encode(),
    "token": TOKEN.encode(), "token-base64": base64.b64encode(b"ab" + TOKEN.encode()),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_upload_file_refuses_a_secret_in_any_form_and_writes_nothing(tmp_path, form) -> None:
    local = tmp_path / "tokenizer_config.json"
    local.write_bytes(b'{"chat_template": "{# ' + FORMS[form] + b' #}"}')
    out, root = out_storage(tmp_path)
    with pytest.raises(InvalidInput) as ei:
        out.upload_file(local, "adapter/tokenizer_config.json")
    refused(ei.value, "adapter/tokenizer_config.json")
    assert written(root) == []


def test_a_secret_cut_by_a_chunk_boundary_is_found(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(secret_scan, "CHUNK", 64)
    out, root = out_storage(tmp_path)
    for offset in range(40, 70):  # the value starts before, at, across and after the first boundary
        local = tmp_path / f"f{offset}.bin"
        local.write_bytes(b"\0" * offset + SECRET.encode() + b"\0" * 100)
        with pytest.raises(InvalidInput):
            out.upload_file(local, local.name)
    assert written(root) == []


def test_upload_dir_checks_every_file_before_uploading_any(tmp_path) -> None:
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "a_config.json").write_text("{}")  # sorted before the bad one: uploaded first today
    (src / "sub" / "tokenizer.json").write_text(f'{{"leak": "{base64.b64encode(SECRET.encode()).decode()}"}}')
    (src / "z.bin").write_bytes(b"\1" * 1000)
    out, root = out_storage(tmp_path)
    with pytest.raises(InvalidInput) as ei:
        out.upload_dir(src, "adapter")
    refused(ei.value, "adapter/sub/tokenizer.json")
    assert written(root) == []


def test_clean_files_are_uploaded_with_their_digests(tmp_path) -> None:
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "weights.bin").write_bytes(bytes(range(256)) * 5000)  # more than one CHUNK
    (src / "config.json").write_text('{"r": 8}')
    out, root = out_storage(tmp_path)
    digests = out.upload_dir(src, "adapter")
    out.upload_file(src / "config.json", "copy.json")
    out.put_json("summary.json", {"ok": True})
    assert written(root) == ["adapter/config.json", "adapter/weights.bin", "copy.json", "summary.json"]
    assert {d.name: d.sha256 for d in digests} == {n: sha256_file(src / n) for n in ("config.json", "weights.bin")}


def test_upload_dir_reads_each_file_once_for_the_check(tmp_path, monkeypatch) -> None:
    """The check and the digest share one read; upload_file does not check a file upload_dir just checked."""
    src = tmp_path / "ckpt"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (src / name).write_bytes(name.encode() * 100)
    seen: list[str] = []
    real = secret_scan.check_file
    monkeypatch.setattr(secret_scan, "check_file", lambda path, name, *a, **kw: (seen.append(name), real(path, name, *a, **kw)))
    out, root = out_storage(tmp_path)
    out.upload_dir(src, "c")
    assert seen == ["c/a.bin", "c/b.bin", "c/c.bin"] and written(root) == ["c/a.bin", "c/b.bin", "c/c.bin"]
    out.upload_file(src / "a.bin", "again.bin")  # on its own: checked
    assert seen[-1] == "again.bin"


def test_a_large_clean_file_is_read_in_chunks_with_the_right_digest(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(secret_scan, "CHUNK", 4096)
    src = tmp_path / "merged"
    src.mkdir()
    (src / "model.safetensors").write_bytes(bytes(range(251)) * 1000)
    out, root = out_storage(tmp_path)
    (digest,) = out.upload_dir(src, "merged")
    assert digest.sha256 == sha256_file(src / "model.safetensors") and digest.size == 251000
    assert (root / "merged" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_put_json_refuses_a_secret(tmp_path) -> None:
    out, root = out_storage(tmp_path)
    with pytest.raises(InvalidInput) as ei:
        out.put_json("/training_summary.json", {"note": base64.b64encode(b"k=" + TOKEN.encode()).decode()})
    refused(ei.value, "training_summary.json")
    assert written(root) == []


def test_storage_open_cannot_write_around_the_check(tmp_path) -> None:
    out, root = out_storage(tmp_path)
    for mode in ("wb", "ab", "w", "r+b", "xb"):
        with pytest.raises(ValueError, match="reads only"):
            out.open("x.bin", mode)
    assert written(root) == []


def test_the_failure_is_permanent_exit_3() -> None:
    msg, details = _failure(secret_scan.secret_in_output("adapter/tokenizer_config.json"))
    assert (msg.outcome, msg.reason) == ("invalid_input", "SecretInOutput")
    assert contract.exit_code_for(msg.outcome) == ExitCode.INVALID_INPUT == 3 and details == {"file": "adapter/tokenizer_config.json"}


def test_a_checkpoint_holding_a_secret_is_not_uploaded_and_ends_the_run(tmp_path) -> None:
    out, root = out_storage(tmp_path)
    failed: list[tuple[int, str]] = []
    up = CheckpointUploader(out, keep_last=2, on_failed=lambda step, error: failed.append((step, error)),
                            staging_root=tmp_path / "staging")
    ckpt = tmp_path / "checkpoint-10"
    ckpt.mkdir()
    (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"chat_template": SECRET}))
    up.submit(ckpt, 10)
    assert up.flush(timeout=30) is False
    assert written(root) == [] and failed and failed[0][0] == 10 and SECRET not in failed[0][1]
    refused(up.fatal, "checkpoints/checkpoint-10/tokenizer_config.json")
    with pytest.raises(InvalidInput):  # the training thread learns it at the next checkpoint
        up.submit(ckpt, 20)
    with pytest.raises(InvalidInput):
        up.raise_fatal()
    up.close(timeout=30)
    assert written(root) == []


def test_no_secret_known_means_nothing_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setattr(scrubbing, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "absent"))
    monkeypatch.setattr(scrubbing, "_installed_values", ())
    local = tmp_path / "f.txt"
    local.write_text(SECRET)
    out, root = out_storage(tmp_path)
    out.upload_file(local, "f.txt")
    assert written(root) == ["f.txt"]


def test_identities_in_a_credentials_secret_are_no_secret_values(tmp_path, monkeypatch):
    """A tracker Secret's user name ("trainer", seen in e2e: it is also in every path of the image, e.g.
    training_args.bin's /home/trainer) is an identity, not a credential: a file holding it uploads; the
    password of the same Secret is still refused."""
    secret_dir = tmp_path / "mlflow"
    secret_dir.mkdir()
    (secret_dir / "MLFLOW_TRACKING_USERNAME").write_text("trainer")
    (secret_dir / "MLFLOW_TRACKING_PASSWORD").write_text("pa55word-planted")
    (secret_dir / "AZURE_STORAGE_ACCOUNT_NAME").write_text("teamaccount")
    monkeypatch.setenv("LFT_SECRET_DIRS", str(secret_dir))
    store, root = out_storage(tmp_path)
    args = tmp_path / "training_args.bin"
    args.write_bytes(b"output_dir=/home/trainer/work account=teamaccount")
    store.upload_file(args, "checkpoints/checkpoint-20/training_args.bin")
    assert written(root) == ["checkpoints/checkpoint-20/training_args.bin"]
    leak = tmp_path / "leak.txt"
    leak.write_text("pa55word-planted")
    with pytest.raises(InvalidInput):
        store.upload_file(leak, "leak.txt")
