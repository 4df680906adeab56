"""Checkpoint manifests, retention, discovery, download verification and the uploader (file:// storage)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from lft_api.contract import CHECKPOINT_MANIFEST, CheckpointRef, RunIdentity
from lft_trainer.storage.checkpoints import (
    CheckpointCorrupt,
    build_manifest,
    checkpoint_rel,
    download_checkpoint,
    download_latest_checkpoint,
    file_digests,
    find_latest_complete_checkpoint,
    identity_of,
    is_own,
    list_complete_checkpoints,
    manifest_files,
    manifest_from_digests,
    parse_step,
    prune_checkpoints,
    select_deletions,
    verify_dir,
)
from lft_trainer.storage.store import Storage
from lft_trainer.storage.uploader import CheckpointUploader


def fake_checkpoint(path, step: int, size: int = 4096):
    """A directory shaped like an HF Trainer checkpoint (content is random bytes plus the step)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(os.urandom(size) + str(step).encode())
    (path / "optimizer.pt").write_bytes(os.urandom(2 * size))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (path / "nested").mkdir(exist_ok=True)
    (path / "nested" / "rng_state.pth").write_bytes(os.urandom(64))
    return path


def upload_complete(st: Storage, tmp_path, step: int, identity: RunIdentity | None = None) -> None:
    """Upload a checkpoint the way the uploader does: files, then the manifest."""
    src = fake_checkpoint(tmp_path / f"src-{step}", step)
    st.upload_dir(src, checkpoint_rel(step))
    manifest = manifest_from_digests(step, file_digests(src), identity)
    st.put_json(f"{checkpoint_rel(step)}/{CHECKPOINT_MANIFEST}", manifest)


ME = RunIdentity(namespace="team", name="ft-b", uid="uid-b", spec_hash="h1")
OTHER = RunIdentity(namespace="team", name="ft-a", uid="uid-a", spec_hash="h1")


# -- pure logic ----------------------------------------------------------------------------
def test_parse_step():
    assert parse_step("checkpoint-120") == 120
    assert parse_step("out/checkpoints/checkpoint-7/") == 7
    assert parse_step("checkpoint-") is None
    assert parse_step("checkpoint-12a") is None
    assert parse_step("adapter") is None


def test_build_manifest_lists_files_with_size_and_sha(tmp_path):
    ck = fake_checkpoint(tmp_path / "checkpoint-5", 5)
    (ck / CHECKPOINT_MANIFEST).write_text("{}")  # an old manifest is not part of the content
    m = build_manifest(ck, 5)
    names = [f["name"] for f in m["files"]]
    assert names == ["adapter_model.safetensors", "nested/rng_state.pth", "optimizer.pt", "trainer_state.json"]
    assert m["step"] == 5 and m["totalBytes"] == sum(f["size"] for f in m["files"])
    assert all(len(f["sha256"]) == 64 for f in m["files"])
    verify_dir(ck, m)  # a fresh manifest verifies


def test_verify_dir_detects_corruption(tmp_path):
    ck = fake_checkpoint(tmp_path / "checkpoint-5", 5)
    m = build_manifest(ck, 5)
    # same size, different content: only the sha256 can tell
    data = bytearray((ck / "optimizer.pt").read_bytes())
    data[100] ^= 0xFF
    (ck / "optimizer.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointCorrupt, match="optimizer.pt: sha256 mismatch"):
        verify_dir(ck, m)
    (ck / "trainer_state.json").unlink()
    with pytest.raises(CheckpointCorrupt, match="trainer_state.json: missing"):
        verify_dir(ck, m)
    (ck / "nested" / "rng_state.pth").write_bytes(b"short")
    with pytest.raises(CheckpointCorrupt, match=r"rng_state.pth: size 5 != 64"):
        verify_dir(ck, m)


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        [],
        {"step": 3},
        {"step": 3, "files": []},
        {"step": "3", "files": [{"name": "a", "size": 1, "sha256": "x"}]},
        {"step": 3, "files": [{"name": "a", "size": 1}]},
        {"step": 3, "files": [{"name": "../etc/passwd", "size": 1, "sha256": "x"}]},
        {"step": 3, "files": [{"name": "a", "size": 1, "sha256": "x"}, {"name": "a", "size": 1, "sha256": "x"}]},
    ],
)
def test_malformed_manifests_are_rejected(manifest):
    assert manifest_files(manifest) is None


@pytest.mark.parametrize(
    "complete,incomplete,keep,protect,expected",
    [
        ([100, 200, 300], [], 2, 300, [100]),
        ([100, 200, 300], [], 1, 300, [100, 200]),
        ([100, 200], [], 5, 200, []),
        # the new checkpoint is kept even when newer ones exist (resumed from an older one)
        ([100, 200, 300], [], 1, 150, [100, 200]),
        # incomplete leftovers older than the newest complete one go; newer ones may still be uploading
        ([100, 300], [50, 200, 400], 2, 300, [50, 200]),
        ([], [100], 2, None, []),
    ],
)
def test_select_deletions(complete, incomplete, keep, protect, expected):
    assert select_deletions(complete, incomplete, keep, protect) == expected


# -- remote logic on file:// storage --------------------------------------------------------
def test_incomplete_checkpoint_without_manifest_is_ignored(tmp_path):
    st = Storage(str(tmp_path / "out"))
    assert find_latest_complete_checkpoint(st) is None  # nothing at all
    upload_complete(st, tmp_path, 10)
    # step 20: files uploaded, manifest never written (upload cut short)
    st.upload_dir(fake_checkpoint(tmp_path / "src-20", 20), checkpoint_rel(20))
    # step 30: a manifest that is not valid JSON
    st.upload_dir(fake_checkpoint(tmp_path / "src-30", 30), checkpoint_rel(30))
    (tmp_path / "out" / checkpoint_rel(30) / CHECKPOINT_MANIFEST).write_text('{"step": 30, "fil')
    # step 40: a manifest for another step (copied by hand?)
    upload_complete(st, tmp_path, 40)
    m = st.get_json(f"{checkpoint_rel(40)}/{CHECKPOINT_MANIFEST}")
    m["step"] = 41
    st.put_json(f"{checkpoint_rel(40)}/{CHECKPOINT_MANIFEST}", m)
    # not checkpoint dirs at all
    (tmp_path / "out" / "checkpoints" / "tmp-junk").mkdir()

    refs = list_complete_checkpoints(st)
    assert refs == [CheckpointRef(step=10, uri=st.uri("checkpoints/checkpoint-10"))]
    assert find_latest_complete_checkpoint(st).step == 10


def test_download_checkpoint_verifies_and_falls_back(tmp_path):
    st = Storage(str(tmp_path / "out"))
    for step in (10, 20):
        upload_complete(st, tmp_path, step)
    # corrupt step 20 remotely (same size, one flipped byte)
    victim = tmp_path / "out" / checkpoint_rel(20) / "optimizer.pt"
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.write_bytes(bytes(data))

    refs = list_complete_checkpoints(st)
    assert [r.step for r in refs] == [20, 10]
    with pytest.raises(CheckpointCorrupt, match="optimizer.pt: sha256 mismatch"):
        download_checkpoint(st, refs[0], tmp_path / "local")

    ref, path = download_latest_checkpoint(st, tmp_path / "local")
    assert ref.step == 10 and path == tmp_path / "local" / "checkpoint-10"
    assert json.loads((path / "trainer_state.json").read_text()) == {"global_step": 10}
    assert (path / "nested" / "rng_state.pth").read_bytes() == (tmp_path / "src-10" / "nested" / "rng_state.pth").read_bytes()


def test_download_checkpoint_with_missing_file(tmp_path):
    st = Storage(str(tmp_path / "out"))
    upload_complete(st, tmp_path, 10)
    st.delete(f"{checkpoint_rel(10)}/optimizer.pt")
    with pytest.raises(CheckpointCorrupt, match="optimizer.pt"):
        download_checkpoint(st, list_complete_checkpoints(st)[0], tmp_path / "local")
    assert download_latest_checkpoint(st, tmp_path / "local") is None


def test_prune_keeps_newest_k(tmp_path):
    st = Storage(str(tmp_path / "out"))
    for step in (10, 20, 30, 40):
        upload_complete(st, tmp_path, step)
    st.upload_dir(fake_checkpoint(tmp_path / "src-5", 5), checkpoint_rel(5))  # incomplete leftover
    assert prune_checkpoints(st, keep_last=2, protect=40) == [5, 10, 20]
    assert st.list_dirs("checkpoints") == ["checkpoint-30", "checkpoint-40"]


# -- uploader -------------------------------------------------------------------------------
def test_uploader_uploads_snapshot_even_if_source_is_deleted(tmp_path):
    st = Storage(str(tmp_path / "out"))
    seen: list[CheckpointRef] = []
    up = CheckpointUploader(st, keep_last=2, on_uploaded=seen.append)
    local = tmp_path / "run"
    expected = {}
    for step in (1, 2, 3):
        ck = fake_checkpoint(local / f"checkpoint-{step}", step)
        expected[step] = build_manifest(ck, step)
        up.submit(ck, step)
        # the HF Trainer rotates local checkpoints right away: the snapshot must survive that
        import shutil

        shutil.rmtree(ck)
    assert up.flush(timeout=30) is True
    up.close()
    assert [r.step for r in seen] == [1, 2, 3]
    assert seen[-1].uri == st.uri("checkpoints/checkpoint-3")
    # retention: newest 2 remain, each complete with the manifest of the original files
    assert st.list_dirs("checkpoints") == ["checkpoint-2", "checkpoint-3"]
    for step in (2, 3):
        m = st.get_json(f"{checkpoint_rel(step)}/{CHECKPOINT_MANIFEST}")
        assert m["files"] == expected[step]["files"]
        verify_dir(tmp_path / "out" / checkpoint_rel(step), m)
    assert not (local / ".lft-upload-staging").exists()  # staging cleaned up


def test_uploader_replaces_stale_copy_of_same_step(tmp_path):
    st = Storage(str(tmp_path / "out"))
    # a previous attempt left step 7 half-uploaded with an extra file
    st.upload_dir(fake_checkpoint(tmp_path / "old-7", 7), checkpoint_rel(7))
    (tmp_path / "out" / checkpoint_rel(7) / "stale.bin").write_bytes(b"x")
    up = CheckpointUploader(st, keep_last=3)
    up.submit(fake_checkpoint(tmp_path / "run" / "checkpoint-7", 7), 7)
    assert up.close(timeout=30)
    assert "stale.bin" not in st.list_files(checkpoint_rel(7))
    ref = find_latest_complete_checkpoint(st)
    download_checkpoint(st, ref, tmp_path / "dl")  # verifies


def test_same_step_twice_keeps_the_complete_copy(tmp_path):
    st = Storage(str(tmp_path / "out"))
    seen = []
    up = CheckpointUploader(st, keep_last=1, on_uploaded=seen.append)
    ck = fake_checkpoint(tmp_path / "run" / "checkpoint-9", 9)
    up.submit(ck, 9)
    assert up.flush(timeout=30)
    manifest_path = tmp_path / "out" / checkpoint_rel(9) / CHECKPOINT_MANIFEST
    first = manifest_path.stat().st_mtime_ns
    up.submit(ck, 9)  # saved again at the same step: same names and sizes
    assert up.flush(timeout=30)
    assert manifest_path.stat().st_mtime_ns == first  # not deleted and rewritten
    assert [r.step for r in seen] == [9, 9]
    # a different copy of the same step (other sizes) replaces the remote one
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 9, "more": "logs"}))
    up.submit(ck, 9)
    assert up.close(timeout=30)
    m = st.get_json(f"{checkpoint_rel(9)}/{CHECKPOINT_MANIFEST}")
    verify_dir(ck, m)


def test_submit_of_empty_dir_is_refused(tmp_path):
    up = CheckpointUploader(Storage(str(tmp_path / "out")), keep_last=1)
    (tmp_path / "run" / "checkpoint-1").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no files"):
        up.submit(tmp_path / "run" / "checkpoint-1", 1)
    assert up.close(timeout=5)


class GatedStorage(Storage):
    """file:// storage whose uploads wait for a gate: makes the worker's progress observable."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate = threading.Event()

    def upload_file(self, local, rel):
        assert self.gate.wait(30)
        return super().upload_file(local, rel)


def test_submit_blocks_when_queue_is_full(tmp_path):
    st = GatedStorage(str(tmp_path / "out"))
    up = CheckpointUploader(st, keep_last=5, max_pending=1)
    cks = [fake_checkpoint(tmp_path / "run" / f"checkpoint-{s}", s, size=64) for s in (1, 2, 3)]
    up.submit(cks[0], 1)  # taken by the worker (blocked at the gate)
    time.sleep(0.2)
    up.submit(cks[1], 2)  # waits in the queue
    third_done = threading.Event()
    t = threading.Thread(target=lambda: (up.submit(cks[2], 3), third_done.set()), daemon=True)
    t.start()
    assert not third_done.wait(0.5), "submit must block while one upload runs and one is queued"
    assert up.flush(timeout=0.2) is False  # not done yet
    st.gate.set()
    assert third_done.wait(10)
    assert up.flush(timeout=30) is True
    up.close()
    assert [r.step for r in up.uploaded] == [1, 2, 3]


class FailingStorage(Storage):
    def __init__(self, *a, fail_step: int, **kw):
        super().__init__(*a, **kw)
        self.fail_step = fail_step

    def upload_file(self, local, rel):
        if f"checkpoint-{self.fail_step}/" in rel:
            raise OSError("disk on fire")
        return super().upload_file(local, rel)


def test_failed_checkpoint_is_skipped_and_next_one_goes(tmp_path, caplog):
    st = FailingStorage(str(tmp_path / "out"), fail_step=2)
    seen = []
    up = CheckpointUploader(st, keep_last=5, on_uploaded=seen.append)
    for step in (1, 2, 3):
        up.submit(fake_checkpoint(tmp_path / "run" / f"checkpoint-{step}", step, size=64), step)
    assert up.flush(timeout=30) is False  # one failed
    assert up.flush(timeout=30) is True  # reported once
    up.close()
    assert [r.step for r in seen] == [1, 3] and up.failed == [2]
    assert [r.step for r in list_complete_checkpoints(st)] == [3, 1]  # 2 has no manifest
    assert "checkpoint 2: upload failed" in caplog.text


def test_on_uploaded_error_does_not_stop_uploader(tmp_path):
    st = Storage(str(tmp_path / "out"))

    def boom(ref):
        raise RuntimeError("status patch failed")

    up = CheckpointUploader(st, keep_last=5, on_uploaded=boom)
    for step in (1, 2):
        up.submit(fake_checkpoint(tmp_path / "run" / f"checkpoint-{step}", step, size=64), step)
    assert up.close(timeout=30)
    assert [r.step for r in up.uploaded] == [1, 2]


def test_rewritten_file_gets_no_manifest(tmp_path):
    st = GatedStorage(str(tmp_path / "out"))
    up = CheckpointUploader(st, keep_last=5)
    ck = fake_checkpoint(tmp_path / "run" / "checkpoint-4", 4, size=64)
    up.submit(ck, 4)
    # rewrite in place (same inode as the snapshot's hard link) while the upload is held
    with open(ck / "optimizer.pt", "r+b") as f:
        f.write(b"changed!" * 100)
    st.gate.set()
    assert up.close(timeout=30) is False
    assert find_latest_complete_checkpoint(st) is None


# -- run identity ---------------------------------------------------------------------------
def test_identity_in_manifest_round_trips_and_missing_or_broken_is_none():
    m = manifest_from_digests(3, [], ME)
    assert m["runIdentity"] == {"namespace": "team", "name": "ft-b", "uid": "uid-b", "specHash": "h1"}
    assert identity_of(m) == ME
    assert identity_of(manifest_from_digests(3, [])) is None  # an old manifest: no identity
    assert identity_of({"runIdentity": {"uid": "x"}}) is None  # no specHash: malformed
    assert identity_of(None) is None


def test_is_own_by_uid_and_without_uids_by_settings():
    assert is_own(ME, ME) and not is_own(OTHER, ME) and not is_own(None, ME)
    local = RunIdentity(spec_hash="h1")
    assert is_own(RunIdentity(spec_hash="h1"), local) and not is_own(RunIdentity(spec_hash="h2"), local)
    assert not is_own(ME, local)  # a Kubernetes run's checkpoint is not a local run's


def test_latest_checkpoint_of_an_owner_skips_foreign_and_anonymous_ones(tmp_path):
    st = Storage(str(tmp_path / "out"))
    upload_complete(st, tmp_path, 10, ME)
    upload_complete(st, tmp_path, 20, OTHER)
    upload_complete(st, tmp_path, 30)  # no identity: foreign
    assert [r.step for r in list_complete_checkpoints(st, ME)] == [10]
    ref, _ = download_latest_checkpoint(st, tmp_path / "local", owner=ME)
    assert ref.step == 10
    assert download_latest_checkpoint(st, tmp_path / "local2", owner=RunIdentity(spec_hash="zz")) is None


def test_retention_deletes_only_the_owners_checkpoints(tmp_path):
    st = Storage(str(tmp_path / "out"))
    for step, who in ((5, OTHER), (10, ME), (15, None), (20, ME), (30, ME)):
        upload_complete(st, tmp_path, step, who)
    assert prune_checkpoints(st, keep_last=1, protect=30, owner=ME) == [10, 20]
    assert st.list_dirs("checkpoints") == ["checkpoint-15", "checkpoint-30", "checkpoint-5"]


def test_uploader_records_identity_and_reports_failures(tmp_path):
    st = FailingStorage(str(tmp_path / "out"), fail_step=2)
    failed: list[tuple[int, str]] = []
    up = CheckpointUploader(st, keep_last=5, identity=ME, on_failed=lambda step, why: failed.append((step, why)))
    for step in (1, 2):
        up.submit(fake_checkpoint(tmp_path / "run" / f"checkpoint-{step}", step, size=64), step)
    up.close(timeout=30)
    assert identity_of(st.get_json(f"{checkpoint_rel(1)}/{CHECKPOINT_MANIFEST}")) == ME
    assert failed and failed[0][0] == 2 and "disk on fire" in failed[0][1]
