"""training.performance: the memory estimate, the plan (micro-batch, gradient checkpointing, kernels,
batching) and the throughput accounting (model FLOPs per token, MFU). Pure functions, unit-tested;
torch is imported only by the probes at the bottom.

Model FLOPs per trained token of a LoRA run (forward + backward; recomputation is not counted):
    4 x frozen linear weights            forward 2W, input gradient 2W (frozen: no weight gradient)
  + 6 x LoRA weights                     forward, input gradient and weight gradient
  + 6 x layers x attention width x span  causal QK^T and AV: 2 x 2 x width x span / 2 forward, x3 with backward
where span is the mean length of the row a token belongs to (packed rows attend only within themselves).
Embedding lookups are free. MFU = achieved model FLOP/s / the GPU's dense bf16 peak (datasheet).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

GIB = 1024**3

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s. First match wins:
# more specific names first.
GPU_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
    ("H800 PCIe", 756.0), ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 6000 Ada", 364.2), ("RTX 4090", 165.2),
    ("RTX 3090", 71.0), ("A6000", 154.8),
)


def peak_bf16_tflops(device_name: Optional[str]) -> Optional[float]:
    if not device_name:
        return None
    for key, tflops in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


# ---------------------------------------------------------------------------------------------
# the model's shape
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What the estimates need: every linear layer (name, in, out), the other parameters, the widths."""

    linears: tuple[tuple[str, int, int], ...]
    other_params: int  # embeddings, norms, biases
    layers: int
    hidden: int
    attention_width: int  # query heads x head dim
    intermediate: int
    model_type: str = ""

    @property
    def linear_params(self) -> int:
        return sum(i * o for _, i, o in self.linears)

    @property
    def total_params(self) -> int:
        return self.linear_params + self.other_params

    def lora_targets(self, targets: Iterable[str]) -> list[tuple[str, int, int]]:
        """The linear layers PEFT adapts: all but the output head for all-linear, else by name suffix."""
        names = list(targets)
        if names == ["all-linear"]:
            return [lin for lin in self.linears if not lin[0].endswith("lm_head")]
        return [lin for lin in self.linears if any(lin[0] == t or lin[0].endswith("." + t) for t in names)]

    def lora_params(self, targets: Iterable[str], r: int) -> int:
        return sum(r * (i + o) for _, i, o in self.lora_targets(targets))


def decoder_shape(cfg: dict) -> ModelShape:
    """A Llama-family decoder (fused or separate q/k/v, gated MLP) from its config.json, as Phi-3 names
    its layers. Used when the model itself cannot be instantiated on the meta device, and in tests."""
    h, f, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads") or heads
    layer = [("self_attn.qkv_proj", h, (heads + 2 * kv) * head_dim), ("self_attn.o_proj", heads * head_dim, h),
             ("mlp.gate_up_proj", h, 2 * f), ("mlp.down_proj", f, h)]
    linears = [(f"model.layers.{i}.{name}", a, b) for i in range(n) for name, a, b in layer]
    vocab = cfg["vocab_size"]
    linears.append(("lm_head", h, vocab))
    # Norms; and the embedding unless tied (then the head's weight is the embedding, counted as a linear).
    other = (2 * n + 1) * h + (0 if cfg.get("tie_word_embeddings") else vocab * h)
    return ModelShape(tuple(linears), other, n, h, heads * head_dim, f, cfg.get("model_type", ""))


def shape_from_model(model) -> ModelShape:
    """From an instantiated (meta-device) model: exact for any architecture."""
    import torch

    linears, linear_ids = [], set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            linears.append((name, mod.in_features, mod.out_features))
            linear_ids.add(id(mod.weight))
    other = sum(p.numel() for p in model.parameters() if id(p) not in linear_ids)
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return ModelShape(tuple(linears), other, cfg.num_hidden_layers, cfg.hidden_size, heads * head_dim,
                      getattr(cfg, "intermediate_size", 4 * cfg.hidden_size), cfg.model_type)


def flops_per_token(shape: ModelShape, lora_params: int, span: float) -> float:
    """Model FLOPs of one trained token (the formula in the module docstring)."""
    return 4.0 * shape.linear_params + 6.0 * lora_params + 6.0 * shape.layers * shape.attention_width * span


# ---------------------------------------------------------------------------------------------
# the memory estimate
# ---------------------------------------------------------------------------------------------
# Calibrated on an H200 (bench/gpu_phi3.py, Phi-3-mini shape, nvidia-smi peaks of 7 runs: see the unit
# tests): CUDA context, cuBLAS workspaces and the caching allocator's slack.
CUDA_CONTEXT_BYTES = int(1.25 * GIB)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    trainable: float  # LoRA weights, gradients and AdamW states
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits + self.overhead

    def gib(self) -> float:
        return round(self.total / GIB, 2)

    def parts_gib(self) -> dict[str, float]:
        return {k: round(getattr(self, k) / GIB, 2) for k in ("weights", "trainable", "activations", "logits",
                                                               "overhead")}


def layer_activation_bytes(shape: ModelShape, lora_dropout: bool, fused_kernels: bool) -> float:
    """bf16 bytes saved for the backward pass per token in one decoder layer, LoRA on every linear.

    Hidden-width tensors: layer input, norm output, q/k/v (+ rotary q/k), attention output, o_proj input,
    residual, second norm in/out (about 13.5); the MLP: gate+up output, activation, product (4 x
    intermediate). LoRA dropout keeps a copy of each adapted input and a mask (about 2 hidden + 1.5
    intermediate more). Fused RMSNorm and SwiGLU kernels recompute their outputs instead of keeping them
    (about 2 hidden + 2.5 intermediate less)."""
    h, f = shape.hidden, shape.intermediate
    widths = 13.5 * h + 4.0 * f + ((2.0 * h + 1.5 * f) if lora_dropout else 0.0)
    if fused_kernels:
        widths -= 2.0 * h + 2.5 * f
    return 2.0 * widths


def estimate_memory(shape: ModelShape, *, quantization: str, lora_params: int, micro_batch: int, seq_len: int,
                    checkpointing: bool, lora_dropout: bool = True, fused_kernels: bool = False) -> MemoryEstimate:
    """Peak GPU memory of one training process (bytes, in parts)."""
    head = max((i * o for n, i, o in shape.linears if n.endswith("lm_head")), default=0)
    largest = max((i * o for n, i, o in shape.linears if not n.endswith("lm_head")), default=0)
    body = shape.linear_params - head
    kbit = quantization in ("4bit", "8bit")
    if kbit:
        # NF4 (0.53 bytes a weight with double-quantized scales) or int8; k-bit preparation keeps the
        # embeddings, norms and head in fp32; one layer is dequantized to bf16 at a time, forward and backward.
        weights = body * (0.53 if quantization == "4bit" else 1.06) + (head + shape.other_params) * 4.0 + largest * 4.0
        trainable = lora_params * 12.0  # bf16 adapter (TRL casts it), fp32 AdamW states
    else:
        weights = shape.total_params * 2.0
        trainable = lora_params * 16.0  # fp32 adapter, gradient, AdamW m and v
    tokens = micro_batch * seq_len
    # k-bit preparation leaves the hidden states in fp32: layer inputs at 4 bytes, about half of the rest.
    per_layer = layer_activation_bytes(shape, lora_dropout, fused_kernels) * tokens * (1.5 if kbit else 1.0)
    if checkpointing:  # layer inputs kept; one layer recomputed (and its gradients) at a time
        activations = shape.layers * (4.0 if kbit else 2.0) * shape.hidden * tokens + 2 * per_layer
    else:
        activations = shape.layers * per_layer
    vocab = max((o for n, _, o in shape.linears if n.endswith("lm_head")), default=0)
    logits = tokens * vocab * 2.0  # TRL's fused LM head: the loss in chunks, about one bf16 copy of the logits
    return MemoryEstimate(weights, trainable, activations, logits, float(CUDA_CONTEXT_BYTES))


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
MEMORY_BUDGET = 0.9  # share of the GPU's memory the estimate may fill (the estimate is not exact)
DEFAULT_MICRO_BATCH = 4
MAX_OOM_BACKOFFS = 3
# Out of memory within this many optimizer steps of an attempt's start: start again with a smaller
# micro-batch (the steps are redone). Later, the memory need is not a start-up peak: the run ends instead.
OOM_RESTART_STEPS = 10


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    gpu_name: Optional[str] = None
    gpu_memory: Optional[int] = None  # bytes
    fused_kernels_available: bool = False  # liger-kernel installed and it knows the architecture
    varlen_attention: Optional[str] = None  # flash_attention_2, or our PyTorch varlen kernel; None: neither


@dataclass(frozen=True)
class Plan:
    """How the run is computed. Never changes what is trained: the effective batch (micro-batch x
    accumulation) stays as given; explicit spec fields always win."""

    micro_batch: int
    grad_accum: int
    checkpointing: bool
    fused_kernels: bool
    attention: Optional[str]  # attn_implementation to load the model with; None: the spec's / the default
    batching: str  # padded | length-grouped | padding-free
    compile: bool
    auto: bool
    micro_batch_explicit: bool
    estimate: Optional[MemoryEstimate] = None
    choices: tuple[str, ...] = field(default=())
    oom_backoffs: int = 0

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    def halved(self) -> Optional["Plan"]:
        """After an out-of-memory error: the next smaller split of the same effective batch, or None when
        performance is off, the micro-batch was given, it is 1 already, or the back-offs are used up."""
        if not self.auto or self.micro_batch_explicit or self.micro_batch == 1 or self.oom_backoffs >= MAX_OOM_BACKOFFS:
            return None
        smaller = max(d for d in _divisors(self.effective_batch) if d <= self.micro_batch // 2)
        note = (f"out of memory at micro-batch {self.micro_batch}: micro-batch {smaller} x "
                f"{self.effective_batch // smaller} accumulation steps (effective batch {self.effective_batch} kept)")
        return replace(self, micro_batch=smaller, grad_accum=self.effective_batch // smaller,
                       oom_backoffs=self.oom_backoffs + 1, choices=self.choices + (note,))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def make_plan(training, lora, attn_requested: str, hw: Hardware, shape: Optional[ModelShape]) -> Plan:
    """training: TrainingSpec, lora: LoraSpec (duck-typed: this module does not import the API)."""
    explicit_mb = training.batch_size is not None
    micro = training.batch_size or DEFAULT_MICRO_BATCH
    accum = training.gradient_accumulation_steps
    auto = training.performance == "auto" and hw.cuda
    choices: list[str] = []
    attention, batching = _attention_and_batching(training, attn_requested, hw, auto, choices)
    if not hw.cuda:
        choices.append("CPU: gradient checkpointing and fused kernels off")
        return Plan(micro, accum, False, False, attention, batching, False, False, explicit_mb, None, tuple(choices))
    fused = training.fused_kernels if training.fused_kernels is not None else (auto and hw.fused_kernels_available)
    if training.fused_kernels is None and auto:
        choices.append("fused kernels: " + ("on (liger-kernel)" if fused else "off (liger-kernel not installed or "
                                            "not for this architecture)"))

    def estimate(m: int, ckpt: bool) -> Optional[MemoryEstimate]:
        if shape is None:
            return None
        return estimate_memory(shape, quantization=lora.quantization, lora_params=shape.lora_params(
            lora.target_modules, lora.r), micro_batch=m, seq_len=training.max_length, checkpointing=ckpt,
            lora_dropout=lora.dropout > 0, fused_kernels=bool(fused))

    if not auto:
        ckpt = True if training.gradient_checkpointing is None else training.gradient_checkpointing
        est = estimate(micro, ckpt)
        choices.append("performance off: the spec's settings")
        if est is not None and hw.gpu_memory and est.total > hw.gpu_memory * MEMORY_BUDGET:
            choices.append(f"estimated {est.gib()} GiB, over {MEMORY_BUDGET:.0%} of {hw.gpu_memory / GIB:.1f} GiB: "
                           "likely to run out of memory")
        return Plan(micro, accum, ckpt, bool(fused), attention, batching, training.compile, False, explicit_mb,
                    est, tuple(choices))
    micro, accum, ckpt, est = _size(training, hw, micro, accum, explicit_mb, estimate, choices)
    return Plan(micro, accum, ckpt, bool(fused), attention, batching, training.compile, True, explicit_mb, est,
                tuple(choices))


def _attention_and_batching(training, attn_requested: str, hw: Hardware, auto: bool,
                            choices: list[str]) -> tuple[Optional[str], str]:
    if training.packing:
        # TRL packs padding-free: the rows of a micro-batch become one flat sequence. Only a kernel that
        # takes row boundaries keeps each row attending to itself alone (SDPA would mix them).
        if attn_requested in ("auto", "flash_attention_2"):
            kernel = attn_requested if attn_requested != "auto" else hw.varlen_attention
            label = {"flash_attention_2": "flash-attn's varlen", "varlen": "PyTorch's varlen (FlashAttention)"}.get(
                kernel or "", "SDPA row by row")
            choices.append(f"packed rows: padding-free, attention by {label} kernel over each row (not a "
                           "block-diagonal mask over the whole micro-batch)")
            return ("flash_attention_2" if kernel == "flash_attention_2" else "lft_varlen"), "padding-free"
        return attn_requested, "padding-free"
    if auto:
        choices.append("rows grouped by length into micro-batches (less padding)")
        return (None if attn_requested == "auto" else attn_requested), "length-grouped"
    return (None if attn_requested == "auto" else attn_requested), "padded"


def _size(training, hw: Hardware, micro: int, accum: int, explicit_mb: bool, estimate, choices: list[str]):
    """The largest micro-batch that fits without gradient checkpointing, else with it (effective batch kept)."""
    effective = micro * accum
    options = [micro] if explicit_mb else sorted(_divisors(effective), reverse=True)
    ckpts = [training.gradient_checkpointing] if training.gradient_checkpointing is not None else [False, True]
    budget = (hw.gpu_memory or 0) * MEMORY_BUDGET
    if estimate(1, False) is None or not hw.gpu_memory:
        ckpt = True if training.gradient_checkpointing is None else training.gradient_checkpointing
        choices.append("no memory estimate (unknown model shape or GPU memory): the spec's settings")
        return micro, accum, ckpt, None
    for ckpt in ckpts:
        for m in options:
            est = estimate(m, ckpt)
            if est.total <= budget:
                choices.append(f"micro-batch {m} x {effective // m} accumulation steps, gradient checkpointing "
                               f"{'on' if ckpt else 'off'}: estimated {est.gib()} GiB of {hw.gpu_memory / GIB:.1f} GiB")
                return m, effective // m, ckpt, est
    m, ckpt = options[-1], ckpts[-1]
    est = estimate(m, ckpt)
    choices.append(f"estimated {est.gib()} GiB even at micro-batch {m} with gradient checkpointing "
                   f"{'on' if ckpt else 'off'}: over {MEMORY_BUDGET:.0%} of {hw.gpu_memory / GIB:.1f} GiB")
    return m, effective // m, ckpt, est
