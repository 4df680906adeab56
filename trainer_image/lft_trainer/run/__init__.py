"""The run itself, in the order it happens: what the entry point calls and the stages it goes through.

Everything else in the trainer is a part these stages use; this package is the only one that ties them together.

  preflight.py    the config, every dataset row, the model and the storage, checked in seconds before any loading
  resume.py       where the run continues from: its own newest checkpoint, or output.resumeFrom
  train.py        prepare, fit (with the OOM back-off), publish; the result for the operator
  control.py      the run's TrainerCallback (SIGTERM, checkpoints to the uploader) and the shard-recording mixin
  sft_args.py     the spec and the performance plan -> TRL's SFTConfig arguments
  early_stop.py   training.earlyStopping: the callback, its count across resumes, what a run that stopped early reports
  launcher.py     more than one process: pre-flight once per pod, then torchrun, then the pod's result
  distributed.py  the process's rank in the torchrun group, and SIGTERM handling shared by every rank
"""
