"""model.adapter: continue training an existing LoRA adapter. Where it is, whether it fits this run, and loading it.

Pre-flight (before the dataset is read): the adapter's adapter_config.json is there and names a LoRA adapter whose
shape agrees with the spec's lora settings (check_config, pure). Once the base model is loaded: its target modules
exist in the model (check_targets), then PeftModel.from_pretrained(is_trainable=True) (load); a weight that does not
fit the model is refused too. Every refusal is InvalidInput AdapterNotUsable, field model.adapter (or the lora field).

The rule for the lora settings (the field description of model.adapter): r, alpha, targetModules, bias, useDora and
rslora describe the adapter's weights. Left at their defaults they take the adapter's values; set to another value,
they must equal the adapter's. dropout applies as set (it acts while training only).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import LoraSpec, TrainerConfig

from ..errors import InvalidInput
from ..storage.filesystems import split_uri
from ..storage.store import Storage

log = logging.getLogger(__name__)

ADAPTER_CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
START_ADAPTER_DIR = "start-adapter"  # under the work directory: the downloaded model.adapter

# (spec field, LoraSpec attribute, adapter_config.json key): the adapter's shape
SHAPE_FIELDS = (("lora.r", "r", "r"), ("lora.alpha", "alpha", "lora_alpha"),
                ("lora.targetModules", "target_modules", "target_modules"), ("lora.bias", "bias", "bias"),
                ("lora.useDora", "use_dora", "use_dora"), ("lora.rslora", "rslora", "use_rslora"))


def not_usable(uri: str, why: str, field: str = "model.adapter") -> InvalidInput:
    return InvalidInput(Reason.ADAPTER_NOT_USABLE, f"model.adapter {uri}: {why}", field=field, file=uri)


def _local(uri: str) -> Path | None:
    protocol, path = split_uri(os.path.expanduser(uri))
    return Path(path) if protocol == "file" else None


def read_config(uri: str, storage: Storage | None = None) -> dict[str, Any]:
    """The adapter's adapter_config.json (local path or object store); AdapterNotUsable when absent or not JSON."""
    local = _local(uri)
    try:
        if local is not None:
            raw = (local / ADAPTER_CONFIG_FILE).read_bytes()
        else:
            raw = (storage or Storage(uri)).get_bytes(ADAPTER_CONFIG_FILE)
    except (FileNotFoundError, NotADirectoryError):
        raise not_usable(uri, f"no {ADAPTER_CONFIG_FILE} there: not a PEFT adapter directory") from None
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise not_usable(uri, f"{ADAPTER_CONFIG_FILE} is not valid JSON") from None
    if not isinstance(config, dict):
        raise not_usable(uri, f"{ADAPTER_CONFIG_FILE} is not a JSON object")
    return config


def _normalized_targets(value: Any) -> Any:
    """Module names as a sorted list of their last path component (PEFT saves all-linear as the full paths)."""
    if isinstance(value, list) and value == ["all-linear"]:
        return "all-linear"
    return sorted({str(v).rsplit(".", 1)[-1] for v in value}) if isinstance(value, list) else value


def check_config(uri: str, saved: dict[str, Any], lora: LoraSpec, base: str) -> list[str]:
    """Refuse an adapter this run cannot continue (pure); returns the warnings (a different base model)."""
    peft_type = saved.get("peft_type")
    if peft_type != "LORA":
        raise not_usable(uri, f"peft_type is {peft_type!r} in {ADAPTER_CONFIG_FILE}, not LORA: only LoRA adapters "
                              "can be continued")
    if str(saved.get("init_lora_weights")).lower().startswith(("pissa", "olora", "corda", "loftq", "eva", "lora_ga")):
        raise not_usable(uri, f"init_lora_weights is {saved['init_lora_weights']!r}: the adapter fits a base model "
                              "with modified weights; continue from one converted for the unmodified base (what "
                              "this operator publishes)")
    defaults = LoraSpec()
    for field, attr, key in SHAPE_FIELDS:
        mine, default = getattr(lora, attr), getattr(defaults, attr)
        theirs = saved.get(key, {"use_dora": False, "use_rslora": False, "bias": "none"}.get(key))
        if attr == "target_modules":
            mine, default, theirs = (_normalized_targets(v) for v in (mine, default, theirs))
        if mine != default and mine != theirs:
            raise not_usable(uri, f"{field} is {mine!r} but the adapter has {key} {theirs!r}: leave {field} at its "
                                  "default to take the adapter's value, or set it to that value", field=field)
    warnings = []
    named = saved.get("base_model_name_or_path")
    if named and named != base:
        warnings.append(f"model.adapter {uri} was trained on base model {named!r}, this run's model.name is {base!r}: "
                        "continuing, as the weights fit (a local copy of the same model has another name)")
    return warnings


def check_source(config: TrainerConfig, storage_spec=None) -> dict[str, Any] | None:
    """Pre-flight: the adapter's config read and checked, with its weights file present; None without model.adapter."""
    uri = config.model.adapter
    if uri is None:
        return None
    local = _local(uri)
    remote = None if local is not None else Storage(uri, storage_spec or config.storage)
    if local is not None and not local.is_dir():
        raise not_usable(uri, "directory does not exist")
    saved = read_config(uri, remote)
    present = ([n for n in WEIGHT_FILES if (local / n).is_file()] if local is not None
               else [n for n in WEIGHT_FILES if remote.exists(n)])
    if not present:
        raise not_usable(uri, f"no adapter weights ({' or '.join(WEIGHT_FILES)}) next to {ADAPTER_CONFIG_FILE}")
    for warning in check_config(uri, saved, config.lora, config.model.name):
        log.warning(warning)
    return saved


def local_dir(config: TrainerConfig, work: Path) -> Path | None:
    """A local directory holding model.adapter (downloaded from object storage first); None without it."""
    uri = config.model.adapter
    if uri is None:
        return None
    local = _local(uri)
    if local is not None:
        return local
    dest = work / START_ADAPTER_DIR
    if not (dest / ADAPTER_CONFIG_FILE).exists():
        Storage(uri, config.storage).download_dir("", dest)
    return dest


def check_targets(uri: str, saved: dict[str, Any], model) -> None:
    """The adapter's target modules exist in the loaded model (names; a pattern is left to PEFT)."""
    targets = saved.get("target_modules")
    if not isinstance(targets, list):
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(_normalized_targets(targets)) - names)
    if missing:
        raise not_usable(uri, f"its target modules {', '.join(missing)} are not modules of {config_name(model)} "
                              "(an adapter of another model architecture)")


def config_name(model) -> str:
    conf = getattr(model, "config", None)
    return f"the {getattr(conf, 'model_type', None) or 'base'} model"


def load(config: TrainerConfig, base, adapter_dir: Path):
    """The base model with model.adapter loaded for training; lora.dropout as set."""
    from peft import LoraConfig, PeftModel

    uri = config.model.adapter or str(adapter_dir)
    saved = read_config(str(adapter_dir))
    check_targets(uri, saved, base)
    peft_config = LoraConfig.from_pretrained(str(adapter_dir))
    peft_config.lora_dropout = config.lora.dropout
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True, config=peft_config)
    except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, modules not found, unexpected keys
        raise not_usable(uri, f"its weights do not fit the model: {str(exc).splitlines()[0][:300]}") from None
