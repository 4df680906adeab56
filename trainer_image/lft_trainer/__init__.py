"""The LoRA fine-tuning trainer (runs in the trainer pod). Kept import-light: no torch at package import, and no
sub-package imports anything in its __init__.

`python -m lft_trainer` (__main__.py) reads the Settings, loads the config and runs run/train.py (or, with more than
one process, run/launcher.py, which starts torchrun). Where to look:

  __main__.py   the entry point: settings, the run, the termination message and the exit code
  settings.py   every environment variable the trainer reads, read once (Settings)
  errors.py     InvalidInput (exit 3, never retried) and StorageError (exit 1, retried)
  run/          the run itself: pre-flight, resume point, training, the multi-process launcher
  data/         the dataset: files and rows, formats, chat templates, the token ids the model trains on
  model/        the base model and tokenizer, LoRA, the merge; the tiny model of the CPU image and the tests
  performance/  the memory estimate and plan, the GPU probes, attention kernels, throughput and MFU
  storage/      object storage (fsspec), retries, checkpoints, background uploads, who owns the output prefix
  reporting/    what the run tells: progress and status patches, metrics.jsonl, loss.png, the summary, tracking
  adapter/      the deliverable: the adapter's config and card, vLLM servability, held-out samples
  security/     secrets kept out of the logs (scrubbing) and out of the output (secret_scan)

Dependencies point down this list, roughly: run/ uses everything; data/, model/, performance/ and reporting/ use
storage/; storage/ uses security/; errors.py and settings.py use nothing of the trainer.
"""
