"""`kubectl lft` / `lft`: the command-line companion of the LoRAFineTune operator.

- main.py     arguments, the subcommands and their exit codes
- render.py   what status and wait print, durations (pure)
- kube.py     the user's kube credentials (KUBECONFIG, current context and namespace, like kubectl),
              the resource, its trainer pods and their logs, the storage Secret the run names
- fetch.py    downloads from the run's output storage with the trainer's own Storage code
              (lft_trainer.storage) and the run's credentials; sha256 checks of a pulled adapter

Imports: lft_api (the resource's models), lft_operator.builders (the names of the objects the operator
creates) and lft_trainer.storage (object storage); never torch, transformers or kopf
(tests/unit/test_api_boundaries.py).
"""
