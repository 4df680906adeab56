"""The base model, the tokenizer and the LoRA settings: from the spec to loaded objects (and the merge).

Library imports are lazy: pre-flight runs before torch and transformers load.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.spec import TrainerConfig

from ..data.sources import looks_like_path
from ..errors import InvalidInput
from ..performance.attention import ATTENTION_NAME
from ..performance.attention import register as register_varlen_attention
from ..storage.filesystems import split_uri
from ..storage.store import Storage
from . import extra_settings

log = logging.getLogger(__name__)


def resolve_dtype_name(requested: str, cuda: bool, bf16_ok: bool) -> str:
    """The weights dtype: auto = bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU; fp16 on CPU -> fp32."""
    if requested == "auto":
        return ("bfloat16" if bf16_ok else "float16") if cuda else "float32"
    if requested == "float16" and not cuda:
        return "float32"  # fp16 training needs a GPU (GradScaler)
    return requested


def lora_kwargs(config: TrainerConfig) -> dict[str, Any]:
    lora = config.lora
    targets: Any = lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    kw: dict[str, Any] = dict(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                              bias=lora.bias, use_dora=lora.use_dora, task_type="CAUSAL_LM")
    # The knobs at their defaults are not passed: PEFT's own defaults apply, as before they existed.
    if lora.rslora:
        kw["use_rslora"] = True
    if lora.init != "default":
        kw["init_lora_weights"] = lora.init
    if config.training.extra:
        kw.update(extra_settings.route(config.training.extra).lora)  # training.extra's keys of LoraConfig, typed
    return kw


def with_lora(config: TrainerConfig, base, start_adapter: Path | None = None):
    """The base model wrapped for LoRA training (PEFT): a new adapter, or model.adapter (downloaded to
    start_adapter) to continue; the trainable share logged."""
    from peft import LoraConfig, get_peft_model

    routed_lora = extra_settings.route(config.training.extra).lora  # none with model.adapter: pre-flight
    if start_adapter is not None:
        from . import adapters

        peft_model = adapters.load(config, base, start_adapter)
    else:
        lora = extra_settings.build(LoraConfig, lora_kwargs(config), routed_lora)
        peft_model = get_peft_model(base, lora)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("trainable parameters: %d of %d (%.3f%%)", trainable, total, 100.0 * trainable / total)
    return peft_model


def model_dir(config: TrainerConfig, work: Path) -> str:
    """A local directory or a hub id for from_pretrained; remote URIs are downloaded first."""
    name = config.model.name
    if not looks_like_path(name):
        return name
    protocol, path = split_uri(os.path.expanduser(name))
    if protocol == "file":
        return path
    dest = work / "model"
    if not (dest / "config.json").exists():
        Storage(name, config.storage).download_dir("", dest)
    return str(dest)


def _hub_error(exc: Exception, what: str, name: str) -> Exception:
    """Map a missing hub repo / revision to InvalidInput; keep network trouble retryable."""
    kinds = {"RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError", "EntryNotFoundError"}
    chain = [exc, exc.__cause__, exc.__context__]
    if any(type(e).__name__ in kinds for e in chain if e is not None) or (
        isinstance(exc, OSError) and "is not a local folder and is not a valid model identifier" in str(exc)
    ):
        return InvalidInput(Reason.MODEL_NOT_FOUND, f"{what} {name}: {str(exc).splitlines()[0][:300]}",
                            file=name, field="model.name")
    return exc


def load_tokenizer(config: TrainerConfig, model_dir: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, revision=config.model.revision,
                                            trust_remote_code=config.model.trust_remote_code)
    except Exception as exc:
        raise _hub_error(exc, "tokenizer of model", config.model.name) from exc
    # No template: trainset.build refuses chat rows (model.chatTemplate); none is chosen silently.
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(config: TrainerConfig, model_dir: str, cuda: bool, dtype_name: str, plan, local_rank: int = 0):
    """plan: performance.Plan (the attention kernel; gradient checkpointing for k-bit preparation)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(revision=config.model.revision, trust_remote_code=config.model.trust_remote_code,
                                  dtype=getattr(torch, dtype_name))
    if plan.attention == ATTENTION_NAME:
        register_varlen_attention()
    if plan.attention is not None:
        kwargs["attn_implementation"] = plan.attention
    q = config.lora.quantization
    if q != "none":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
            if q == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": local_rank}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except Exception as exc:
        raise _hub_error(exc, "model", config.model.name) from exc
    model.config.use_cache = False  # no KV cache while training
    if q != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(plan.checkpointing and cuda),
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def merge_and_upload(config, peft_model, tokenizer, model_dir: str, work: Path, out, dtype_name: str) -> str:
    """Merge the adapter into an unquantized copy of the base model and upload it to <output>/merged/."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = work / contract.ADAPTER_DIR
    merge_dtype = "bfloat16" if config.lora.quantization != "none" else dtype_name
    base = AutoModelForCausalLM.from_pretrained(model_dir, revision=config.model.revision,
                                                trust_remote_code=config.model.trust_remote_code,
                                                dtype=getattr(torch, merge_dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    dest = work / contract.MERGED_DIR
    merged.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    out.upload_dir(dest, contract.MERGED_DIR)
    shutil.rmtree(dest, ignore_errors=True)
    return out.uri(contract.MERGED_DIR)
