"""training.extra -> keyword arguments of TRL's SFTConfig and PEFT's LoraConfig.

Each key goes to the config that has a field of that name. Its value (a string in the spec) is read as JSON when
that gives the type the field declares, else as the text itself ("1" is 1 for an int field and "1" for a str
field), and is checked against that type: the config classes are dataclasses, which take a wrong type silently and
fail much later, mid-training. The configs' own checks (__post_init__) run when they are built (`build`): a
refusal names the keys that caused it. A key neither config has is refused with a close match when there is one.
Everything here is InvalidInput (bad input, never retried). TRL and PEFT are imported at first use.
"""

from __future__ import annotations

import difflib
import enum
import functools
import json
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from lft_api.conditions import Reason
from lft_api.training_knobs import owned_extra_key

from ..errors import InvalidInput

SFT, LORA = "SFTConfig", "LoraConfig"


@dataclass(frozen=True)
class RoutedExtra:
    """training.extra, typed and split by the config that takes each key."""

    sft: dict[str, Any]
    lora: dict[str, Any]


@functools.cache
def config_fields() -> dict[str, dict[str, Any]]:
    """{config name: {field: its declared type}} of TRL's SFTConfig and PEFT's LoraConfig."""
    from peft import LoraConfig
    from trl import SFTConfig

    return {cls.__name__: {f.name: typing.get_type_hints(cls)[f.name] for f in fields(cls) if f.init}
            for cls in (SFTConfig, LoraConfig)}


def route(extra: dict[str, str] | None, known: dict[str, dict[str, Any]] | None = None) -> RoutedExtra:
    """Each key of training.extra to SFTConfig or LoraConfig, its value typed; InvalidInput for an owned key, an
    unknown key (UnknownExtraSetting) or a value of the wrong type (InvalidExtraSetting)."""
    routed = RoutedExtra({}, {})
    if not extra:
        return routed
    known = config_fields() if known is None else known
    for key in sorted(extra):
        field = f"training.extra.{key}"
        owned = owned_extra_key(key)  # refused at apply time too; here for a resource stored before the rule
        if owned:
            raise InvalidInput(Reason.INVALID_CONFIG, f"{field}: {owned}", field=field)
        owner = next((name for name, declared in known.items() if key in declared), None)
        if owner is None:
            raise InvalidInput(Reason.UNKNOWN_EXTRA_SETTING, unknown_message(key, known), field=field)
        value = typed_value(key, extra[key], known[owner][key], owner)
        (routed.sft if owner == SFT else routed.lora)[key] = value
    return routed


def unknown_message(key: str, known: dict[str, dict[str, Any]]) -> str:
    names = sorted({name for declared in known.values() for name in declared})
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.7)
    hint = ""
    if close:
        owned = owned_extra_key(close[0])
        hint = f" (did you mean {close[0]}?" + (f" That one is not settable here: {owned})" if owned else ")")
    return (f"training.extra.{key}: neither TRL's {SFT} nor PEFT's {LORA} has a setting of that name{hint}; "
            "training.extra takes their field names, e.g. adam_beta2 or layers_to_transform")


def typed_value(key: str, text: str, declared: Any, owner: str) -> Any:
    """`text` as JSON when that conforms to `declared`, else the text itself when it does; InvalidExtraSetting."""
    candidates = []
    try:
        candidates.append(json.loads(text))
    except ValueError:
        pass
    candidates.append(text)
    for candidate in candidates:
        ok, value = conform(candidate, declared)
        if ok:
            return value
    raise InvalidInput(Reason.INVALID_EXTRA_SETTING, f"training.extra.{key}: {text!r} is not a value of {owner}.{key}, "
                       f"which takes {describe(declared)}", field=f"training.extra.{key}")


def conform(value: Any, declared: Any) -> tuple[bool, Any]:
    """(does `value`, decoded JSON, fit the type `declared`; the value as the config should get it)."""
    if declared is Any or declared is object:
        return True, value
    if declared is type(None):
        return value is None, value
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is typing.Union or origin is types.UnionType:
        for arg in args:
            ok, converted = conform(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if declared is bool:
        return isinstance(value, bool), value
    if declared is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if declared is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if declared is str:
        return isinstance(value, str), value
    if isinstance(declared, type) and issubclass(declared, enum.Enum):
        return value in {m.value for m in declared}, value
    if declared in (list, dict) or origin in (list, dict, tuple):
        return _conform_container(value, origin or declared, args)
    return False, value  # a config object (PEFT's EvaConfig...): not settable as a string


def _conform_container(value: Any, kind: type, args: tuple) -> tuple[bool, Any]:
    if kind is dict:
        if not isinstance(value, dict):
            return False, value
        results = [conform(v, args[1]) if len(args) == 2 else (True, v) for v in value.values()]
        return all(ok for ok, _ in results), dict(zip(value, (v for _, v in results), strict=True))
    if not isinstance(value, list):
        return False, value
    if kind is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            return False, value
        results = [conform(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in results), tuple(v for _, v in results)
    results = [conform(v, args[0]) if args else (True, v) for v in value]
    return all(ok for ok, _ in results), [v for _, v in results]


def describe(declared: Any) -> str:
    """A type as a user reads it: `float`, `int | None`, `list[str]`."""
    if isinstance(declared, type) and not typing.get_args(declared):
        if issubclass(declared, enum.Enum):
            return "one of " + ", ".join(str(m.value) for m in declared)
        return declared.__name__
    return str(declared).replace("typing.", "").replace("NoneType", "None")


def build(cls: type, kwargs: dict[str, Any], extra: dict[str, Any]):
    """`cls(**kwargs)` (kwargs hold the extra keys too); when the config refuses an extra value, InvalidExtraSetting
    naming the keys it refuses (each tried alone on top of the run's own settings)."""
    try:
        return cls(**kwargs)
    except Exception as exc:
        if not extra:
            raise
        error = exc
    base = {k: v for k, v in kwargs.items() if k not in extra}
    cls(**base)  # the run's own settings must pass: if they don't, that error is ours, not the user's
    culprits = [k for k in sorted(extra) if not _accepts(cls, {**base, k: extra[k]})] or sorted(extra)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    raise InvalidInput(Reason.INVALID_EXTRA_SETTING, f"{', '.join('training.extra.' + k for k in culprits)}: "
                       f"{cls.__name__} refused it: {first}", field=f"training.extra.{culprits[0]}")


def _accepts(cls: type, kwargs: dict[str, Any]) -> bool:
    try:
        cls(**kwargs)
    except Exception:
        return False
    return True
