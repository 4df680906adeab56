"""A variable-length attention kernel for packed rows, from PyTorch itself (no flash-attn package needed).

TRL packs rows padding-free: a micro-batch becomes one flat sequence with the row boundaries in
`cu_seq_lens_q`. With `sdpa`, transformers then builds a block-diagonal mask over the whole flat
sequence: attention work grows with (micro-batch x maxLength)^2 and the masked SDPA kernel is slow.
`torch.nn.attention.varlen.varlen_attn` (FlashAttention inside PyTorch, CUDA, fp16/bf16) takes the row
boundaries instead: each row attends only within itself, at flash-attention speed.

On CPU (tests) the same function runs SDPA row by row: the same result, slowly.
Registered with transformers as attn_implementation ATTENTION_NAME.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from typing import Any

log = logging.getLogger(__name__)

ATTENTION_NAME = "lft_varlen"


@functools.lru_cache(maxsize=1)
def cuda_varlen_kernel():
    """PyTorch's varlen_attn when it is there and the GPU can run it (flash attention needs sm80+), else None."""
    try:
        import torch
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    ok = torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0)
    return varlen_attn if ok else None


def _causal_kwargs(fn) -> dict[str, Any]:
    # torch <= 2.11 took is_causal=True; later releases express causal attention as window_size=(-1, 0).
    params = inspect.signature(fn).parameters
    return {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}


def _rows(cu_seq_lens) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(int(x) for x in cu_seq_lens.tolist()) if b > a]


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    """transformers' attention-interface signature: query/key/value are (batch, heads, seq, dim); returns
    (batch, seq, heads, dim). Without row boundaries (an unpacked batch) it is plain SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (seq, heads, dim)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: one K/V head per group of query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    cu = cu.to(device=q.device, dtype=torch.int32)
    varlen_attn = cuda_varlen_kernel() if q.is_cuda else None
    if varlen_attn is not None:
        max_len = int(kwargs.get("max_length_q") or int((cu[1:] - cu[:-1]).max()))
        # FlashAttention takes bf16/fp16 only; k-bit training keeps hidden states in fp32.
        kernel_dtype = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        q16, k16, v16 = (t.to(kernel_dtype).contiguous() for t in (q, k, v))
        out = varlen_attn(q16, k16, v16, cu, cu, max_len, max_len, scale=scaling,
                          **_causal_kwargs(varlen_attn)).to(q.dtype)
    else:
        out = torch.zeros_like(q)
        for a, b in _rows(cu):
            seg = torch.nn.functional.scaled_dot_product_attention(
                q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=True,
                scale=scaling)
            out[a:b] = seg.transpose(0, 1)
    return out.unsqueeze(0), None


def register() -> str:
    """Make ATTENTION_NAME a valid attn_implementation (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(ATTENTION_NAME, varlen_attention_forward)
    # Like flash attention: no mask for causal rows; the row boundaries come with the batch.
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, flash_attention_mask)
    return ATTENTION_NAME
