"""The cluster as the user sees it: their kubeconfig (KUBECONFIG, current context, its namespace, like
kubectl; in a pod, its service account), the LoRAFineTune, its trainer pods and logs, and the objects the
operator made for the run (its ConfigMap and Job) to learn which storage Secret the trainer reads."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3 import HTTPResponse

from lft_api import contract
from lft_operator.builders import CONFIG_FILE, CONTAINER_NAME, NAME_LABEL, config_map_name

from . import render

T = TypeVar("T")

IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# The keys of the storage Secret the trainer uses (envFrom): the rest of the Secret is not read.
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class CliError(Exception):
    """A clear reason the command cannot go on (exit 3)."""


class NotFound(CliError):
    """The LoRAFineTune does not exist (404)."""


def api_message(exc: ApiException) -> str:
    """The API server's own message (the Status body's), else the HTTP reason."""
    try:
        return (json.loads(exc.body).get("message") if exc.body else None) or exc.reason
    except (TypeError, ValueError, AttributeError):
        return exc.reason


def _api_error(exc: ApiException, what: str) -> CliError:
    return CliError(f"{what}: {exc.status} {api_message(exc)}")


def connect(kubeconfig: str | None = None, context: str | None = None) -> tuple[client.ApiClient, str]:
    """(an API client, the namespace of the context) from the kubeconfig kubectl would use, else in-cluster.
    The client has a configuration of its own: the kubernetes package's default one is left as it was (a notebook
    may hold two clients of two contexts, and its own kubernetes clients)."""
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            active = next((c for c in contexts if c["name"] == context), active)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    except (ConfigException, FileNotFoundError) as exc:
        if kubeconfig or context or not os.path.exists(IN_CLUSTER_NAMESPACE):
            raise CliError(f"no usable kubeconfig: {exc}") from exc
        config.load_incluster_config(client_configuration=configuration)
        with open(IN_CLUSTER_NAMESPACE) as f:
            namespace = f.read().strip()
    return client.ApiClient(configuration), namespace


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str

    def lft(self, name: str) -> dict[str, Any]:
        try:
            obj = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, self.namespace, contract.PLURAL, name)
            return cast("dict[str, Any]", obj)  # the decoded JSON object; the client annotates it `object`
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f'lorafinetune "{name}" not found in namespace "{self.namespace}"') from exc
            raise _api_error(exc, f"reading lorafinetune {self.namespace}/{name}") from exc

    def _read(self, kind: str, fn: Callable[[str, str], T], name: str) -> T | None:
        try:
            return fn(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading {kind} {self.namespace}/{name}") from exc

    # -- the trainer's pods and logs ---------------------------------------------------------
    def current_pod(self, name: str) -> dict[str, Any] | None:
        """The run's current trainer pod (render.current_pod), or None."""
        try:
            pods = client.CoreV1Api(self.api).list_namespaced_pod(
                self.namespace, label_selector=f"{NAME_LABEL}={name}").items
        except ApiException as exc:
            raise _api_error(exc, f"listing the trainer pods of {self.namespace}/{name}") from exc
        return render.current_pod([self.api.sanitize_for_serialization(p) for p in pods])

    def log_pod(self, name: str) -> str:
        """The name of the pod whose log `logs` shows (current_pod); CliError saying why when there is none."""
        pod = self.current_pod(name)
        if pod is None:
            phase = ((self.lft(name).get("status") or {}).get("phase")) or "not reconciled yet"
            raise CliError(f"{name} has no trainer pod (phase {phase}): not started yet, or its Job's pods "
                           "were removed (runPolicy.ttlSecondsAfterFinished)")
        return pod["metadata"]["name"]

    def logs(self, pod: str, follow: bool, tail: int | None) -> Generator[bytes, None, None]:
        """The trainer container's log as it arrives (follow) or as it is."""
        kwargs: dict[str, Any] = {"container": CONTAINER_NAME, "follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        try:
            # _preload_content=False: the undecoded HTTP response, not the str the client's annotation says.
            resp = cast(HTTPResponse, client.CoreV1Api(self.api).read_namespaced_pod_log(pod, self.namespace, **kwargs))
        except ApiException as exc:
            raise _api_error(exc, f"reading the logs of pod {self.namespace}/{pod}") from exc
        try:
            yield from resp.stream(1024)
        finally:
            resp.release_conn()

    # -- what the trainer reads: its config (ConfigMap) and its storage Secret (the Job's envFrom) ----
    def trainer_config(self, name: str) -> dict[str, Any] | None:
        """The trainer's config JSON (the operator's defaults filled in), or None once it is gone."""
        cm = self._read("configmap", client.CoreV1Api(self.api).read_namespaced_config_map, config_map_name(name))
        data = (cm.data if cm is not None else None) or {}
        if not data.get(CONFIG_FILE):
            return None
        return json.loads(data[CONFIG_FILE])

    def job_secret_names(self, job_name: str | None) -> list[str]:
        """The Secrets the trainer container gets its environment from (envFrom), in order."""
        job = self._read("job", client.BatchV1Api(self.api).read_namespaced_job, job_name) if job_name else None
        if job is None:
            return []
        pod_spec = job.spec.template.spec if job.spec is not None else None
        containers = [c for c in (pod_spec.containers if pod_spec is not None else []) if c.name == CONTAINER_NAME]
        return [e.secret_ref.name for c in containers for e in c.env_from or [] if e.secret_ref is not None and e.secret_ref.name]

    def credentials(self, secret: str) -> dict[str, str]:
        """The storage credentials in a Secret, read with the user's own rights. Values are never printed."""
        body = self._read("secret", client.CoreV1Api(self.api).read_namespaced_secret, secret)
        if body is None:
            raise CliError(f'the storage Secret "{secret}" does not exist in namespace "{self.namespace}"')
        data = body.data or {}
        return {k: base64.b64decode(data[k]).decode() for k in CREDENTIAL_KEYS if data.get(k)}
