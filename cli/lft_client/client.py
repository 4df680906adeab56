"""Client: LoRAFineTunes from Python with the user's kube credentials, on the same code as `kubectl lft`.

The connection (kubeconfig, context, namespace; in a pod its service account), reading the resource, finding the
trainer pod and its log, and the storage (the trainer's endpoint and Secret, the sha256 check of a pulled adapter)
are lft_cli's: kube.py, render.py, fetch.py. What is new here: create (checked with the API's models first), list,
delete, a wait on a watch, and errors as exceptions (errors.py).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from lft_api import contract
from lft_api.resource import LoRAFineTuneSpec
from lft_cli import fetch, render
from lft_cli.kube import CliError, Cluster, api_message, connect
from lft_cli.kube import NotFound as CliNotFound

from .errors import AdapterMismatch, AlreadyExists, ApiRefused, LftError, NotFound, RunFailed, WaitTimeout, causes
from .finetune import ENDED, PHASES, FineTune, check_name, manifest, spec_body
from .progress import OnProgress, change_key, reporter

Run = str | FineTune
# One watch request lasts at most this long (the API server ends it; the next one starts where it left off).
WATCH_SECONDS = 300


@contextlib.contextmanager
def _lft_errors() -> Iterator[None]:
    """lft_cli's errors as the client's (the same one-sentence messages, already scrubbed of secret values)."""
    try:
        yield
    except CliNotFound as exc:
        raise NotFound(str(exc)) from None
    except CliError as exc:
        raise LftError(str(exc)) from None


def api_refused(exc: ApiException, what: str) -> ApiRefused:
    """The API server's refusal as ApiRefused (AlreadyExists for 409): its status, reason, message and causes."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = {}
    reason = (body.get("reason") if isinstance(body, dict) else None) or exc.reason or ""
    kind = AlreadyExists if exc.status == 409 else ApiRefused
    return kind(what, exc.status, reason, api_message(exc), causes(body if isinstance(body, dict) else {}))


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines (without their newline) from a byte stream cut anywhere, a UTF-8 character included."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    pending = ""
    for chunk in chunks:
        pending += decode(chunk)
        *lines, pending = pending.split("\n")
        yield from (line.removesuffix("\r") for line in lines)
    pending += decode(b"", final=True)
    if pending:
        yield pending.removesuffix("\r")


def _phases(until: str | Iterable[str]) -> tuple[str, ...]:
    wanted = (until,) if isinstance(until, str) else tuple(until)
    unknown = [p for p in wanted if p not in PHASES]
    if unknown or not wanted:
        raise ValueError(f"until: phases among {', '.join(PHASES)}, not {unknown or 'none'}")
    return wanted


class Client:
    """LoRAFineTunes of a cluster, as the user: Client() reads the kubeconfig kubectl would (KUBECONFIG, else
    ~/.kube/config; in a pod, its service account), its current context and that context's namespace.

    Every method that takes a run takes its name or a FineTune (then its namespace, unless namespace= is given).
    Raises LftError subclasses (lft_client.errors); no message or return value holds a storage Secret's value.
    """

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None):
        with _lft_errors():
            self.api, default = connect(kubeconfig, context)
        self.namespace = namespace or default

    def __repr__(self) -> str:
        return f"Client(host={self.api.configuration.host!r}, namespace={self.namespace!r})"

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------
    def _where(self, run: Run, namespace: str | None) -> tuple[Cluster, str]:
        if isinstance(run, FineTune):
            return Cluster(self.api, namespace or run.namespace or self.namespace), run.name
        return Cluster(self.api, namespace or self.namespace), run

    @property
    def _objects(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    # -- the resource --------------------------------------------------------------------------------
    def create(self, name: str, spec: Mapping[str, Any] | LoRAFineTuneSpec, namespace: str | None = None,
               labels: Mapping[str, str] | None = None, validate: bool = True) -> FineTune:
        """Create a LoRAFineTune. The name and spec are checked here first (InvalidSpec naming each field; nothing
        is sent); the API server then checks the schema strictly (an unknown field is refused, not dropped) and
        the CRD's CEL rules: its refusal is ApiRefused (422, its message names the field), AlreadyExists (409)
        when the name is taken. validate=False skips the check here (a client older than the cluster's CRD)."""
        check_name(name)
        body = manifest(name, spec_body(spec, validate=validate), labels)
        ns = namespace or self.namespace
        try:
            created = self._objects.create_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, ns, contract.PLURAL, body, field_validation="Strict")
        except ApiException as exc:
            raise api_refused(exc, f"creating lorafinetune {ns}/{name}") from None
        return FineTune(cast("dict[str, Any]", created))  # the decoded JSON; the client annotates `object`

    def get(self, run: Run, namespace: str | None = None) -> FineTune:
        """The resource now (NotFound if there is none)."""
        cluster, name = self._where(run, namespace)
        with _lft_errors():
            return FineTune(cluster.lft(name))

    def list(self, namespace: str | None = None, labels: Mapping[str, str] | str | None = None) -> list[FineTune]:
        """The namespace's LoRAFineTunes (labels: {"team": "a"} or a selector "team=a,tier!=x"), by name."""
        ns = namespace or self.namespace
        selector = labels if isinstance(labels, str) or labels is None else \
            ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            found = self._objects.list_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, ns, contract.PLURAL, label_selector=selector or "")
        except ApiException as exc:
            raise api_refused(exc, f"listing lorafinetunes in {ns}") from None
        items = cast("dict[str, Any]", found).get("items") or []
        return sorted((FineTune(o) for o in items), key=lambda f: f.name)

    def delete(self, run: Run, namespace: str | None = None) -> None:
        """Delete the resource; the operator's objects (Job, pods, ConfigMap...) go with it. Storage is kept."""
        cluster, name = self._where(run, namespace)
        try:
            self._objects.delete_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, cluster.namespace, contract.PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f'lorafinetune "{name}" not found in namespace "{cluster.namespace}"') from None
            raise api_refused(exc, f"deleting lorafinetune {cluster.namespace}/{name}") from None

    # -- waiting -------------------------------------------------------------------------------------
    def wait(self, run: Run, until: str | Iterable[str] = ("Succeeded",), timeout: float | None = None,
             on_progress: OnProgress = "auto", namespace: str | None = None) -> FineTune:
        """Until the run's phase is one of `until`, on a watch of the resource (no polling). Returns the FineTune.

        A run that ends otherwise: Failed raises RunFailed (reason, message, the FineTune), unless "Failed" is in
        until; Succeeded returns (wait(until="Running") of a run that already ended). Suspended is waited through.
        timeout: seconds (None: no limit), then WaitTimeout. on_progress: "auto" (a tqdm bar if tqdm is installed,
        else a printed line per change), "print", "tqdm", None, or your callable, called with the FineTune on
        each change of phase, step, queue state or message."""
        wanted = _phases(until)
        cluster, name = self._where(run, namespace)
        deadline = None if timeout is None else time.monotonic() + timeout
        report = reporter(on_progress)
        try:
            return self._wait(cluster, name, wanted, deadline, report, timeout)
        finally:
            close = getattr(report, "close", None)
            if callable(close):
                close()

    def _wait(self, cluster: Cluster, name: str, wanted: tuple[str, ...], deadline: float | None,
              report: Callable[[FineTune], Any] | None, timeout: float | None) -> FineTune:
        last: tuple[Any, ...] | None = None
        with _lft_errors():
            obj = cluster.lft(name)
        while True:
            for seen in self._events(cluster, name, obj, deadline):
                obj, ft = seen, FineTune(seen)
                if report is not None and change_key(ft) != last:
                    last = change_key(ft)
                    report(ft)
                if ft.phase in wanted:
                    return ft
                if ft.phase == "Failed":
                    reason, message = render.failure(obj.get("status") or {})
                    outcome = render.wait_outcome(obj)
                    raise RunFailed(outcome.message if outcome is not None else message, reason, message, ft)
                if ft.phase in ENDED:
                    return ft
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(render.timeout_message(obj, timeout or 0), FineTune(obj))
            with _lft_errors():
                obj = cluster.lft(name)  # the watch ended (its time, or history gone: 410): read it again

    def _events(self, cluster: Cluster, name: str, obj: dict[str, Any], deadline: float | None
                ) -> Iterator[dict[str, Any]]:
        """obj, then each version of the resource the API server sends after it, until the watch request ends
        (after WATCH_SECONDS, or at the deadline)."""
        yield obj
        left = WATCH_SECONDS if deadline is None else min(WATCH_SECONDS, deadline - time.monotonic())
        if left <= 0:
            return
        seconds = max(1, math.ceil(left))
        stream = watch.Watch().stream(
            self._objects.list_namespaced_custom_object, contract.API_GROUP, contract.API_VERSION, cluster.namespace,
            contract.PLURAL, field_selector=f"metadata.name={name}",
            resource_version=obj["metadata"]["resourceVersion"], timeout_seconds=seconds,
            allow_watch_bookmarks=False, _request_timeout=(30, seconds + 30))
        try:
            for event in stream:
                if event["type"] == "DELETED":
                    raise NotFound(f'lorafinetune "{name}" was deleted from namespace "{cluster.namespace}" '
                                   "while waiting for it")
                if event["type"] in ("ADDED", "MODIFIED"):
                    yield event["object"]
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the version is too old to watch from; the caller reads it again
                raise api_refused(exc, f"watching lorafinetune {cluster.namespace}/{name}") from None
        finally:
            stream.close()

    # -- the trainer's log and the adapter -------------------------------------------------------------
    def logs(self, run: Run, follow: bool = True, tail: int | None = None, namespace: str | None = None
             ) -> Iterator[str]:
        """The lines of the current attempt's trainer pod log (of a multi-node run, node 0's), as `kubectl lft
        logs`: follow=True goes on until the container ends. LftError when the run has no trainer pod (yet):
        wait(run, until="Running") first."""
        cluster, name = self._where(run, namespace)
        with _lft_errors():
            pod = cluster.log_pod(name)  # here, not at the first line: a missing pod is said at the call
        return self._lines(cluster, pod, follow, tail)

    @staticmethod
    def _lines(cluster: Cluster, pod: str, follow: bool, tail: int | None) -> Iterator[str]:
        with _lft_errors(), contextlib.closing(cluster.logs(pod, follow, tail)) as chunks:
            yield from iter_lines(chunks)

    def pull_adapter(self, run: Run, dest_dir: str | Path, namespace: str | None = None,
                     endpoint_url: str | None = None) -> Path:
        """Download the adapter into dest_dir, written only when every file matches status.adapter.files (name,
        size, sha256, which the operator recorded: whoever can write the bucket cannot change them); else
        AdapterMismatch naming each file, and dest_dir is left as it was. The storage is read as the trainer reads
        it: its endpoint, the credentials of the run's storage Secret (read with your kube credentials, never
        shown); endpoint_url when this machine reaches the store at another address than the pods. A run without
        status.adapter.files is checked against training_summary.json in storage, with a warning. Returns the
        directory."""
        cluster, name = self._where(run, namespace)
        dest = Path(dest_dir)
        with _lft_errors():
            obj = cluster.lft(name)
            status = obj.get("status") or {}
            uri = fetch.adapter_uri(name, status)
            store = fetch.run_storage(cluster, obj, endpoint_url, note=lambda text: warnings.warn(text, stacklevel=4))
            found = fetch.pull_manifest(name, uri, store, status)
            if not found.trusted:
                warnings.warn(fetch.untrusted_warning(name, found), stacklevel=2)
            try:
                fetch.pull_adapter(store, uri, dest, found)
            except fetch.Mismatch as exc:
                raise AdapterMismatch(f"the adapter at {uri} does not match {found.source} ({len(found.files)} files "
                                      f"listed); nothing was written to {dest}: {exc}", exc.problems) from None
        return dest
