"""The training and eval datasets as TRL gets them: the rows pre-flight checked (data.RowWriter files), in file
order, rendered and tokenized by rendering.encode and cut to training.maxLength; then split and sampled
(data.split_datasets). A row the template cannot render is named by its file and row number, the first one first.

Tokenizing is a datasets map written to the work directory (bounded memory for any size), one file per rank.
What happened to the rows is counted for the summary: rows per format, rows truncated, rows dropped (a row
whose trained tokens all lie past maxLength) and the token lengths (min, median, p95, max) before the cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import TrainerConfig

from ..errors import InvalidInput
from . import formats, mixture, rendering
from . import sources as data


@dataclass
class TokenStats:
    rows: int = 0
    truncated: int = 0  # longer than maxLength: the end was cut off
    dropped: int = 0  # no trained token left within maxLength: left out (TRL would drop them too)
    lengths: dict[str, float] = field(default_factory=dict)  # min, median, p95, max, mean before truncation

    def to_wire(self, max_length: int) -> dict[str, Any]:
        return {"rows": self.rows, "tokens": self.lengths,
                "truncated": {"rows": self.truncated, "reason": f"longer than training.maxLength={max_length} "
                              "tokens: the end was cut off"},
                "dropped": {"rows": self.dropped, "reason": "no trained token within training.maxLength "
                            "(e.g. the prompt alone fills it)"}}


def length_stats(lengths) -> dict[str, float]:
    """min, median, p95, max and mean of token lengths (numpy array). Pure."""
    import numpy as np

    if len(lengths) == 0:
        return {}
    a = np.sort(np.asarray(lengths))

    def pick(q: float) -> int:  # nearest rank
        return int(a[min(len(a) - 1, int(np.ceil(q * len(a))) - 1)])

    return {"min": int(a[0]), "median": pick(0.5), "p95": pick(0.95), "max": int(a[-1]),
            "mean": round(float(a.mean()), 2)}


def _encoder(tokenizer, template, assistant_only: bool, max_length: int, sources: list[tuple[str, formats.ColumnMapping]]):
    """sources: (message prefix, column mapping) per source; a row's source is its SOURCE_COLUMN (else the first)."""
    def encode_batch(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "keep": []}
        of_source = batch.get(mixture.SOURCE_COLUMN) or [0] * len(batch["row"])
        for row_json, file, line, src in zip(batch["row"], batch["file"], batch["line"], of_source, strict=True):
            try:
                ids, labels = rendering.encode(json.loads(row_json), tokenizer, template, assistant_only)
            except formats.RowError as exc:
                prefix, mapping = sources[src]
                fld = formats.user_field(exc.field, mapping)
                reason = exc.reason.replace(exc.field, fld) if exc.field and fld else exc.reason
                raise InvalidInput(Reason.INVALID_DATASET, f"{prefix}{file} row {line}: {reason}", file=file, row=line,
                                   field=fld) from None
            out["length"].append(len(ids))
            out["input_ids"].append(ids[:max_length])
            out["labels"].append(labels[:max_length])
            out["keep"].append(any(x != rendering.IGNORE for x in labels[:max_length]))
        return out

    return encode_batch


def source_names(config: TrainerConfig) -> list[tuple[str, formats.ColumnMapping]]:
    """(message prefix, column mapping) of each source: the dataset's, or each of dataset.mixture's."""
    spec = config.dataset
    if spec.mixture is None:
        return [("", formats.mapping_of(spec.columns))]
    return [(f"{mixture.label(i, item.uri)}: ", formats.mapping_of(one.columns))
            for i, (item, one) in enumerate(zip(spec.mixture, spec.sources(), strict=True))]


def tokenize(rows, tokenizer, template, config: TrainerConfig, cache: Path) -> tuple[Any, TokenStats]:
    """(dataset of input_ids and labels, what happened to the rows)."""
    t = config.training
    fn = _encoder(tokenizer, template, t.assistant_only_loss, t.max_length, source_names(config))
    cache.parent.mkdir(parents=True, exist_ok=True)
    out = rows.map(fn, batched=True, batch_size=256, cache_file_name=str(cache), load_from_cache_file=False)
    lengths = out.data.column("length").to_numpy()
    keep = out.data.column("keep").to_numpy()
    stats = TokenStats(rows=len(out), truncated=int((lengths > t.max_length).sum()), dropped=int((~keep).sum()),
                       lengths=length_stats(lengths))
    if stats.dropped == stats.rows:
        raise InvalidInput(Reason.INVALID_DATASET, f"no row has a trained token within training.maxLength={t.max_length} "
                           f"(token lengths {stats.lengths}): raise training.maxLength", field="training.maxLength")
    if stats.dropped:
        out = out.filter(lambda b: b, input_columns=["keep"], batched=False,
                         cache_file_name=str(cache.with_suffix(".kept.arrow")), load_from_cache_file=False)
    return out.remove_columns(["length", "keep"]), stats


MODEL_COLUMNS = ["input_ids", "labels"]


@dataclass
class TrainData:
    train_rows: Any  # after the eval split and maxSamples: row (normalized JSON), file, line, input_ids, labels
    eval_rows: Any
    template: rendering.ChatTemplate | None
    stats: dict[str, TokenStats]  # per split file, every row (before the evalFraction hold-out and maxSamples)
    mixture: list[dict[str, Any]] | None = None  # dataset.mixture: per source, what pre-flight found and what trains

    @property
    def train(self):
        return self.train_rows.select_columns(MODEL_COLUMNS)

    @property
    def eval(self):
        return None if self.eval_rows is None else self.eval_rows.select_columns(MODEL_COLUMNS)

    def summary(self, max_length: int) -> dict[str, Any]:
        out: dict[str, Any] = {k: v.to_wire(max_length) for k, v in self.stats.items()}
        if self.template is not None:
            out["chatTemplate"] = self.template.describe()
        if self.mixture is not None:
            out["mixture"] = self.mixture
        return out

    @property
    def mean_tokens(self) -> float | None:
        return self.stats["train"].lengths.get("mean")


def build(config: TrainerConfig, report, tokenizer, work: Path, rank: int = 0) -> TrainData:
    """report: preflight.DatasetReport. Chooses the chat template (refusing as rendering.choose_template says)."""
    template = rendering.choose_template(config, tokenizer, report.has_chat_rows, work)
    folder = work / f"tokens-rank{rank}"
    spec = config.dataset
    tokenized, stats = {}, {}
    for i, (name, paths) in enumerate(report.row_files().items()):
        rows = data.open_rows(paths[0]) if spec.mixture is None else mixture.open_rows(paths)
        tokenized[name], stats[name] = tokenize(rows, tokenizer, template, config, folder / f"split-{i}.arrow")
    if spec.mixture is not None:
        return _mixed(config, report, tokenized, template, stats)
    train, evald = data.split_datasets(spec, config.training.seed, tokenized[spec.train_split],
                                       tokenized.get(spec.eval_split) if spec.eval_split else None)
    return TrainData(train, evald, template, stats)


def _mixed(config: TrainerConfig, report, tokenized: dict[str, Any], template, stats: dict[str, TokenStats]) -> TrainData:
    """The training set drawn from the sources by weight, the eval rows held out of each (data.mixture.plan)."""
    spec, mix = config.dataset, config.dataset.mixture or []
    rows = tokenized[spec.train_split]
    of_source = rows.with_format("numpy")[mixture.SOURCE_COLUMN]
    plan = mixture.plan(of_source, [s.weight for s in mix], config.training.seed,
                        0.0 if spec.eval_split else spec.eval_fraction, spec.max_samples)
    for i, facts in enumerate(plan.sources):
        if facts["rows"] == 0:
            raise InvalidInput(Reason.INVALID_DATASET, f"{mixture.label(i, mix[i].uri)}: no row has a trained token "
                               f"within training.maxLength={config.training.max_length}: raise training.maxLength",
                               field="training.maxLength")
    evald = tokenized.get(spec.eval_split) if spec.eval_split else None
    if plan.eval is not None:
        evald = rows.select(plan.eval)
    checked = report.summary()["mixture"]
    return TrainData(rows.select(plan.train), evald, template, stats,
                     [{**checked[i], **facts} for i, facts in enumerate(plan.sources)])
