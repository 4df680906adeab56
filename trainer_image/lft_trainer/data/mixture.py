"""dataset.mixture: several sources, each read and checked on its own, then sampled by weight into one training set.

Pre-flight (run/preflight.py) checks each source as a single-source dataset (DatasetSpec.sources()) and names the
source of an error: `dataset.mixture[1] (s3://b/extra.jsonl): /data/extra.jsonl row 3: ...` (restated). Training
(trainset.build) tokenizes every source's rows together, each row carrying its source's index, and plan() then
chooses, from the indices alone, which rows train and which evaluate:

- eval: evalFraction of each source held out (at least one row, at most all but one, as for a single source), or
  with dataset.evalSplit every source's eval split (all of it);
- train: as many examples as the sources have rows left together (at most dataset.maxSamples), split among the
  sources in proportion to their weights (largest remainder: the counts add up exactly). A source whose share is
  larger than its rows is repeated: each row share // rows times, and share % rows rows once more, chosen at
  random; a smaller share is a random sample without repetition. The examples are then shuffled together.

Everything is drawn with numpy generators seeded by training.seed (and the source's index): every rank of every
node, and every resumed attempt, computes the same plan, so the distributed sampler shards the same order.

Not datasets.interleave_datasets: with stopping_strategy first_exhausted it stops when the first source runs out
(far fewer examples than the rows, whenever weights and sizes differ), with all_exhausted it goes on until every
source has been seen whole (the small-weight large source then decides the length, and the others repeat many
times); its proportions are also random draws, not the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lft_api.spec import MixtureSource

from ..errors import InvalidInput
from ..security.scrubbing import scrub
from . import sources as data

SOURCE_COLUMN = "source"  # the index of a row's source, in the rows of a mixture


def label(index: int, uri: str) -> str:
    """How messages name a source: dataset.mixture[1] (s3://bucket/extra.jsonl), credentials scrubbed."""
    return f"dataset.mixture[{index}] ({scrub(uri)})"


def source_field(fld: str | None, index: int, item: MixtureSource) -> str | None:
    """A field of the single-source spec a source was checked as, named where the user set it."""
    if fld is None:
        return None
    for name, wire in (("uri", "uri"), ("format", "format"), ("columns", "columns"), ("config", "config"),
                       ("revision", "revision")):
        prefix = f"dataset.{wire}"
        if (fld == prefix or fld.startswith(prefix + ".")) and (name == "uri" or getattr(item, name) is not None):
            return f"dataset.mixture[{index}].{wire}" + fld[len(prefix):]
    return fld


def restated(exc: InvalidInput, index: int, item: MixtureSource) -> InvalidInput:
    """The error of one source, naming the source (index and uri) first."""
    return InvalidInput(exc.reason, f"{label(index, item.uri)}: {exc.message}", file=exc.file, row=exc.row,
                        field=source_field(exc.field, index, item))


def open_rows(paths: list[Any]):
    """The checked rows of every source (data.RowWriter files, in the sources' order), one dataset with a
    SOURCE_COLUMN: the index of each row's source."""
    import datasets
    import numpy as np

    parts = [data.open_rows(p) for p in paths]
    rows = datasets.concatenate_datasets(parts)
    return rows.add_column(SOURCE_COLUMN, np.repeat(np.arange(len(parts)), [len(p) for p in parts]))


def shares(sizes: list[int], weights: list[float], total: int) -> list[int]:
    """total examples split in proportion to the weights, as whole numbers that add up to total (largest
    remainder; ties to the lower index). A source without rows gets none. Pure."""
    live = [w if n > 0 else 0.0 for n, w in zip(sizes, weights, strict=True)]
    whole = sum(live)
    if total <= 0 or whole <= 0:
        return [0] * len(sizes)
    exact = [total * w / whole for w in live]
    out = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def draw(rows, n: int, rng) -> Any:
    """n of `rows` (a numpy array of row indices): each row n // len times, and n % len rows once more, chosen at
    random without repetition."""
    import numpy as np

    repeat, extra = divmod(n, len(rows)) if len(rows) else (0, 0)
    picked = rng.choice(len(rows), size=extra, replace=False) if extra else np.array([], dtype=np.int64)
    return np.concatenate([np.tile(rows, repeat), rows[np.sort(picked)]]).astype(np.int64)


@dataclass
class Plan:
    train: Any  # numpy int64 indices into the tokenized train rows, in training order
    eval: Any  # indices held out for eval (evalFraction), or None (an eval split, or no hold-out)
    sources: list[dict[str, Any]]  # per source: rows, rowsHeldOut, rowsUsed, repeated


def plan(source_of_row, weights: list[float], seed: int, eval_fraction: float = 0.0,
         max_samples: int | None = None) -> Plan:
    """Which rows train (and which evaluate) from the source index of every train row (numpy array). Pure and
    deterministic: the same inputs give the same plan."""
    import numpy as np

    source_of_row = np.asarray(source_of_row)
    pools, held, facts = [], [], []
    for i in range(len(weights)):
        rows = np.flatnonzero(source_of_row == i)
        rows = rows[np.random.default_rng([seed, i]).permutation(len(rows))]
        n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction))) if eval_fraction > 0 and len(rows) >= 2 \
            else 0
        held.append(np.sort(rows[:n_eval]))
        pools.append(np.sort(rows[n_eval:]))
        facts.append({"rows": int(len(rows)), "rowsHeldOut": int(n_eval)})
    total = sum(len(p) for p in pools)
    if max_samples:
        total = min(total, max_samples)
    counts = shares([len(p) for p in pools], weights, total)
    chosen = []
    for i, (pool, n) in enumerate(zip(pools, counts, strict=True)):
        chosen.append(draw(pool, n, np.random.default_rng([seed, i, 1])))
        facts[i].update(rowsUsed=int(n), repeated=bool(n > len(pool)))
    train = np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)
    train = train[np.random.default_rng([seed, len(weights)]).permutation(len(train))]
    evald = np.concatenate(held) if eval_fraction > 0 else np.array([], dtype=np.int64)
    evald = evald[np.random.default_rng([seed, len(weights), 1]).permutation(len(evald))]  # every source in the first rows
    return Plan(train=train, eval=evald if len(evald) else None, sources=facts)
