"""A small async Kubernetes REST client on aiohttp (kopf's own HTTP library).

Credentials come from the official client's config loaders (in-cluster service account, else
KUBECONFIG), so token rotation and kubeconfig variants behave as everywhere else. Bodies are
plain dicts: the operator builds manifests as dicts and reads only a few fields back.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from lft_api import contract

from .metrics import API_REQUESTS, API_SECONDS

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Every create, update and patch names the operator's field manager (managedFields then tell its status writes
# from others') and asks for strict server-side field validation: a field the API server does not know, or one
# given twice, fails the request (400 BadRequest, "strict decoding error: ...") instead of being dropped
# silently, so the object stored is the one the operator built and the admin policy judged (parts of the pod
# template pass through unread: lft_api.pod_types). Every supported version (1.34+) enforces it.
WRITER = {"fieldManager": contract.OPERATOR_FIELD_MANAGER, "fieldValidation": "Strict"}


class NotLeader(Exception):
    """A write refused by the client itself: this replica does not hold the leader Lease (leader.py)."""


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def load_configuration() -> Configuration:
    cfg = Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=cfg)
    except kube_config.ConfigException:
        kube_config.load_kube_config(client_configuration=cfg)
    return cfg


class Kube:
    def __init__(
        self,
        cfg: Configuration,
        connections: int = 32,
        timeout: float = 30.0,
        write_gate: Callable[[], bool] | None = None,
    ):
        self._cfg = cfg
        # Asked before every request but GET: False refuses it (NotLeader), so nothing a replica
        # still had in flight when it lost the leader Lease reaches the API server after that.
        self._write_gate = write_gate
        self._base = cfg.host.rstrip("/")
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls, **kwargs: Any) -> Kube:
        return cls(load_configuration(), **kwargs)

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._base.startswith("https"):
            return False
        if not self._cfg.verify_ssl:
            return False
        ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert)
        if self._cfg.cert_file:
            ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        return ctx

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl())
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        if method != "GET" and self._write_gate is not None and not self._write_gate():
            raise NotLeader(f"{method} {path} refused: this replica is not the leader")
        headers = {"Accept": accept}
        token = self._cfg.get_api_key_with_prefix("authorization") or self._cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        started = time.monotonic()
        async with self._get_session().request(
            method, self._base + path, data=data, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            API_SECONDS.labels(verb=method).observe(time.monotonic() - started)
            API_REQUESTS.labels(verb=method, resource=path_resource(path)).inc()
            payload = json.loads(text) if text else None
            if resp.status >= 400:
                payload = payload if isinstance(payload, dict) else {}
                raise ApiError(resp.status, payload.get("reason") or resp.reason or "", payload.get("message") or text)
            return payload

    async def get(self, path: str, *, accept: str = "application/json") -> Any:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, accept=accept)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list_items(self, path: str, **params: str) -> list[dict[str, Any]]:
        """The items of a collection (one page: the operator's selectors match few objects)."""
        body = await self.request("GET", path, params=params)
        return (body or {}).get("items") or []

    # Writes send WRITER (field manager, strict field validation); a delete has no object to validate.
    async def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, body=body)

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", path, body=body, params=WRITER)

    async def replace(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PUT", path, body=body, params=WRITER)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH, params=WRITER)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Any:
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH, params=WRITER)


# Paths ---------------------------------------------------------------------------------------


def core_path(namespace: str, plural: str, name: str | None = None) -> str:
    return f"/api/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def group_path(group: str, version: str, namespace: str, plural: str, name: str | None = None) -> str:
    return f"/apis/{group}/{version}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


_PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("batch/v1", "Job"): "jobs",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
}


def path_resource(path: str) -> str:
    """What a request path addresses, for the request counter: "jobs", "lorafinetunes/status", "namespaces"."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # after /api/v1 or /apis/<group>/<version>
    if len(rest) >= 2 and rest[0] == "namespaces":
        rest = rest[2:] or ["namespaces"]
    if not rest or not rest[0]:
        return "other"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


def collection_path(manifest: dict[str, Any]) -> str:
    """POST path for a manifest of one of the kinds the operator creates."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    namespace = manifest["metadata"]["namespace"]
    plural = _PLURALS[(api_version, kind)]
    if "/" in api_version:
        group, version = api_version.split("/")
        return group_path(group, version, namespace, plural)
    return core_path(namespace, plural)


def object_path(manifest: dict[str, Any]) -> str:
    return f"{collection_path(manifest)}/{manifest['metadata']['name']}"
