"""Pre-flight: everything that can be checked before the model is loaded, so that a bad input ends
the run in seconds with a message that names the file, the row, the field and the reason.

Checks: the config file (pydantic), quantization vs. hardware, the output storage (credentials, bucket,
write access) and who owns its artifacts (ownership.py), the model's location, and every dataset row (or the first
LFT_PREFLIGHT_MAX_ROWS rows of a huge dataset; the summary says so). Row checks are pure functions.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lft_api.contract import RunIdentity
from lft_api.errors import format_validation_errors
from lft_api.spec import DatasetSpec, LoraSpec, ModelSpec, StorageSpec, TrainerConfig

from . import data, ownership, tracking
from .errors import InvalidInput
from .filesystems import split_uri
from .ownership import OwnershipDecision
from .storage import Storage

log = logging.getLogger("lft_trainer.preflight")

ROLES = ("system", "user", "assistant", "tool")
ENV_MAX_ROWS = "LFT_PREFLIGHT_MAX_ROWS"
DEFAULT_MAX_ROWS = 200_000
MAX_REPORTED_ERRORS = 5

ENV_REPORT_FILE = "LFT_PREFLIGHT_REPORT"  # set by the DDP launcher for its ranks
INVALID_CONFIG = "InvalidConfig"
MODEL_NOT_FOUND = "ModelNotFound"
UNSUPPORTED_HARDWARE = "UnsupportedHardware"


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------
def load_config(path: str | Path) -> TrainerConfig:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise InvalidInput(INVALID_CONFIG, f"config file {p} does not exist", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(INVALID_CONFIG, f"config file {p}: cannot read it ({exc})", file=str(p)) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(INVALID_CONFIG, f"config file {p}: invalid JSON: {exc.msg} at line {exc.lineno}",
                           file=str(p), row=exc.lineno) from None
    try:
        return TrainerConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        raise InvalidInput(INVALID_CONFIG, f"config file {p}: {format_validation_errors(exc, limit=5)}", file=str(p),
                           field=loc or None) from None


# ---------------------------------------------------------------------------------------------
# all checks, in order: cheap and likely failures first
# ---------------------------------------------------------------------------------------------
@dataclass
class PreflightReport:
    """What pre-flight checked and found: the dataset (rows validated and kept) and the output's owner."""

    source: data.DatasetSource
    dataset: DatasetReport
    output: OwnershipDecision | None  # None: not checked by this process (a rank: its launcher did)


def run_checks(config: TrainerConfig, work: Path, cuda: bool, identity: RunIdentity,
               check_output: bool) -> PreflightReport:
    """Everything before the model loads. A rank started by the launcher reuses the launcher's report:
    the dataset is read once per pod."""
    saved = os.environ.get(ENV_REPORT_FILE)
    if saved:
        with open(saved, "rb") as f:
            return pickle.load(f)  # written by this pod's launcher (save_report), in its work dir
    check_quantization(config.lora, cuda)
    if config.model.attn_implementation == "flash_attention_2" and not cuda:
        raise InvalidInput(UNSUPPORTED_HARDWARE, "model.attnImplementation flash_attention_2 needs a CUDA GPU",
                           field="model.attnImplementation")
    tracking.check(config)
    output = None
    if check_output:
        out = Storage(config.output.uri, config.storage)
        out.check_access(write=True)
        output = ownership.check_output(config, out, identity)
    check_model(config.model, config.storage)
    source = data.resolve(config.dataset, config.storage, work)
    return PreflightReport(source, check_dataset(source, config.dataset), output)


def save_report(report: PreflightReport, path: Path) -> dict[str, str]:
    """Keep the report for the launcher's ranks; returns the environment that points them to it."""
    with open(path, "wb") as f:
        pickle.dump(report, f)
    return {ENV_REPORT_FILE: str(path)}


# ---------------------------------------------------------------------------------------------
# hardware and model
# ---------------------------------------------------------------------------------------------
def check_quantization(lora: LoraSpec, cuda_available: bool) -> None:
    if lora.quantization == "none":
        return
    if not cuda_available:
        raise InvalidInput(
            UNSUPPORTED_HARDWARE,
            f"lora.quantization {lora.quantization!r} (QLoRA, bitsandbytes) needs a CUDA GPU, and this pod has none: "
            "set lora.quantization to none or request a GPU",
            field="lora.quantization",
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InvalidInput(UNSUPPORTED_HARDWARE, f"lora.quantization {lora.quantization!r} needs the bitsandbytes "
                           "package, which this trainer image lacks", field="lora.quantization") from None


def check_model(model: ModelSpec, storage_spec: StorageSpec | None) -> None:
    """A model given as a path/URI must exist and hold config.json. Hub ids are checked when loading."""
    if not data.looks_like_path(model.name):
        return
    protocol, path = split_uri(os.path.expanduser(model.name))
    if protocol == "file":
        p = Path(path)
        if not p.is_dir():
            raise InvalidInput(MODEL_NOT_FOUND, f"model {model.name}: directory does not exist", file=model.name,
                               field="model.name")
        if not (p / "config.json").is_file():
            raise InvalidInput(MODEL_NOT_FOUND, f"model {model.name}: no config.json in the directory "
                               "(not a Hugging Face model directory)", file=model.name, field="model.name")
        return
    remote = Storage(model.name, storage_spec)
    if not remote.exists("config.json"):
        raise InvalidInput(MODEL_NOT_FOUND, f"model {model.name}: no config.json under that URI", file=model.name,
                           field="model.name")


# ---------------------------------------------------------------------------------------------
# dataset rows (pure)
# ---------------------------------------------------------------------------------------------
def _type(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt-completion"
    if "text" in row:
        return "text"
    return None


def _check_string(row: dict, key: str) -> tuple[str, str] | None:
    if key not in row or row[key] is None:
        return key, f"{key} is missing"
    if not isinstance(row[key], str):
        return key, f"{key} is a {_type(row[key])}, expected a string"
    if not row[key].strip():
        return key, f"{key} is empty"
    return None


def check_row(row: Any, fmt: str) -> tuple[str | None, str] | None:
    """None for a good row, else (field, reason). The reason starts with the field's name."""
    if isinstance(row, data.BadRow):
        return None, row.reason
    if not isinstance(row, dict):
        return None, f"row is a {_type(row)}, expected a JSON object"
    if fmt == "text":
        return _check_string(row, "text")
    if fmt == "prompt-completion":
        return _check_string(row, "prompt") or _check_string(row, "completion")
    msgs = row.get("messages")
    if msgs is None:
        return "messages", "messages is missing (format messages needs a list of {role, content})"
    if not isinstance(msgs, list):
        return "messages", f"messages is a {_type(msgs)}, expected a list of {{role, content}}"
    if not msgs:
        return "messages", "messages is an empty list"
    for i, m in enumerate(msgs):
        f = f"messages[{i}]"
        if not isinstance(m, dict):
            return f, f"{f} is a {_type(m)}, expected an object with role and content"
        role = m.get("role")
        if role is None:
            return f"{f}.role", f"{f}.role is missing"
        if role not in ROLES:
            return f"{f}.role", f"{f}.role {role!r} is not one of {', '.join(ROLES)}"
        content = m.get("content")
        if role == "assistant" and m.get("tool_calls") and not content:
            continue  # a tool call turn has no text
        if content is None:
            return f"{f}.content", f"{f}.content is missing"
        if not isinstance(content, str):
            return f"{f}.content", f"{f}.content is a {_type(content)}, expected a string"
        if not content.strip():
            return f"{f}.content", f"{f}.content is empty"
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
        roles = ", ".join(str(m.get("role")) for m in msgs)
        return "messages", f"messages has no assistant turn (roles: {roles}): nothing to learn from"
    return None


def normalize_row(row: dict, fmt: str) -> dict:
    """Only the fields training uses (extra columns can break Arrow's schema or the chat template)."""
    if fmt == "messages":
        out = []
        for m in row["messages"]:
            keep = {"role": m["role"], "content": m.get("content") or ""}
            out.append(keep)
        return {"messages": out}
    return {k: row[k] for k in data.FORMAT_FIELDS[fmt]}


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------
@dataclass
class SplitRows:
    name: str
    rows: list[dict] = field(default_factory=list)  # normalized; complete unless sampled
    checked: int = 0
    sampled: bool = False  # True when only the first max_rows rows were checked


@dataclass
class DatasetReport:
    uri: str
    format: str
    splits: dict[str, SplitRows]
    max_rows: int

    def summary(self) -> dict:
        return {
            "uri": self.uri,
            "format": self.format,
            "rowsChecked": {k: s.checked for k, s in self.splits.items()},
            "sampled": any(s.sampled for s in self.splits.values()),
            "maxRowsChecked": self.max_rows,
        }


def max_rows_from_env() -> int:
    try:
        return max(1, int(os.environ.get(ENV_MAX_ROWS, DEFAULT_MAX_ROWS)))
    except ValueError:
        return DEFAULT_MAX_ROWS


def check_rows(rows: Iterable[tuple[str, int, Any]], fmt: str, max_rows: int, split: str) -> tuple[str, SplitRows]:
    """Validate rows (display, number, row); returns the format (detected when auto) and the normalized rows.

    Raises InvalidInput naming the first bad row (and how many more were seen, up to a few).
    """
    out = SplitRows(name=split)
    errors: list[tuple[str, int, str | None, str]] = []
    for display, n, row in rows:
        if out.checked >= max_rows:
            out.sampled = True
            break
        out.checked += 1
        if fmt == "auto":
            if isinstance(row, data.BadRow):
                errors.append((display, n, None, row.reason))
                break
            detected = detect_format(row)
            if detected is None:
                keys = ", ".join(sorted(row)) if isinstance(row, dict) else _type(row)
                raise InvalidInput(data.INVALID, f"{display} row {n}: cannot detect the dataset format from keys "
                                   f"[{keys}]: expected messages, prompt+completion or text (or set dataset.format)",
                                   file=display, row=n, field="dataset.format")
            fmt = detected
        problem = check_row(row, fmt)
        if problem is not None:
            errors.append((display, n, problem[0], problem[1]))
            if len(errors) > MAX_REPORTED_ERRORS:
                break
            continue
        if not errors:
            out.rows.append(normalize_row(row, fmt))
    if errors:
        display, n, fld, reason = errors[0]
        msg = f"{display} row {n}: {reason}"
        if len(errors) > 1:
            more = ", ".join(str(e[1]) for e in errors[1:MAX_REPORTED_ERRORS + 1])
            msg += f" (more bad rows: {more}{'...' if len(errors) > MAX_REPORTED_ERRORS else ''})"
        raise InvalidInput(data.INVALID, msg, file=display, row=n, field=fld)
    if out.checked == 0:
        raise InvalidInput(data.INVALID, f"dataset split {split!r} has no rows", field="dataset")
    return fmt, out


def check_dataset(source: data.DatasetSource, spec: DatasetSpec, max_rows: int | None = None) -> DatasetReport:
    max_rows = max_rows or max_rows_from_env()
    splits = [spec.train_split] + ([spec.eval_split] if spec.eval_split else [])
    fmt = spec.format
    result: dict[str, SplitRows] = {}
    for split in splits:
        if not source.is_hub and split not in source.files:
            raise InvalidInput(data.DATASET_NOT_FOUND, f"dataset {source.uri}: no file for split {split!r}",
                               file=source.uri, field="dataset.evalSplit" if split != spec.train_split else "dataset.trainSplit")
        fmt, result[split] = check_rows(data.iter_rows(source, split), fmt, max_rows, split)
    train = result[spec.train_split]
    if not spec.eval_split and spec.eval_fraction > 0 and not train.sampled and train.checked < 2:
        raise InvalidInput(data.INVALID, f"dataset {source.uri}: {train.checked} row(s) cannot be split into train "
                           "and eval (set dataset.evalFraction to 0 or add rows)", file=source.uri, field="dataset")
    return DatasetReport(uri=source.uri, format=fmt, splits=result, max_rows=max_rows)


# ---------------------------------------------------------------------------------------------
# lengths (needs the tokenizer, still before the model)
# ---------------------------------------------------------------------------------------------
def count_too_long(rows: list[dict], fmt: str, tokenizer, max_length: int,
                   limit: int = 20_000) -> tuple[int, int, float | None]:
    """(rows longer than max_length tokens, rows measured, their mean length in tokens after truncation)
    over the first `limit` rows: the long ones get truncated."""
    sample = rows[:limit]
    if not sample:
        return 0, 0, None
    if fmt == "messages":
        texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in sample]
    elif fmt == "prompt-completion":
        texts = [r["prompt"] + r["completion"] for r in sample]
    else:
        texts = [r["text"] for r in sample]
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    mean = sum(min(len(ids), max_length) for ids in enc) / len(enc)
    return sum(1 for ids in enc if len(ids) > max_length), len(sample), mean
