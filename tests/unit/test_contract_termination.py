"""TerminationMessage.encode: always valid JSON within the kubelet's 4096-byte limit."""

from __future__ import annotations

import json

from lft_api.contract import TERMINATION_MESSAGE_MAX_BYTES, AdapterRef, FileDigest, Metrics, TerminationMessage


def files(n: int) -> list[FileDigest]:
    return [FileDigest(name=f"shard-{i:05d}-of-{n:05d}.safetensors", size=i, sha256="a" * 64) for i in range(n)]


def check(msg: TerminationMessage) -> dict:
    text = msg.encode()
    assert len(text.encode()) <= TERMINATION_MESSAGE_MAX_BYTES
    return json.loads(text)


def test_a_small_message_is_unchanged():
    msg = TerminationMessage(outcome="succeeded", reason="Completed", message="trained 40 steps", step=40)
    assert json.loads(msg.encode()) == msg.to_wire()


def test_a_long_non_ascii_message_is_cut_on_a_character_boundary():
    msg = TerminationMessage(outcome="error", reason="StorageError", message="données perdues ✗ 🚫 " * 600,
                             metrics=Metrics(loss=1.5))
    out = check(msg)
    assert out["message"].endswith(" [truncated]") and out["message"].startswith("données perdues ✗ 🚫")
    assert out["metrics"] == {"loss": 1.5} and out["reason"] == "StorageError"


def test_a_1000_character_uri_is_kept_whole_and_files_shrink_after_the_message():
    uri = "s3://bucket/" + "p" * 988
    msg = TerminationMessage(outcome="succeeded", reason="Completed", message="é" * 3000,
                             adapter=AdapterRef(uri=uri, files=files(40)), step=10)
    out = check(msg)
    assert out["adapter"]["uri"] == uri and len(uri) == 1000
    assert out["message"].endswith(" [truncated]") and len(out["message"]) < 40  # the message went first
    assert 0 < len(out["adapter"]["files"]) < 40  # then as many files as fit


def test_files_are_kept_when_cutting_the_message_is_enough():
    msg = TerminationMessage(outcome="succeeded", reason="Completed", message="x" * 5000,
                             adapter=AdapterRef(uri="s3://b/run/adapter", files=files(3)))
    out = check(msg)
    assert len(out["adapter"]["files"]) == 3 and 0 < len(out["message"]) < 5000


def test_a_uri_too_long_for_any_message_still_gives_valid_json():
    msg = TerminationMessage(outcome="succeeded", reason="Completed",
                             adapter=AdapterRef(uri="s3://b/" + "u" * 5000, files=files(2)))
    out = check(msg)
    assert out["outcome"] == "succeeded" and "adapter URI too long" in out["message"]
