"""URIs and fsspec filesystems: which protocol a URI names, credentials from the environment, and one
shared S3 client per endpoint and credentials."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import StorageSpec

from ..errors import InvalidInput

_PROTOCOL_ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}
_PROTOCOL_PACKAGES = {"gs": "gcsfs", "az": "adlfs"}


# ---------------------------------------------------------------------------------------------
# URIs and filesystems
# ---------------------------------------------------------------------------------------------
def split_uri(uri: str) -> tuple[str, str]:
    """("s3", "bucket/prefix") for s3://bucket/prefix; ("file", "/abs/path") for file:// URIs and paths."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", uri)
    if not m:
        return "file", os.path.abspath(uri)
    proto, rest = m.group(1).lower(), m.group(2)
    proto = _PROTOCOL_ALIASES.get(proto, proto)
    if proto == "file":
        return "file", os.path.abspath(rest or "/")
    return proto, rest.strip("/")


def _s3_credentials(env: Mapping[str, str]) -> dict[str, Any]:
    """Credentials from env: the process environment in the pod (envFrom the storage Secret), the Secret's
    decoded data in the CLI (lft_cli reads it with the user's kube credentials)."""
    key = env.get("AWS_ACCESS_KEY_ID")
    secret = env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return {"key": key, "secret": secret, "token": env.get("AWS_SESSION_TOKEN") or None}
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
        # IRSA / pod identity: botocore's chain reads these variables itself.
        return {}
    raise InvalidInput(
        Reason.MISSING_CREDENTIALS,
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the trainer's environment "
        "(e.g. from the Secret named in the LoRAFineTune's storage settings)",
    )


# S3 clients are costly to build (botocore loads its service model: ~1 s of CPU), so Storage objects
# with the same endpoint and credentials share one. The key holds a hash of the credentials, not them,
# and the pid: a forked child must not reuse its parent's event loop and connections.
_S3_CACHE: dict[tuple, Any] = {}
_S3_CACHE_LOCK = threading.Lock()


def _cache_key(spec: StorageSpec, creds: dict[str, Any]) -> tuple:
    digest = hashlib.sha256(repr(sorted(creds.items())).encode()).hexdigest()
    return os.getpid(), spec.endpoint_url or "", spec.region or "", digest


def make_filesystem(protocol: str, spec: StorageSpec, env: Mapping[str, str] | None = None):
    """An fsspec filesystem for protocol; raises InvalidInput for missing credentials or packages.
    S3 credentials come from env (default: os.environ)."""
    import fsspec

    if protocol == "file":
        return fsspec.filesystem("file", auto_mkdir=True)
    if protocol == "s3":
        creds = _s3_credentials(os.environ if env is None else env)
        key = _cache_key(spec, creds)
        with _S3_CACHE_LOCK:
            fs = _S3_CACHE.get(key)
            if fs is None:
                fs = _S3_CACHE[key] = _make_s3(spec, creds)
        return fs
    try:
        return fsspec.filesystem(protocol)
    except ImportError as exc:
        pkg = _PROTOCOL_PACKAGES.get(protocol, f"the fsspec backend for {protocol}://")
        raise InvalidInput(Reason.UNSUPPORTED_STORAGE, f"{protocol}:// storage needs {pkg}, which is not installed in this image") from exc
    except ValueError as exc:
        raise InvalidInput(Reason.UNSUPPORTED_STORAGE, f"unsupported storage protocol {protocol}://") from exc


def _make_s3(spec: StorageSpec, creds: dict[str, Any]):
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if spec.region:
        client_kwargs["region_name"] = spec.region
    fs = s3fs.S3FileSystem(
        endpoint_url=spec.endpoint_url or None,
        client_kwargs=client_kwargs,
        # One attempt per call at each layer below: RetryPolicy owns backoff and the time budget.
        config_kwargs={"retries": {"total_max_attempts": 1, "mode": "standard"},
                       "connect_timeout": 5, "read_timeout": 60},
        skip_instance_cache=True,
        use_listings_cache=False,
        **creds,
    )
    fs.retries = 1  # s3fs's own retry loop (a class attribute in this version)
    return fs
