"""Which rows each rank trained on, so that a multi-process run can show its data shards were distinct.

Every rank fingerprints the rows of the batches it trains on during the attempt's first epoch (a hash of each
row's non-padding token ids: what trained, after rendering and truncation), keeping at most MAX_ROWS_PER_RANK.
At the end the fingerprints are gathered to rank 0, which reports per rank the rows seen and a digest, and how
many rows more than one rank trained on. The data loader pads the last batches of an epoch by repeating rows so
that every rank has as many batches (accelerate's even_batches), so a few shared rows are expected; all rows
shared means the ranks trained on the same data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

MAX_ROWS_PER_RANK = 100_000  # bounded memory and all_gather size (8-byte fingerprints)


def row_fingerprint(token_ids: list[int]) -> int:
    digest = hashlib.blake2b(b",".join(str(t).encode() for t in token_ids), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def batch_rows(inputs: dict[str, Any]) -> list[list[int]]:
    """The non-padding token ids of each row of a collated batch. Padding-free batches (one row of packed
    sequences, `position_ids` restarting at 0 per sequence, no attention mask) are split into their sequences."""
    ids = inputs.get("input_ids")
    if ids is None:
        return []
    ids = ids.tolist()
    mask = inputs.get("attention_mask")
    if mask is not None:
        mask = mask.tolist()
        return [[t for t, m in zip(row, row_mask, strict=True) if m] for row, row_mask in zip(ids, mask, strict=True)]
    positions = inputs.get("position_ids")
    if positions is None:
        return ids
    rows: list[list[int]] = []
    for row, pos in zip(ids, positions.tolist(), strict=True):
        for t, p in zip(row, pos, strict=True):
            if p == 0 or not rows:
                rows.append([])
            rows[-1].append(t)
    return rows


class ShardRecorder:
    """Fed each micro-batch this rank trains on (with the trainer's epoch); keeps the first epoch's rows."""

    def __init__(self, limit: int = MAX_ROWS_PER_RANK):
        self.limit = limit
        self.fingerprints: list[int] = []
        self.epoch: int | None = None
        self.truncated = False

    def record(self, inputs: dict[str, Any], epoch: float | None) -> None:
        whole = int(epoch or 0)
        if self.epoch is None:
            self.epoch = whole
        if whole != self.epoch or self.truncated:
            return
        for row in batch_rows(inputs):
            if len(self.fingerprints) >= self.limit:
                self.truncated = True
                return
            self.fingerprints.append(row_fingerprint(row))

    def local(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "fingerprints": self.fingerprints, "truncated": self.truncated}


def summarize(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's dataShards from every rank's local() (pure)."""
    owners: Counter[int] = Counter()
    ranks = []
    for rank, local in enumerate(per_rank):
        prints = local["fingerprints"]
        distinct = set(prints)
        owners.update(distinct)
        digest = hashlib.sha256(b"".join(p.to_bytes(8, "big") for p in sorted(distinct))).hexdigest()[:16]
        ranks.append({"rank": rank, "rows": len(prints), "distinctRows": len(distinct), "digest": digest,
                      **({"truncatedAt": len(prints)} if local.get("truncated") else {})})
    epochs = {local.get("epoch") for local in per_rank} - {None}
    return {"epoch": min(epochs) if epochs else None, "ranks": ranks, "distinctRows": len(owners),
            "rowsOnSeveralRanks": sum(1 for n in owners.values() if n > 1)}


def gather(recorder: ShardRecorder) -> list[dict[str, Any]]:
    """Every rank's local() on every rank (a collective: all ranks call it at the same point)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [recorder.local()]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, recorder.local())
    return gathered
