"""Pre-flight: everything that can be checked before the model is loaded, so that a bad input ends
the run in seconds with a message that names the file, the row, the field and the reason.

Checks: the config file (pydantic), quantization and the optimizer vs. hardware, the output storage (credentials, bucket,
write access) and who owns its artifacts (ownership.py), the model's location, and every dataset row, whatever
the size (formats.py: pure row checks). The rows that pass are written to disk and are what training reads;
the chat template's checks follow once the tokenizer is loaded (rendering.py), still before the model.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import RunIdentity
from lft_api.errors import format_validation_errors
from lft_api.spec import BNB_OPTIMIZERS, DatasetSpec, LoraSpec, ModelSpec, StorageSpec, TrainerConfig, TrainingSpec

from ..data import formats, mixture
from ..data import sources as data
from ..errors import ConfigNotThisRun, InvalidInput
from ..model import adapters, extra_settings
from ..model.loading import lora_kwargs
from ..reporting import tracking
from ..security.scrubbing import scrub
from ..settings import ENV_REPORT_FILE, Settings
from ..storage import ownership
from ..storage.filesystems import split_uri
from ..storage.ownership import OwnershipDecision
from ..storage.store import Storage

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 5



# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------
def load_config(path: str | Path, settings: Settings | None = None) -> TrainerConfig:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise InvalidInput(Reason.INVALID_CONFIG, f"config file {p} does not exist", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(Reason.INVALID_CONFIG, f"config file {p}: cannot read it ({exc})", file=str(p)) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(Reason.INVALID_CONFIG, f"config file {p}: invalid JSON: {exc.msg} at line {exc.lineno}",
                           file=str(p), row=exc.lineno) from None
    check_config_owner(p, (settings or Settings.from_environ()).uid)
    try:
        return TrainerConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        raise InvalidInput(Reason.INVALID_CONFIG, f"config file {p}: {format_validation_errors(exc, limit=5)}", file=str(p),
                           field=loc or None) from None


def check_config_owner(config_path: Path, mine: str | None) -> None:
    """The config's ConfigMap names the run it was written for (contract.CONFIG_OWNER_FILE); this pod's run is
    LFT_UID. Either missing (a config given by hand, an older operator): nothing to compare."""
    try:
        written_for = (config_path.parent / contract.CONFIG_OWNER_FILE).read_text().strip()
    except OSError:
        return
    if written_for and mine and written_for != mine:
        raise ConfigNotThisRun(
            f"the mounted config {config_path} was written for LoRAFineTune UID {written_for}, this pod runs UID "
            f"{mine}: a ConfigMap of an earlier LoRAFineTune with this name is still there; not training on it")


# ---------------------------------------------------------------------------------------------
# all checks, in order: cheap and likely failures first
# ---------------------------------------------------------------------------------------------
@dataclass
class PreflightReport:
    """What pre-flight checked and found: the dataset (rows validated and kept) and the output's owner."""

    sources: list[data.DatasetSource]  # dataset.uri's, or each of dataset.mixture's
    dataset: DatasetReport
    output: OwnershipDecision | None  # None: not checked by this process (a rank: its launcher did)


def run_checks(config: TrainerConfig, work: Path, cuda: bool, identity: RunIdentity,
               check_output: bool, settings: Settings | None = None) -> PreflightReport:
    """Everything before the model loads. A rank started by the launcher reuses the launcher's report:
    the dataset is read once per pod."""
    saved = (settings or Settings.from_environ()).preflight_report
    if saved:
        with open(saved, "rb") as f:
            return pickle.load(f)  # written by this pod's launcher (save_report), in its work dir
    check_quantization(config.lora, cuda)
    check_optimizer(config.training, cuda)
    check_extra(config)
    if config.model.attn_implementation == "flash_attention_2" and not cuda:
        raise InvalidInput(Reason.UNSUPPORTED_HARDWARE, "model.attnImplementation flash_attention_2 needs a CUDA GPU",
                           field="model.attnImplementation")
    tracking.check(config)
    output = None
    if check_output:
        out = Storage(config.output.uri, config.storage)
        out.check_access(write=True)
        output = ownership.check_output(config, out, identity)
    check_model(config.model, config.storage)
    adapters.check_source(config)  # model.adapter: a LoRA adapter whose shape agrees with the lora settings
    return PreflightReport(*check_sources(config.dataset, config.storage, work), output)


def save_report(report: PreflightReport, path: Path) -> dict[str, str]:
    """Keep the report for the launcher's ranks; returns the environment that points them to it."""
    with open(path, "wb") as f:
        pickle.dump(report, f)
    return {ENV_REPORT_FILE: str(path)}


# ---------------------------------------------------------------------------------------------
# hardware and model
# ---------------------------------------------------------------------------------------------
def check_quantization(lora: LoraSpec, cuda_available: bool) -> None:
    if lora.quantization != "none":
        _needs_bitsandbytes("lora.quantization", lora.quantization, "QLoRA, bitsandbytes",
                            "set lora.quantization to none or request a GPU", cuda_available)


def check_optimizer(training: TrainingSpec, cuda_available: bool) -> None:
    if training.optimizer in BNB_OPTIMIZERS:
        _needs_bitsandbytes("training.optimizer", training.optimizer, "bitsandbytes",
                            "request a GPU or choose another optimizer (adamw_torch...)", cuda_available)


def _needs_bitsandbytes(field: str, value: str, what: str, remedy: str, cuda_available: bool) -> None:
    """A setting that runs on bitsandbytes: a CUDA GPU and the package, else UnsupportedHardware naming the field."""
    if not cuda_available:
        raise InvalidInput(Reason.UNSUPPORTED_HARDWARE,
                           f"{field} {value!r} ({what}) needs a CUDA GPU, and this pod has none: {remedy}", field=field)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InvalidInput(Reason.UNSUPPORTED_HARDWARE,
                           f"{field} {value!r} needs the bitsandbytes package, which this trainer image lacks",
                           field=field) from None


def check_extra(config: TrainerConfig) -> None:
    """training.extra: every key a field of TRL's SFTConfig or PEFT's LoraConfig, every value of that field's type
    (extra_settings.route), and the LoraConfig built with them. SFTConfig is built by make_trainer (building it
    sets up the CUDA device, which the launcher of a multi-process pod must not hold); a value it refuses ends
    the run there, before training, with the same reason (InvalidExtraSetting)."""
    if not config.training.extra:
        return
    from peft import LoraConfig

    routed = extra_settings.route(config.training.extra)
    if config.model.adapter is not None and routed.lora:  # the adapter continues with its own LoraConfig
        key = sorted(routed.lora)[0]
        raise InvalidInput(Reason.INVALID_EXTRA_SETTING,
                           f"training.extra.{key}: a LoraConfig setting, but model.adapter continues an adapter "
                           "with its own LoraConfig", field=f"training.extra.{key}")
    extra_settings.build(LoraConfig, lora_kwargs(config), routed.lora)


def check_model(model: ModelSpec, storage_spec: StorageSpec | None) -> None:
    """A model given as a path/URI must exist and hold config.json. Hub ids are checked when loading."""
    if not data.looks_like_path(model.name):
        return
    protocol, path = split_uri(os.path.expanduser(model.name))
    if protocol == "file":
        p = Path(path)
        if not p.is_dir():
            raise InvalidInput(Reason.MODEL_NOT_FOUND, f"model {model.name}: directory does not exist", file=model.name,
                               field="model.name")
        if not (p / "config.json").is_file():
            raise InvalidInput(Reason.MODEL_NOT_FOUND, f"model {model.name}: no config.json in the directory "
                               "(not a Hugging Face model directory)", file=model.name, field="model.name")
        return
    remote = Storage(model.name, storage_spec)
    if not remote.exists("config.json"):
        raise InvalidInput(Reason.MODEL_NOT_FOUND, f"model {model.name}: no config.json under that URI", file=model.name,
                           field="model.name")


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------
@dataclass
class SplitRows:
    name: str
    path: Path  # the normalized rows (data.RowWriter), read by training
    checked: int = 0
    formats: dict[str, int] = field(default_factory=dict)  # rows per format


@dataclass
class DatasetReport:
    uri: str | None  # None: a mixture
    splits: dict[str, SplitRows]
    files: list[dict[str, Any]] = field(default_factory=list)  # sha256 and size of each file
    parts: list[DatasetReport] = field(default_factory=list)  # dataset.mixture: each source's, in order
    weights: list[float] = field(default_factory=list)

    @property
    def formats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in [*self.splits.values(), *(s for p in self.parts for s in p.splits.values())]:
            for k, v in s.formats.items():
                out[k] = out.get(k, 0) + v
        return out

    def row_files(self) -> dict[str, list[Path]]:
        """The checked rows of each split: one file, or one per source of a mixture (in order)."""
        if not self.parts:
            return {k: [s.path] for k, s in self.splits.items()}
        return {k: [p.splits[k].path for p in self.parts] for k in self.parts[0].splits}

    @property
    def has_chat_rows(self) -> bool:
        return bool(self.formats.get("messages") or self.formats.get("prompt-completion:conversational"))

    def summary(self) -> dict:
        if self.parts:
            parts, splits = [p.summary() for p in self.parts], list(self.parts[0].splits)
            return {
                "rowsChecked": {k: sum(s["rowsChecked"][k] for s in parts) for k in splits},
                "rowsPerFormat": {k: dict(sum((Counter(s["rowsPerFormat"][k]) for s in parts), Counter()))
                                  for k in splits},
                "files": [f for s in parts for f in s["files"]],
                "sampled": False,
                "mixture": [{"index": i, "uri": scrub(s["uri"]), "weight": w, "rowsChecked": s["rowsChecked"],
                             "rowsPerFormat": s["rowsPerFormat"]}
                            for i, (s, w) in enumerate(zip(parts, self.weights, strict=True))],
            }
        return {
            "uri": self.uri,
            "rowsChecked": {k: s.checked for k, s in self.splits.items()},
            "rowsPerFormat": {k: dict(s.formats) for k, s in self.splits.items()},
            "files": self.files,
            "sampled": False,  # every row is checked and the checked rows are the ones trained
        }


def _format_name(fmt: str, norm: dict) -> str:
    if fmt == "prompt-completion":
        return f"{fmt}:{'conversational' if formats.is_conversational(norm) else 'standard'}"
    return fmt


def _error_message(errors: list[tuple[str, int, str | None, str]]) -> tuple[str, str, int, str | None]:
    display, n, fld, reason = errors[0]
    msg = f"{display} row {n}: {reason}"
    if len(errors) > 1:
        more = ", ".join(str(e[1]) for e in errors[1:MAX_REPORTED_ERRORS + 1])
        msg += f" (more bad rows: {more}{'...' if len(errors) > MAX_REPORTED_ERRORS else ''})"
    return msg, display, n, fld


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # the rows written for training


def check_rows(rows: Iterable[tuple[str, int, Any]], fmt: str, split: str, out: Path,
               mapping: formats.ColumnMapping = formats.PLAIN) -> SplitRows:
    """Check and normalize every row (display, number, row), writing the good ones to `out`; auto: the format of
    each row from its keys. Raises InvalidInput naming the first bad row (and how many more were seen, up to a few).
    """
    result = SplitRows(name=split, path=out)
    writer = data.RowWriter(out)
    errors: list[tuple[str, int, str | None, str]] = []
    try:
        for display, n, row in rows:
            result.checked += 1
            if isinstance(row, data.BadRow):
                errors.append((display, n, None, row.reason))
            else:
                row_fmt = formats.detect_format(row, mapping) if fmt == "auto" else fmt
                if row_fmt is None:
                    keys = ", ".join(sorted(row)) if isinstance(row, dict) else formats.type_name(row)
                    errors.append((display, n, "dataset.format", f"cannot detect the dataset format from keys "
                                   f"[{keys}]: expected {formats.expected_keys(mapping)} (or set dataset.format or "
                                   "dataset.columns)"))
                else:
                    try:
                        norm = formats.normalize(row, row_fmt, mapping)
                    except formats.RowError as exc:
                        errors.append((display, n, exc.field, exc.reason))
                    else:
                        if not errors:
                            name = _format_name(row_fmt, norm)
                            result.formats[name] = result.formats.get(name, 0) + 1
                            writer.add(_ENCODE(norm), display, n)
            if len(errors) > MAX_REPORTED_ERRORS:
                break
    finally:
        writer.close()
    if errors:
        msg, display, n, fld = _error_message(errors)
        raise InvalidInput(Reason.INVALID_DATASET, msg, file=display, row=n, field=fld)
    if result.checked == 0:
        raise InvalidInput(Reason.INVALID_DATASET, f"dataset split {split!r} has no rows", field="dataset")
    return result


def check_dataset(source: data.DatasetSource, spec: DatasetSpec, out_dir: Path | None = None) -> DatasetReport:
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="lft-rows-"))
    splits = [spec.train_split] + ([spec.eval_split] if spec.eval_split else [])
    mapping = formats.mapping_of(spec.columns)
    result: dict[str, SplitRows] = {}
    for split in splits:
        if not source.is_hub and split not in source.files:
            raise InvalidInput(Reason.DATASET_NOT_FOUND, f"dataset {source.uri}: no file for split {split!r}",
                               file=source.uri, field="dataset.evalSplit" if split != spec.train_split else "dataset.trainSplit")
        result[split] = check_rows(data.iter_rows(source, split, spec), spec.format, split,
                                   out_dir / f"rows-{len(result)}.arrow", mapping)
    train = result[spec.train_split]
    if not spec.eval_split and spec.eval_fraction > 0 and train.checked < 2:
        raise InvalidInput(Reason.INVALID_DATASET, f"dataset {source.uri}: {train.checked} row(s) cannot be split into train "
                           "and eval (set dataset.evalFraction to 0 or add rows)", file=source.uri, field="dataset")
    return DatasetReport(uri=source.uri, splits=result, files=data.file_digests(source))


def check_sources(spec: DatasetSpec, storage_spec: StorageSpec | None,
                  work: Path) -> tuple[list[data.DatasetSource], DatasetReport]:
    """dataset.uri, or each source of dataset.mixture read and checked on its own (an error names the source)."""
    if spec.mixture is None:
        source = data.resolve(spec, storage_spec, work)
        return [source], check_dataset(source, spec, work / "rows")
    sources, parts = [], []
    for i, (item, one) in enumerate(zip(spec.mixture, spec.sources(), strict=True)):
        try:
            sources.append(data.resolve(one, storage_spec, work / f"source-{i}"))
            parts.append(check_dataset(sources[-1], one, work / "rows" / f"source-{i}"))
        except InvalidInput as exc:
            raise mixture.restated(exc, i, item) from None
    return sources, DatasetReport(uri=None, splits={}, parts=parts, weights=[s.weight for s in spec.mixture])
