"""lft_client: LoRAFineTunes from Python (a notebook), with your kube credentials, on the code of `kubectl lft`.

    from lft_client import Client, RunFailed

    c = Client()                                    # KUBECONFIG / ~/.kube/config, current context and namespace
    ft = c.create("phi3-support", {"model": {"name": "microsoft/Phi-3-mini-4k-instruct"}, ...})
    ft = c.wait(ft)                                 # a progress bar (tqdm) or a line per change; RunFailed
    for line in c.logs(ft): ...                     # the trainer pod's log, followed
    path = c.pull_adapter(ft, "adapter/")           # every file checked against status.adapter.files (sha256)

- client.py    Client: create, get, list, delete, wait (a watch), logs, pull_adapter
- finetune.py  FineTune (the resource, its status typed by lft_api) and the spec check before sending (pure)
- progress.py  what wait() shows: printed lines, a tqdm bar, or your callback
- errors.py    LftError and its subclasses: InvalidSpec, ApiRefused, AlreadyExists, NotFound, RunFailed,
               WaitTimeout, AdapterMismatch

Reuses lft_cli (kube.py: the connection, the resource, the trainer pod and its log; fetch.py: the run's storage
and the sha256 check; render.py) and lft_api's models; imports no ML stack and no kopf. Docs: docs/python-client.md.
"""

from .client import Client, iter_lines
from .errors import AdapterMismatch, AlreadyExists, ApiRefused, InvalidSpec, LftError, NotFound, RunFailed, WaitTimeout
from .finetune import FineTune
from .progress import PrintProgress, TqdmProgress

__all__ = ["AdapterMismatch", "AlreadyExists", "ApiRefused", "Client", "FineTune", "InvalidSpec", "LftError",
           "NotFound", "PrintProgress", "RunFailed", "TqdmProgress", "WaitTimeout", "iter_lines"]
