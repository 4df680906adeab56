"""training.performance: fitting a run to its GPU, and measuring how well it uses it (status.performance).

  plan.py        the memory estimate and the plan (micro-batch, gradient checkpointing, kernels, batching): pure
  probes.py      what the plan needs from torch: the GPU, the model's shape on the meta device, out-of-memory errors
  sizing.py      the plan before the weights load; the OOM back-off's snapshot and restore of the trainable weights
  attention.py   PyTorch's variable-length attention kernel for packed rows, registered with transformers
  throughput.py  steady-state tokens/s, TFLOP/s and MFU (ThroughputMeter and its callback)
"""
