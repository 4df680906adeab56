"""The adapter as a deliverable: adapter_config.json naming the base model as the user gave it, the
servability verdict, how to load it, and our own adapter/README.md model card (instead of PEFT's template).

The builders are pure; finish_adapter() applies them to the saved adapter directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lft_api.contract import RunIdentity, Servability
from lft_api.spec import CONVERTED_INITS, TrainerConfig

from ..data.sources import looks_like_path
from . import servability

ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_CARD_FILE = "README.md"


def servable_adapter_config(saved: dict[str, Any], base: str, revision: str | None) -> dict[str, Any]:
    """PEFT's adapter_config.json with the base model as the user gave it (hub id, URI or path) and its
    revision, instead of the directory the trainer loaded it from. Pure."""
    return {**saved, "base_model_name_or_path": base, "revision": revision}


def is_uri(name: str) -> bool:
    return "://" in name


def uri_base_note(base: str) -> str:
    return (f"PEFT and vLLM cannot fetch the base model {base} themselves: download it to a directory and pass "
            "that directory as the base")


def how_to_load(config: TrainerConfig, adapter_uri: str) -> str:
    """A short Python snippet that loads the adapter onto its base. Pure."""
    base, revision = config.model.name, config.model.revision
    remote = config.model.trust_remote_code
    extra = (f", revision={revision!r}" if revision else "") + (", trust_remote_code=True" if remote else "")
    lines = [f"# download {adapter_uri} to ./adapter" + (f" and {base} to ./base" if is_uri(base) else "")]
    lines += ["from peft import PeftModel", "from transformers import AutoModelForCausalLM",
              f"base = AutoModelForCausalLM.from_pretrained({'./base' if is_uri(base) else base!r}{extra})",
              'model = PeftModel.from_pretrained(base, "./adapter")']
    if not is_uri(base):
        lines += ["# or, the base named in adapter_config.json:",
                  "from peft import AutoPeftModelForCausalLM",
                  'model = AutoPeftModelForCausalLM.from_pretrained("./adapter"'
                  + (", trust_remote_code=True" if remote else "") + ")"]
    return "\n".join(lines)


def vllm_command(config: TrainerConfig, identity: RunIdentity, adapter_config: dict[str, Any]) -> str:
    """The `vllm serve` line for the adapter in ./adapter (and a URI base in ./base). Pure."""
    parts = [f"vllm serve {'./base' if is_uri(config.model.name) else config.model.name}"]
    if config.model.revision:
        parts.append(f"--revision {config.model.revision}")
    parts.append(f"--enable-lora --lora-modules {identity.name or 'adapter'}=./adapter")
    needed = servability.max_lora_rank_for(servability.adapter_rank(adapter_config))
    if needed is not None and needed > servability.VLLM_DEFAULT_MAX_LORA_RANK:
        parts.append(f"--max-lora-rank {needed}")
    return " ".join(parts)


def _origin(config: TrainerConfig) -> str:
    """How the adapter started, when not from scratch with PEFT's default init."""
    if config.model.adapter is not None:
        return f", continued from {config.model.adapter}"
    if config.lora.init in CONVERTED_INITS:
        return (f", trained with lora.init {config.lora.init} at rank {config.lora.r} and converted for the "
                "unmodified base model (rank 2r)")
    return ""


def model_card(config: TrainerConfig, adapter_config: dict[str, Any], identity: RunIdentity, verdict: Servability,
               adapter_uri: str) -> str:
    """adapter/README.md: base model and revision, LoRA settings, the run, how to load and serve. Pure."""
    base, lora = config.model.name, config.lora
    targets = adapter_config.get("target_modules")
    targets_text = targets if isinstance(targets, str) else ", ".join(sorted(targets or []))
    front = ["---", "library_name: peft", "tags: [lora]"]
    if not looks_like_path(base):  # a hub id: the Hub links the card to it
        front.append(f"base_model: {base}")
    lines = [*front, "---", "", f"# LoRA adapter for {base}", "",
             f"- Base model: `{base}`, revision `{config.model.revision or 'as given (none pinned)'}`",
             # the adapter as saved: a pissa/olora adapter converted for the unmodified base has rank 2r
             f"- LoRA: r={adapter_config.get('r', lora.r)}, alpha={adapter_config.get('lora_alpha', lora.alpha)}, "
             f"dropout={lora.dropout}, target modules {targets_text}, bias {lora.bias}, "
             f"DoRA {'yes' if adapter_config.get('use_dora', lora.use_dora) else 'no'}, "
             f"quantization {lora.quantization}" + _origin(config),
             f"- Trained by {identity.describe()}, settings {identity.spec_hash}", f"- Stored at {adapter_uri}", ""]
    if is_uri(base):
        lines += [f"Note: {uri_base_note(base)}.", ""]
    lines += ["## Load with PEFT", "", "```python", how_to_load(config, adapter_uri), "```", "",
              "## Serve with vLLM", "", verdict.describe(), ""]
    if verdict.servable:
        lines += ["```sh", vllm_command(config, identity, adapter_config), "```", ""]
    return "\n".join(lines)


def finish_adapter(adapter_dir: Path, config: TrainerConfig, identity: RunIdentity, model_type: str | None,
                   adapter_uri: str) -> tuple[Servability, str]:
    """Rewrite adapter_config.json, check servability, write the model card; (verdict, how to load)."""
    path = adapter_dir / ADAPTER_CONFIG_FILE
    saved = servable_adapter_config(json.loads(path.read_text()), config.model.name, config.model.revision)
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    verdict = servability.check(saved, model_type)
    if is_uri(config.model.name):
        verdict.notes.append(uri_base_note(config.model.name))
    (adapter_dir / MODEL_CARD_FILE).write_text(model_card(config, saved, identity, verdict, adapter_uri))
    return verdict, how_to_load(config, adapter_uri)
