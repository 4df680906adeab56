"""Can vLLM serve the adapter? A pure check of the saved adapter_config.json against vLLM's LoRA rules.

vLLM facts as read in vllm-project/vllm (main, 2025; v0.11 and later), vllm/config/lora.py and
vllm/lora/peft_helper.py (PEFTHelper._validate_features, validate_legal):
- `--max-lora-rank` takes one of 1, 8, 16, 32, 64, 128, 256, 320, 512 (MaxLoRARanks); the default is 16,
  and an adapter of a higher rank is refused unless the server is started with a large enough value.
- "vLLM does not yet support DoRA."; "vLLM only supports modules_to_save being None.";
  "Adapter bias is not supported." (bias other than "none").
- LoRA is applied to the decoder's linear layers (attention and MLP projections, packed as qkv_proj and
  gate_up_proj); adapters of lm_head or embed_tokens are not loaded (the extra-vocabulary LoRA was removed).
"""

from __future__ import annotations

from typing import Any

from lft_api.contract import Servability

ENGINE = "vLLM"
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_MAX_LORA_RANK = 16

_LLAMA_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
# The projections vLLM adapts, per model_type (config.json), for the architectures checked here.
SUPPORTED_TARGETS: dict[str, frozenset[str]] = {
    "phi3": frozenset({"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}),
    "llama": _LLAMA_TARGETS,
    "mistral": _LLAMA_TARGETS,
    "qwen2": _LLAMA_TARGETS,
}
NEVER_SUPPORTED = frozenset({"lm_head", "embed_tokens", "embed_out", "wte"})


def max_lora_rank_for(r: int) -> int | None:
    """The smallest `--max-lora-rank` value that admits rank r; None above vLLM's maximum."""
    return next((m for m in VLLM_MAX_LORA_RANKS if m >= r), None)


def adapter_rank(adapter_config: dict[str, Any]) -> int:
    """The largest rank in the adapter (r, or a larger one of PEFT's rank_pattern)."""
    return max([int(adapter_config.get("r") or 0), *(adapter_config.get("rank_pattern") or {}).values()])


def _targets(adapter_config: dict[str, Any]) -> list[str] | None:
    """The adapted module names (last path component); None when PEFT saved a regex."""
    raw = adapter_config.get("target_modules")
    if isinstance(raw, str) or raw is None:
        return None
    return sorted({str(name).rsplit(".", 1)[-1] for name in raw})


def _target_reasons(targets: list[str] | None, model_type: str | None, notes: list[str]) -> list[str]:
    if targets is None:
        notes.append("target modules given as a pattern: not checked against vLLM")
        return []
    supported = SUPPORTED_TARGETS.get(model_type or "")
    if supported is None:
        notes.append(f"target modules not checked against vLLM's layers for model type {model_type or 'unknown'}")
        bad = [t for t in targets if t in NEVER_SUPPORTED]
    else:
        bad = [t for t in targets if t not in supported]
    if not bad:
        return []
    allowed = f" (it adapts {', '.join(sorted(supported))} on {model_type})" if supported is not None else ""
    return [f"vLLM does not apply LoRA to {', '.join(bad)}{allowed}"]


def check(adapter_config: dict[str, Any], model_type: str | None) -> Servability:
    """Whether vLLM can load this adapter_config.json for a base of this model_type, and if not, why. Pure."""
    reasons: list[str] = []
    notes: list[str] = []
    rank = adapter_rank(adapter_config)
    needed = max_lora_rank_for(rank)
    if needed is None:
        reasons.append(f"LoRA rank {rank} is above vLLM's maximum --max-lora-rank {VLLM_MAX_LORA_RANKS[-1]}")
    elif needed > VLLM_DEFAULT_MAX_LORA_RANK:
        notes.append(f"start vLLM with --max-lora-rank {needed} (rank {rank}; the default is "
                     f"{VLLM_DEFAULT_MAX_LORA_RANK})")
    if adapter_config.get("use_dora"):
        reasons.append("DoRA (lora.useDora) is not supported by vLLM")
    bias = adapter_config.get("bias") or "none"
    if bias != "none":
        reasons.append(f"LoRA bias (lora.bias: {bias}) is not supported by vLLM; use none")
    if adapter_config.get("modules_to_save"):
        reasons.append(f"modules_to_save ({', '.join(adapter_config['modules_to_save'])}) is not supported by vLLM")
    reasons += _target_reasons(_targets(adapter_config), model_type, notes)
    return Servability(engine=ENGINE, servable=not reasons, reasons=reasons, notes=notes)
