"""shards.py: the rows each rank trained on, from collated batches, and the summary of the ranks' shards."""

from __future__ import annotations

import torch

from lft_trainer.data.shards import ShardRecorder, batch_rows, row_fingerprint, summarize


def test_padded_batch_rows_are_the_unmasked_tokens():
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    assert batch_rows(inputs) == [[5, 6, 7], [8, 9]]
    # Left padding too: the mask, not the position, decides.
    left = {"input_ids": torch.tensor([[0, 5, 6]]), "attention_mask": torch.tensor([[0, 1, 1]])}
    assert batch_rows(left) == [[5, 6]]


def test_padding_free_rows_split_where_positions_restart():
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "position_ids": torch.tensor([[0, 1, 2, 0, 1]])}
    assert batch_rows(inputs) == [[5, 6, 7], [8, 9]]


def test_the_same_tokens_have_the_same_fingerprint_whatever_the_padding():
    a = batch_rows({"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])})
    b = batch_rows({"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.tensor([[1, 1]])})
    assert row_fingerprint(a[0]) == row_fingerprint(b[0]) != row_fingerprint([6, 5])


def batch(*rows):
    width = max(len(r) for r in rows)
    return {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}


def test_only_the_first_epoch_of_the_attempt_is_recorded_and_memory_is_bounded():
    rec = ShardRecorder(limit=3)
    rec.record(batch([1], [2]), epoch=0.2)
    rec.record(batch([3]), epoch=1.0)  # the next epoch: the same rows again, reshuffled
    assert len(rec.fingerprints) == 2 and rec.epoch == 0 and not rec.truncated
    resumed = ShardRecorder(limit=3)
    resumed.record(batch([1], [2]), epoch=1.5)  # an attempt resumed in epoch 1 records epoch 1
    resumed.record(batch([3], [4]), epoch=1.9)
    assert resumed.epoch == 1 and len(resumed.fingerprints) == 3 and resumed.truncated


def shard(*rows, epoch=0):
    rec = ShardRecorder()
    rec.record(batch(*rows), epoch=epoch)
    return rec.local()


def test_distinct_shards_share_only_the_padding_rows():
    report = summarize([shard([1], [2], [3]), shard([4], [5], [1])])  # rank 1 repeats row [1]: even batches
    assert report["distinctRows"] == 5 and report["rowsOnSeveralRanks"] == 1
    assert [r["rows"] for r in report["ranks"]] == [3, 3]
    assert report["ranks"][0]["digest"] != report["ranks"][1]["digest"]


def test_ranks_that_trained_on_the_same_rows_show_it():
    report = summarize([shard([1], [2]), shard([2], [1])])
    assert report["rowsOnSeveralRanks"] == 2 == report["distinctRows"]
    assert report["ranks"][0]["digest"] == report["ranks"][1]["digest"]  # the order does not matter


def test_one_process_reports_one_shard():
    report = summarize([shard([1], [2], [2])])
    assert report == {"epoch": 0, "distinctRows": 2, "rowsOnSeveralRanks": 0,
                      "ranks": [{"rank": 0, "rows": 3, "distinctRows": 2, "digest": report["ranks"][0]["digest"]}]}
