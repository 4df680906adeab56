"""The LoRAFineTune API, shared by the operator and the trainer (and nothing else).

- spec.py       the trainer's configuration models (TrainerConfig): the part of a LoRAFineTune's spec
                that the trainer reads from its config file
- training_spec.py  TrainingSpec (spec.training, re-exported by spec.py): the optimisation settings, the
                optimizer names, their CEL rules
- resource.py   the whole resource: LoRAFineTuneSpec (TrainerConfig + how to run the pod) and
                LoRAFineTuneStatus; the CRD's schema is generated from these (lft_operator.crdgen)
- contract.py   operator <-> trainer: exit codes, termination message, progress/metrics/checkpoint/
                adapter models, environment variable names, output layout
- conditions.py condition types and reasons, as named constants
- errors.py     the pydantic-error formatter both sides use for "which field, why"

Imports only pydantic: the operator image has no torch, and neither side imports the other.
"""
