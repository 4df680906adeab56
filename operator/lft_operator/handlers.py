"""kopf wiring: watches and indexes that trigger the reconciler; no logic of their own.

- LoRAFineTunes, their Jobs and their pods (by the finetune.dev/name label) are watched; any
  change of one of them queues a reconcile of the resource (reconcile.py).
- Jobs and pods are kept in kopf indexes (small views, not whole objects): a reconcile reads
  them from memory, and kopf fills the indexes before any handler runs, so after an operator
  restart the first reconcile already sees every existing Job and pod (no duplicate Job). kopf
  holds every handler until all of them have listed; kopf_workarounds.py keeps a namespace that goes away
  before its first listing from holding them forever.
- LoRAFineTunes are also indexed by namespace and the root of their output.uri (ownership.py): the
  check that no two runs of a namespace write one output prefix reads that index, never the API server.
- Only watch-event handlers: no finalizers on the resources (deleting one never waits for the
  operator; the garbage collector removes the children through ownerReferences).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import Any

import kopf

from lft_api import contract

from . import leader, metrics
from .builders import NAME_LABEL
from .kube import Kube
from .ownership import OutputClaim, Standing, uri_root
from .reconcile import Reconciler, build_reconciler
from .settings import Settings
from .views import JobView, PodView, WorkloadView

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = contract.API_GROUP, contract.API_VERSION, contract.PLURAL


# kopf's indexes (the @kopf.index functions below; kueue_handlers.py): each key to the values indexed under it.
JobIndex = kopf.Index[tuple[str, str], JobView]  # by (namespace, LoRAFineTune name)
PodIndex = kopf.Index[tuple[str, str], PodView]  # by (namespace, LoRAFineTune name)
OutputIndex = kopf.Index[tuple[str, str], OutputClaim]  # by (namespace, root of output.uri)
WorkloadIndex = kopf.Index[str, WorkloadView]  # by Job uid
JobOwnerIndex = kopf.Index[str, tuple[str, str]]  # (namespace, LoRAFineTune name) by Job uid


class IndexCache:
    """The reconciler's view of kopf's live indexes."""

    def __init__(self) -> None:
        self._jobs: JobIndex | None = None
        self._pods: PodIndex | None = None
        self._outputs: OutputIndex | None = None
        self._workloads: WorkloadIndex | None = None  # Kueue's Workloads by Job uid (kueue_handlers.py; only with settings.kueue)

    def bind(self, jobs: JobIndex | None, pods: PodIndex | None, outputs: OutputIndex | None) -> None:
        self._jobs, self._pods, self._outputs = jobs, pods, outputs

    def bind_workloads(self, workloads: WorkloadIndex | None) -> None:
        self._workloads = workloads

    def jobs(self, namespace: str, name: str) -> list[JobView]:
        views = list(self._jobs.get((namespace, name), [])) if self._jobs is not None else []
        if self._workloads is None:
            return views
        return [dataclasses.replace(v, workload=next(iter(self._workloads.get(v.uid, [])), None)) for v in views]

    def pods(self, namespace: str, name: str) -> list[PodView]:
        return list(self._pods.get((namespace, name), [])) if self._pods is not None else []

    def outputs(self, namespace: str, root: str) -> list[OutputClaim]:
        return list(self._outputs.get((namespace, root), [])) if self._outputs is not None else []


def configure_kopf(settings: kopf.OperatorSettings, config: Settings) -> None:
    # Everything kopf might write on objects lives under the API group.
    settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Re-establish watches regularly: a silently dead connection costs at most this long.
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_server_timeout + 30
    # A watch connection that does not open within seconds is retried: with 30 s, one stuck connect
    # at start-up left the operator blind for 30 s (seen in a CI run: first reconcile 30.4 s late).
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 60
    # kopf turns log records of handlers into Events; the reconciler posts its own Events.
    settings.posting.level = logging.ERROR
    # Shorter than kopf's 0.1 s default: apply -> Job latency.
    settings.batching.batch_window = 0.05


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.get("config") or Settings.from_env()
    memo.config = config
    configure_kopf(settings, config)
    memo.cache = IndexCache()
    # With leader election, the reconciler's client refuses every write unless this replica leads.
    memo.elector = leader.elector(config, Kube.from_environment(connections=2)) if config.leader_election else None
    gate = memo.elector.is_leader if memo.elector is not None else None
    memo.kube = Kube.from_environment(connections=max(4, config.api_workers * 2), write_gate=gate)
    memo.reconciler = build_reconciler(memo.kube, config, memo.cache)
    metrics.serve(config.metrics_port)
    # Reconcile everything now and then; adds to the queue are dropped while this replica stands by.
    memo.resync = asyncio.get_running_loop().create_task(memo.reconciler.resync_forever(), name="resync")
    if memo.elector is not None:
        await memo.reconciler.queue.pause()  # a standby until it leads
        memo.elector.start(functools.partial(lead, memo.reconciler), functools.partial(stand_by, memo.reconciler))
    logger.info(
        "lora-finetune-operator started: namespaces=%s trainer image=%s leader election=%s",
        ",".join(config.namespaces) or "all",
        config.trainer_image,
        f"{memo.elector.namespace}/{memo.elector.name}" if memo.elector is not None else "off",
    )


async def lead(reconciler: Reconciler) -> None:
    """Leadership gained: a full resync. The caches were kept warm while standing by, and what this
    replica read then may be stale: creations are idempotent and status writes guarded (reconcile.py)."""
    reconciler.queue.resume(list(reconciler.known))


async def stand_by(reconciler: Reconciler) -> None:
    """Leadership lost: in-flight reconciles and Event posts are cancelled, nothing more is queued."""
    await asyncio.gather(reconciler.queue.pause(), reconciler.events.cancel())


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()
    if memo.elector is not None:
        await memo.elector.stop()  # a leader stops reconciling, then hands the Lease back
        await memo.elector.kube.close()
    await memo.reconciler.close()
    await memo.kube.close()


# Index functions are coroutines (pure and quick): kopf runs plain functions in a thread pool, a thread
# hop per watch event that cost about 20% of the operator's CPU in bench/operator_scale.py.
@kopf.index("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
async def lft_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], JobView]:
    return {(namespaced(namespace), labels[NAME_LABEL]): JobView.from_job(raw_body(body))}


@kopf.index("v1", "pods", labels={NAME_LABEL: kopf.PRESENT})
async def lft_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], PodView]:
    return {(namespaced(namespace), labels[NAME_LABEL]): PodView.from_pod(raw_body(body))}


@kopf.index(GROUP, VERSION, PLURAL)
async def lft_outputs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], OutputClaim]:
    # By namespace: a claim never counts against, nor names to, another namespace's resources.
    claim = OutputClaim.from_body(raw_body(body))
    return {(claim.namespace, uri_root(claim.uri)): claim} if claim is not None else {}


def namespaced(namespace: str | None) -> str:
    """kopf passes `namespace` as optional (a cluster-scoped object has none): every object watched here has one."""
    if namespace is None:
        raise kopf.PermanentError("a namespaced object without a namespace")
    return namespace


def raw_body(body: kopf.Body) -> dict[str, Any]:
    """The object as a plain dict (kopf's views are read-only proxies)."""
    raw = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": dict(body.metadata)}
    for key in ("spec", "status"):
        if key in body:
            raw[key] = dict(body[key])
    return raw


# Handlers are coroutines: kopf runs plain functions in threads, and the queue lives in the loop.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def lft_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    lft_jobs: JobIndex | None = None,  # kopf passes every index by name; the defaults are for its handler
    lft_pods: PodIndex | None = None,  # type (WatchingFn), which declares no such argument
    lft_outputs: OutputIndex | None = None,
    **_: Any,
) -> None:
    memo.cache.bind(lft_jobs, lft_pods, lft_outputs)
    namespace = namespaced(namespace)
    raw = raw_body(body)
    deleted = event.get("type") == "DELETED"
    if deleted:
        memo.reconciler.forget(namespace, name)
    else:
        memo.reconciler.on_resource(namespace, name, raw)
    claim = OutputClaim.from_body(raw)
    if claim is not None and (deleted or claim.finished or claim.standing == Standing.REFUSED):
        memo.reconciler.on_output_released(claim)


@kopf.on.event("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
async def job_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    lft_jobs: JobIndex | None = None,  # as in lft_event
    lft_pods: PodIndex | None = None,
    lft_outputs: OutputIndex | None = None,
    **_: Any,
) -> None:
    memo.cache.bind(lft_jobs, lft_pods, lft_outputs)
    view = None if event.get("type") == "DELETED" else JobView.from_job(raw_body(body))
    memo.reconciler.on_child(namespaced(namespace), labels[NAME_LABEL], body.metadata.uid, view)


@kopf.on.event("v1", "pods", labels={NAME_LABEL: kopf.PRESENT})
async def pod_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    lft_jobs: JobIndex | None = None,  # as in lft_event
    lft_pods: PodIndex | None = None,
    lft_outputs: OutputIndex | None = None,
    **_: Any,
) -> None:
    memo.cache.bind(lft_jobs, lft_pods, lft_outputs)
    view = None if event.get("type") == "DELETED" else PodView.from_pod(raw_body(body))
    memo.reconciler.on_child(namespaced(namespace), labels[NAME_LABEL], body.metadata.uid, view)
