"""Push the adapter to an OCI registry (output.push.oci) as an ORAS artifact, over the distribution API.

One layer per file of the adapter directory (adapter_config.json, adapter_model.safetensors, the tokenizer's
files...), each with an org.opencontainers.image.title annotation (what lets `oras pull` write it by name), the
empty config (application/vnd.oci.empty.v1+json) and artifactType application/vnd.lft.adapter.v1 in an OCI image
manifest. Blobs the registry has are skipped (HEAD); others are uploaded monolithically (POST, then PUT ?digest=).

Auth: anonymous, Basic, or the bearer-token challenge (WWW-Authenticate: Bearer realm=...,service=...,scope=...),
the token fetched from the realm with the Basic credentials (LFT_OCI_USERNAME / LFT_OCI_PASSWORD) when given.
Transient failures (connection, timeouts, 408/429/5xx) are retried with the storage RetryPolicy, then raise
StorageError (exit 1: the attempt is retried); a refusal (401 after auth, 403, 404, 400...) raises InvalidInput
OciPushFailed (exit 3), naming output.push.oci. Standard library only (urllib).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Optional

from lft_api.conditions import Reason
from lft_api.contract import OciArtifactRef, RunIdentity
from lft_api.oci_spec import (
    ADAPTER_ARTIFACT_TYPE,
    EMPTY_CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    OciPushSpec,
    OciReference,
)
from lft_api.spec import TrainerConfig

from ..errors import InvalidInput
from ..security.scrubbing import scrub
from .retry import RetryPolicy, retry_call

log = logging.getLogger(__name__)

ENV_USERNAME = "LFT_OCI_USERNAME"
ENV_PASSWORD = "LFT_OCI_PASSWORD"
EMPTY_CONFIG = b"{}"
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_CHUNK = 1 << 20
ANNOTATION_PREFIX = "dev.finetune.lft"


class OciTransientError(ConnectionError):
    """A registry answer worth retrying (408, 429, 5xx) or no answer at all: retry.is_transient takes it."""


class OciRefused(Exception):
    """The registry refused a request for good (4xx after auth): retrying cannot help."""

    def __init__(self, what: str, status: int, body: bytes):
        self.status = status
        self.code = _error_code(body)
        super().__init__(f"{what}: HTTP {status}" + (f" {self.code}" if self.code else ""))


# ---------------------------------------------------------------------------------------------
# the artifact (pure)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    path: Optional[Path] = None  # a file's content, or
    data: Optional[bytes] = None  # bytes in memory (the config, the manifest)
    annotations: dict[str, str] = field(default_factory=dict)

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        return {**d, "annotations": self.annotations} if self.annotations else d

    def open(self) -> BinaryIO:
        """The content as a stream (a file is sent in blocks, never read into memory whole)."""
        return io.BytesIO(self.data) if self.data is not None else Path(self.path or "").open("rb")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_blob(path: Path) -> Blob:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return Blob("sha256:" + h.hexdigest(), size, LAYER_MEDIA_TYPE, path=path, annotations={TITLE_ANNOTATION: path.name})


def adapter_layers(adapter_dir: Path) -> list[Blob]:
    """One layer per regular file directly in adapter_dir (sorted by name; hidden files left out)."""
    files = sorted(p for p in adapter_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.name == "adapter_config.json" for p in files):
        raise ValueError(f"{adapter_dir} has no adapter_config.json: not an adapter")
    return [file_blob(p) for p in files]


def empty_config() -> Blob:
    return Blob(sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG), EMPTY_CONFIG_MEDIA_TYPE, data=EMPTY_CONFIG)


def build_manifest(layers: list[Blob], annotations: Mapping[str, str]) -> bytes:
    """The OCI image manifest (artifact form: artifactType, the empty config) as the bytes pushed and digested."""
    config = empty_config()
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ADAPTER_ARTIFACT_TYPE,
        "config": {**config.descriptor(), "data": base64.b64encode(EMPTY_CONFIG).decode()},
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return json.dumps(manifest, separators=(",", ":")).encode()


def adapter_annotations(config: TrainerConfig, identity: RunIdentity, adapter_uri: str, created: str) -> dict[str, str]:
    """The manifest's annotations: when, the base model, the run, where the same adapter is in object storage."""
    run = f"{identity.namespace}/{identity.name}" if identity.name else None
    values = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.description": f"LoRA adapter for {config.model.name}",
        f"{ANNOTATION_PREFIX}.base-model": config.model.name,
        f"{ANNOTATION_PREFIX}.base-model-revision": config.model.revision,
        f"{ANNOTATION_PREFIX}.run": run,
        f"{ANNOTATION_PREFIX}.uid": identity.uid,
        f"{ANNOTATION_PREFIX}.spec-hash": identity.spec_hash,
        f"{ANNOTATION_PREFIX}.adapter-uri": adapter_uri,
    }
    return {k: v for k, v in values.items() if v}


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


def _error_code(body: bytes) -> str:
    """The first code of a distribution-spec error body ({"errors": [{"code": "DENIED", ...}]}), or ''."""
    try:
        errors = json.loads(body or b"{}").get("errors") or []
        return str(errors[0].get("code", "")) if errors else ""
    except (ValueError, AttributeError):
        return ""


# ---------------------------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------------------------
class _NoRedirectForWrites(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if req.get_method() not in ("GET", "HEAD"):
            return None  # a PUT or POST is not replayed elsewhere (it would lose its body and auth)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RegistryClient:
    """The distribution API calls a push needs, for one repository, with auth handled on 401."""

    def __init__(self, ref: OciReference, *, plain_http: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 60.0):
        self.ref = ref
        host = "registry-1.docker.io" if ref.host == "docker.io" else ref.host
        self.base = f"{'http' if plain_http else 'https'}://{host}/v2/{ref.path}"
        self.basic = (base64.b64encode(f"{username}:{password}".encode()).decode()
                      if username and password is not None else None)
        self.auth_header: str | None = None
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirectForWrites)

    # -- HTTP --------------------------------------------------------------------------------
    def _send(self, method: str, url: str, body: bytes | BinaryIO | None, headers: Mapping[str, str],
              auth: str | None) -> tuple[int, Any, bytes]:
        if hasattr(body, "seek"):
            body.seek(0)  # type: ignore[union-attr]  # sent again after a 401
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        if auth:
            req.add_header("Authorization", auth)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()
        except urllib.error.URLError as e:
            raise OciTransientError(f"{method} {url}: {e.reason}") from e

    def request(self, method: str, url: str, body: bytes | BinaryIO | None = None,
                headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> tuple[int, Any, bytes]:
        """One call; on 401, authenticate as the challenge says and call once more. A status outside `ok` (and
        not 404 for a HEAD) raises OciTransientError or OciRefused."""
        headers = headers or {}
        status, resp_headers, data = self._send(method, url, body, headers, self.auth_header)
        if status == 401:
            self.auth_header = self._authenticate(resp_headers.get("WWW-Authenticate", ""))
            status, resp_headers, data = self._send(method, url, body, headers, self.auth_header)
        if status in ok or (method == "HEAD" and status == 404):
            return status, resp_headers, data
        what = f"{method} {urllib.parse.urlsplit(url).path}"
        if status in _TRANSIENT_STATUS:
            raise OciTransientError(f"{what}: HTTP {status}")
        raise OciRefused(what, status, data)

    def _authenticate(self, challenge: str) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.basic is None:
                raise OciRefused(f"the registry asks for credentials ({ENV_USERNAME}/{ENV_PASSWORD})", 401, b"")
            return f"Basic {self.basic}"
        if scheme != "bearer" or "realm" not in params:
            raise OciRefused(f"unsupported authentication challenge {challenge[:100]!r}", 401, b"")
        query = {"service": params.get("service", ""), "scope": f"repository:{self.ref.path}:pull,push"}
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
        status, _, data = self._send("GET", url, None, {}, f"Basic {self.basic}" if self.basic else None)
        if status in _TRANSIENT_STATUS:
            raise OciTransientError(f"token service: HTTP {status}")
        if status != 200:
            raise OciRefused("token service", status, data)
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise OciRefused("token service: no token in the answer", status, b"")
        return f"Bearer {token}"

    # -- the distribution API ----------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"{self.base}/blobs/{digest}")
        return status == 200

    def upload_blob(self, blob: Blob) -> None:
        """Monolithic upload: POST opens an upload session, PUT <location>?digest= sends the whole blob."""
        _, headers, _ = self.request("POST", f"{self.base}/blobs/uploads/", body=b"", ok=(202,),
                                     headers={"Content-Length": "0"})
        location = urllib.parse.urljoin(self.base + "/", headers.get("Location", ""))
        sep = "&" if urllib.parse.urlsplit(location).query else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(blob.digest)}"
        with blob.open() as body:
            self.request("PUT", url, body=body, ok=(201,),
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)})

    def put_manifest(self, tag: str, manifest: bytes) -> str:
        digest = sha256_digest(manifest)
        _, headers, _ = self.request("PUT", f"{self.base}/manifests/{tag}", body=manifest, ok=(201,),
                                     headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        answered = headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise OciRefused(f"manifest digest mismatch (registry says {answered}, pushed {digest})", 201, b"")
        return digest


# ---------------------------------------------------------------------------------------------
# the push
# ---------------------------------------------------------------------------------------------
def push_adapter(adapter_dir: Path, spec: OciPushSpec, name: str | None, annotations: Mapping[str, str],
                 env: Mapping[str, str], policy: RetryPolicy | None = None,
                 client: RegistryClient | None = None) -> OciArtifactRef:
    """Push adapter_dir's files as an artifact tagged spec.tag (default: `name`); each call retried on
    transient errors. Raises InvalidInput (OciPushFailed) on a refusal, StorageError when retries run out."""
    policy = policy or RetryPolicy.from_env()
    ref = OciReference.parse(spec.repository)
    reference = spec.reference(name)
    tag = reference.rsplit(":", 1)[1]
    client = client or RegistryClient(ref, plain_http=spec.plain_http, username=env.get(ENV_USERNAME),
                                      password=env.get(ENV_PASSWORD))
    layers = adapter_layers(adapter_dir)
    try:
        for blob in [empty_config(), *layers]:
            if not retry_call(lambda b=blob: client.has_blob(b.digest), f"oci HEAD {blob.digest[:19]}", policy):
                retry_call(lambda b=blob: client.upload_blob(b), f"oci upload {blob.digest[:19]}", policy)
        manifest = build_manifest(layers, annotations)
        digest = retry_call(lambda: client.put_manifest(tag, manifest), f"oci manifest {reference}", policy)
    except OciRefused as e:
        hint = " (check output.push.oci.credentialsSecretRef)" if e.status in (401, 403) else ""
        raise InvalidInput(Reason.OCI_PUSH_FAILED, scrub(f"pushing the adapter to {reference}: {e}{hint}"),
                           field="output.push.oci") from e
    log.info("pushed the adapter (%d files) to %s@%s", len(layers), reference, digest)
    return OciArtifactRef(reference=reference, digest=digest)
