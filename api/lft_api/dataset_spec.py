"""DatasetSpec: where the rows come from and how they are read (spec.dataset): one source, or a mixture of several
sampled by weight, with the column mapping and the eval split.

Part of spec.py's models (re-exported there), kept apart for size. Imports only pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from .spec_base import CelRules, SpecModel


class ColumnsSpec(SpecModel):
    """Where a row's fields are, when the dataset names them differently (read before the format is detected)."""

    preset: Optional[Literal["sharegpt", "alpaca"]] = Field(
        default=None,
        description=(
            "A documented mapping, completed by the fields set next to it. sharegpt: messages from conversations, "
            "roleKey from, contentKey value, roles human->user, gpt->assistant (and system, tool). alpaca: "
            "prompt from [instruction, input] (joined by a blank line, empty parts left out), completion from output."
        ),
    )
    messages: Optional[str] = Field(default=None, min_length=1, description="The column holding the message list.")
    prompt: Optional[list[str]] = Field(
        default=None, min_length=1,
        description="The column(s) holding the prompt; several string columns are joined by a blank line.",
    )
    completion: Optional[str] = Field(default=None, min_length=1, description="The column holding the completion.")
    text: Optional[str] = Field(default=None, min_length=1, description="The column holding the text.")
    tools: Optional[str] = Field(default=None, min_length=1, description="The column holding the tool schemas.")
    role_key: Optional[str] = Field(default=None, min_length=1, description="The message key of the role (role).")
    content_key: Optional[str] = Field(
        default=None, min_length=1, description="The message key of the content (content)."
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="Role names to rename, e.g. {human: user, gpt: assistant}; other roles are kept as they are.",
    )


DatasetFormat = Literal["auto", "messages", "prompt-completion", "text"]
MAX_MIXTURE_SOURCES = 16
# What a dataset URI is, for dataset.uri and every dataset.mixture[].uri alike (one definition: a check added here
# applies to both).
DatasetUri = Annotated[str, Field(min_length=1)]
DATASET_URI_DOC = (
    "JSON Lines / JSON / Parquet file or directory as a URI or path (s3://bucket/train.jsonl, "
    "file:///data/train.jsonl, /data/train.parquet), or a Hugging Face dataset id."
)


class MixtureSource(SpecModel):
    """One source of dataset.mixture: read, column-mapped and checked on its own, then sampled by its weight."""

    uri: DatasetUri = Field(description=DATASET_URI_DOC)
    weight: float = Field(
        gt=0, allow_inf_nan=False,
        description=(
            "Relative weight: this source's share of the training examples is weight / (sum of the weights), "
            "e.g. 3 and 1 give 75% and 25%."
        ),
    )
    format: Optional[DatasetFormat] = Field(default=None, description="Row format of this source. Unset: dataset.format.")
    columns: Optional[ColumnsSpec] = Field(
        default=None, description="Column and key names of this source's rows. Unset: dataset.columns."
    )
    config: Optional[str] = Field(
        default=None, min_length=1, description="Configuration of a Hugging Face dataset id. Unset: dataset.config."
    )
    revision: Optional[str] = Field(
        default=None, min_length=1, description="Revision of a Hugging Face dataset id. Unset: dataset.revision."
    )


_DATASET_RULES: CelRules = [
    {"rule": "has(self.uri) != has(self.mixture)",
     "message": "dataset.uri and dataset.mixture are exclusive: set exactly one", "fieldPath": ".mixture"},
]


class DatasetSpec(SpecModel):
    """The chat-instruction dataset: one source (uri) or several sampled by weight (mixture)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _DATASET_RULES})

    uri: Optional[DatasetUri] = Field(default=None, description=DATASET_URI_DOC + " Exclusive with mixture.")
    mixture: Optional[list[MixtureSource]] = Field(
        default=None, min_length=1, max_length=MAX_MIXTURE_SOURCES,
        description=(
            "Several sources instead of uri (1 to 16): {uri, weight, format?, columns?, config?, revision?}; what "
            "a source leaves unset is the dataset's own (format, columns, config, revision; the splits, "
            "evalFraction and maxSamples are always the dataset's). Pre-flight reads and checks every source on "
            "its own (an error names dataset.mixture[i], from 0, its uri and the row). evalFraction is held out of "
            "each source (evalSplit: each source's eval split), then the training set is drawn from what is left: "
            "as many examples as the sources have rows together (at most maxSamples), each source's share "
            "weight / (sum of the weights) of them, a source with fewer rows than its share repeated (every row as "
            "often, give or take one), one with more sampled without repetition, and the whole shuffled, all "
            "with training.seed: every process, node and resumed attempt trains on the same examples in the same "
            "order. The summary records per source its rows, rows held out, examples used and weight."
        ),
    )
    format: DatasetFormat = Field(
        default="auto",
        description=(
            "Row format. messages: {messages: [{role, content, tool_calls?}, ...], tools?}; prompt-completion: "
            "{prompt, completion} as strings or as message lists; text: {text}. auto: detected per row from its keys."
        ),
    )
    columns: Optional[ColumnsSpec] = Field(
        default=None, description="Column and key names when the rows use other names (ShareGPT, Alpaca...)."
    )
    config: Optional[str] = Field(
        default=None, min_length=1, description="Configuration (subset) name of a Hugging Face dataset id."
    )
    revision: Optional[str] = Field(
        default=None, min_length=1, description="Git revision (branch, tag or commit) of a Hugging Face dataset id."
    )
    train_split: str = Field(default="train", description="Split used for training.")
    eval_split: Optional[str] = Field(
        default=None, description="Split used for evaluation; when unset, evalFraction of the train split is held out."
    )
    eval_fraction: float = Field(
        default=0.05, ge=0.0, lt=0.5, description="Fraction of the train split held out for evaluation (0 disables)."
    )
    max_samples: Optional[int] = Field(
        default=None, ge=1,
        description="Use at most this many training rows (after shuffling with the seed); with mixture: examples.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        if self.uri is None and self.mixture is None:
            raise ValueError("dataset.uri or dataset.mixture is required: set exactly one")
        if self.uri is not None and self.mixture is not None:
            raise ValueError("dataset.uri and dataset.mixture are exclusive: set exactly one")
        return self

    def sources(self) -> list["DatasetSpec"]:
        """Each source as a single-source spec: this one (uri), or each mixture item completed by the dataset's
        format, columns, config and revision, with the dataset's splits and evalFraction (no maxSamples: it
        bounds the mixture)."""
        if self.mixture is None:
            return [self]
        return [self.model_copy(update={
            "uri": s.uri, "mixture": None, "max_samples": None,
            "format": s.format or self.format, "columns": s.columns if s.columns is not None else self.columns,
            "config": s.config or self.config, "revision": s.revision or self.revision,
        }) for s in self.mixture]


# lora.init values that move part of the base weights into the adapter: the published adapter is converted.
