"""Object storage for inputs, checkpoints and results, through fsspec.

- s3:// via s3fs (AWS or any S3-compatible endpoint: StorageSpec.endpoint_url/region); credentials come
  only from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or a web
  identity token file), never from the config, and are never logged.
- gs:// and az:// when gcsfs / adlfs are installed (a clear InvalidInput otherwise); file:// and paths.

Every network operation is retried with exponential backoff on transient errors (connection refused or
reset, timeouts, HTTP 5xx, throttling) for a bounded total time (RetryPolicy; default 120 s, env
LFT_STORAGE_RETRY_SECONDS), then raises errors.StorageError. Non-transient errors are not retried:
FileNotFoundError propagates (callers use it for "absent"), anything else becomes StorageError.
Uploads retry file by file, so files already uploaded stay uploaded through an outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from lft_api.contract import FileDigest
from lft_api.spec import StorageSpec

from .errors import InvalidInput, StorageError

log = logging.getLogger("lft_trainer.storage")

T = TypeVar("T")

ENV_RETRY_SECONDS = "LFT_STORAGE_RETRY_SECONDS"
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
                   "AZURE_STORAGE_CONNECTION_STRING", "AZURE_CLIENT_SECRET")

# Reasons of the InvalidInput raised by check_access and credential lookup.
MISSING_CREDENTIALS = "MissingCredentials"
ACCESS_DENIED = "StorageAccessDenied"
BUCKET_NOT_FOUND = "BucketNotFound"
UNREACHABLE = "StorageUnreachable"
UNSUPPORTED = "UnsupportedStorage"

# S3 error codes that mean "try again later" even when the HTTP status is not 5xx.
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "ServiceUnavailable", "PriorRequestNotComplete",
    "TooManyRequestsException", "BandwidthLimitExceeded", "EC2ThrottledException",
}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
_NOT_FOUND_BUCKET_CODES = {"NoSuchBucket"}

_PROTOCOL_ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}
_PROTOCOL_PACKAGES = {"gs": "gcsfs", "az": "adlfs"}


# ---------------------------------------------------------------------------------------------
# retry policy and error classification (pure)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by total time (not by attempt count)."""

    total_seconds: float = 120.0
    initial_delay: float = 0.5
    max_delay: float = 10.0
    multiplier: float = 2.0
    # check_access() gives up sooner: a wrong endpoint must fail the pre-flight in seconds.
    check_seconds: float = 15.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        raw = os.environ.get(ENV_RETRY_SECONDS)
        if not raw:
            return cls()
        try:
            total = float(raw)
        except ValueError:
            log.warning("ignoring %s=%r: not a number", ENV_RETRY_SECONDS, raw)
            return cls()
        return cls(total_seconds=max(0.0, total), check_seconds=min(cls.check_seconds, max(0.0, total)))

    def delay(self, attempt: int) -> float:
        """Sleep before retry number `attempt` (1-based), with +-20% jitter so workers don't sync up."""
        base = min(self.max_delay, self.initial_delay * (self.multiplier ** (attempt - 1)))
        return base * random.uniform(0.8, 1.2)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def client_error_info(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of the botocore ClientError in exc's chain, or None."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            code = str(response["Error"].get("Code") or "")
            if not status and code.isdigit():
                status = int(code)
            return status, code
    return None


def _is_connection_error(e: BaseException) -> bool:
    try:
        import botocore.exceptions as bce

        if isinstance(e, (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError,
                          bce.ResponseStreamingError)):
            return True
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        pass
    try:
        import aiohttp

        if isinstance(e, aiohttp.ClientError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        if isinstance(e, FSTimeoutError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError))


def is_transient(exc: BaseException) -> bool:
    """True when retrying may help: network trouble, timeouts, 5xx, throttling."""
    info = client_error_info(exc)
    if info is not None:
        status, code = info
        return status >= 500 or status == 429 or code in _TRANSIENT_CODES
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        FileExistsError, InvalidInput)):
        return False
    return any(_is_connection_error(e) for e in _chain(exc))


def scrub(text: str) -> str:
    """Remove secret values (from the environment) and URL userinfo from a message."""
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(\w+://)[^/@\s:]+:[^/@\s]+@", r"\1***@", text)


def describe(exc: BaseException) -> str:
    """A short, secret-free description of an exception."""
    info = client_error_info(exc)
    msg = str(exc).strip() or type(exc).__name__
    if info is not None and info[1] and info[1] not in msg:
        msg = f"{info[1]}: {msg}"
    return scrub(f"{type(exc).__name__}: {msg}")[:500]


def retry_call(fn: Callable[[], T], what: str, policy: RetryPolicy, *, total_seconds: float | None = None,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """Call fn until it succeeds, a non-transient error occurs, or the time budget is spent.

    Non-transient errors propagate unchanged; when the budget runs out the last transient error is
    raised as StorageError (with it as __cause__).
    """
    budget = policy.total_seconds if total_seconds is None else total_seconds
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = policy.delay(attempt)
            elapsed = clock() - start
            if elapsed + delay > budget:
                raise StorageError(
                    f"{what}: gave up after {attempt} attempt(s) in {elapsed:.1f}s: {describe(exc)}"
                ) from exc
            log.warning("storage: %s failed (%s); retry %d in %.1fs", what, describe(exc), attempt, delay)
            sleep(delay)


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


def is_remote(uri: str) -> bool:
    return split_uri(uri)[0] != "file"


def _s3_credentials() -> dict[str, Any]:
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return {"key": key, "secret": secret, "token": os.environ.get("AWS_SESSION_TOKEN") or None}
    if os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") and os.environ.get("AWS_ROLE_ARN"):
        # IRSA / pod identity: botocore's chain reads these variables itself.
        return {}
    raise InvalidInput(
        MISSING_CREDENTIALS,
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


def make_filesystem(protocol: str, spec: StorageSpec):
    """An fsspec filesystem for protocol; raises InvalidInput for missing credentials or packages."""
    import fsspec

    if protocol == "file":
        return fsspec.filesystem("file", auto_mkdir=True)
    if protocol == "s3":
        creds = _s3_credentials()
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
        raise InvalidInput(UNSUPPORTED, f"{protocol}:// storage needs {pkg}, which is not installed in this image") from exc
    except ValueError as exc:
        raise InvalidInput(UNSUPPORTED, f"unsupported storage protocol {protocol}://") from exc


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def local_files(local_dir: Path) -> list[Path]:
    """Regular files under local_dir, sorted by relative path (deterministic upload order)."""
    return sorted((p for p in Path(local_dir).rglob("*") if p.is_file()), key=lambda p: p.relative_to(local_dir).as_posix())


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------
class Storage:
    """Files under one base URI (e.g. the run's output prefix). Paths given to methods are relative to it."""

    def __init__(self, base_uri: str, spec: StorageSpec | None = None, retry: RetryPolicy | None = None):
        self.spec = spec or StorageSpec()
        self.retry = retry or RetryPolicy.from_env()
        self.protocol, self.base_path = split_uri(base_uri)
        self.base_uri = self._to_uri(self.base_path)
        self._fs = None

    @classmethod
    def for_uri(cls, uri: str, spec: StorageSpec | None = None, retry: RetryPolicy | None = None) -> Storage:
        return cls(uri, spec, retry)

    def __repr__(self) -> str:
        return f"Storage({self.base_uri!r})"

    # -- paths ----------------------------------------------------------------------------
    def _to_uri(self, path: str) -> str:
        return f"file://{path}" if self.protocol == "file" else f"{self.protocol}://{path}"

    def _path(self, rel: str = "") -> str:
        rel = str(rel).strip("/")
        if not rel:
            return self.base_path
        if ".." in PurePosixPath(rel).parts:
            raise ValueError(f"path {rel!r} escapes {self.base_uri}")
        return f"{self.base_path.rstrip('/')}/{rel}"

    def uri(self, *parts: str) -> str:
        rel = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
        return self._to_uri(self._path(rel))

    @property
    def bucket(self) -> str | None:
        return self.base_path.split("/", 1)[0] if self.protocol != "file" else None

    @property
    def fs(self):
        if self._fs is None:
            self._fs = make_filesystem(self.protocol, self.spec)
        return self._fs

    def _where(self) -> str:
        if self.protocol == "s3" and self.spec.endpoint_url:
            return f"{self.base_uri} (endpoint {scrub(self.spec.endpoint_url)})"
        return self.base_uri

    # -- the retry wrapper ----------------------------------------------------------------
    def _run(self, what: str, fn: Callable[[], T], *, total_seconds: float | None = None) -> T:
        try:
            return retry_call(fn, what, self.retry, total_seconds=total_seconds)
        except (StorageError, InvalidInput, FileNotFoundError):
            raise
        except Exception as exc:  # non-transient: not retried
            raise StorageError(f"{what}: {describe(exc)}") from exc

    # -- operations -----------------------------------------------------------------------
    def upload_file(self, local: str | Path, rel: str) -> None:
        """Upload one file; the remote size is checked, so a cut transfer is retried, not kept."""
        local = Path(local)
        size = local.stat().st_size
        path = self._path(rel)

        def put() -> None:
            if self.protocol == "file":
                _local_copy_atomic(local, Path(path))
                return
            self.fs.put_file(str(local), path)
            remote = self.fs.info(path).get("size")
            if remote is not None and int(remote) != size:
                raise ConnectionError(f"size mismatch after upload: {remote} != {size}")

        self._run(f"upload {self.uri(rel)}", put)

    def upload_dir(self, local_dir: str | Path, rel: str,
                   exclude: Callable[[str], bool] | None = None) -> list[FileDigest]:
        """Upload every file under local_dir to rel/, one by one (each retried); returns name, size, sha256."""
        local_dir = Path(local_dir)
        digests: list[FileDigest] = []
        for p in local_files(local_dir):
            name = p.relative_to(local_dir).as_posix()
            if exclude is not None and exclude(name):
                continue
            digests.append(FileDigest(name=name, size=p.stat().st_size, sha256=sha256_file(p)))
            self.upload_file(p, f"{rel.strip('/')}/{name}" if rel.strip("/") else name)
        return digests

    def download_file(self, rel: str, local: str | Path) -> Path:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        path = self._path(rel)

        def get() -> None:
            tmp = local.with_name(f".{local.name}.part-{uuid.uuid4().hex[:8]}")
            try:
                self.fs.get_file(path, str(tmp))
                os.replace(tmp, local)
            finally:
                if tmp.exists():
                    tmp.unlink()

        self._run(f"download {self.uri(rel)}", get)
        return local

    def list_files(self, rel: str = "") -> dict[str, int]:
        """{relative name: size} of every file under rel (recursive); {} when there is none."""
        root = self._path(rel).rstrip("/")

        def find() -> dict[str, int]:
            try:
                found = self.fs.find(root, detail=True)
            except FileNotFoundError:
                return {}
            out: dict[str, int] = {}
            for full, info in found.items():
                if info.get("type") == "directory":
                    continue
                name = full[len(root):].lstrip("/") if full.startswith(root) else full
                out[name or PurePosixPath(full).name] = int(info.get("size") or 0)
            return out

        return self._run(f"list {self.uri(rel)}", find)

    def download_dir(self, rel: str, local_dir: str | Path) -> Path:
        """Download every file under rel/ into local_dir (created); returns local_dir."""
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        files = self.list_files(rel)
        if not files:
            raise FileNotFoundError(f"no files under {self.uri(rel)}")
        for name in sorted(files):
            self.download_file(f"{rel.strip('/')}/{name}" if rel.strip("/") else name, local_dir / name)
        return local_dir

    def put_json(self, rel: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        path = self._path(rel)

        def put() -> None:
            if self.protocol == "file":
                _local_write_atomic(Path(path), data)
            else:
                self.fs.pipe_file(path, data)

        self._run(f"write {self.uri(rel)}", put)

    def get_bytes(self, rel: str) -> bytes:
        return self._run(f"read {self.uri(rel)}", lambda: self.fs.cat_file(self._path(rel)))

    def get_json(self, rel: str) -> Any:
        """The parsed JSON at rel; FileNotFoundError when absent, ValueError when not JSON."""
        return json.loads(self.get_bytes(rel))

    def exists(self, rel: str = "") -> bool:
        return bool(self._run(f"stat {self.uri(rel)}", lambda: self.fs.exists(self._path(rel))))

    def list_dirs(self, rel: str = "") -> list[str]:
        """Names (not paths) of the immediate subdirectories of rel, sorted; [] when rel is absent."""
        path = self._path(rel).rstrip("/")

        def ls() -> list[str]:
            try:
                entries = self.fs.ls(path, detail=True)
            except FileNotFoundError:
                return []
            return sorted(PurePosixPath(e["name"].rstrip("/")).name for e in entries if e.get("type") == "directory")

        return self._run(f"list {self.uri(rel)}", ls)

    def delete(self, rel: str) -> None:
        """Delete rel (a file or a whole prefix); absent is fine."""
        path = self._path(rel)
        if path.rstrip("/") == self.base_path.rstrip("/"):
            raise ValueError("refusing to delete the storage root")

        def rm() -> None:
            try:
                if self.fs.exists(path):
                    self.fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass

        self._run(f"delete {self.uri(rel)}", rm)

    def open(self, rel: str = "", mode: str = "rb"):
        """An open file object (for streaming reads of inputs). Opening is retried; reading is not."""
        return self._run(f"open {self.uri(rel)}", lambda: self.fs.open(self._path(rel), mode))

    def is_dir(self, rel: str = "") -> bool:
        return bool(self._run(f"stat {self.uri(rel)}", lambda: self.fs.isdir(self._path(rel))))

    # -- pre-flight -----------------------------------------------------------------------
    def check_access(self, write: bool = True, timeout: float | None = None) -> None:
        """Fail fast with InvalidInput when the storage cannot be used.

        Reasons: MissingCredentials, StorageAccessDenied, BucketNotFound, UnsupportedStorage,
        StorageUnreachable (an unusable endpoint). A server that does not answer within the budget
        raises StorageError (retryable) instead. With write=True a probe object is written and deleted under the base URI
        (deleting is needed to rotate checkpoints). Whether the base path exists is not checked (use
        exists() / is_dir(): a missing dataset or model deserves its own reason). Transient errors are retried for at most `timeout`
        seconds (RetryPolicy.check_seconds), then StorageError. Messages name the URI and the
        endpoint, never a credential.
        """
        budget = self.retry.check_seconds if timeout is None else timeout
        _ = self.fs  # credentials / package errors first
        where = self._where()
        try:
            if self.protocol == "s3":
                self._check_s3(write, budget)
            else:
                self._check_generic(write, budget)
        except InvalidInput:
            raise
        except StorageError as exc:
            # Unreachable after the retry budget: retryable (exit 1), not invalid input. A MinIO
            # restarting while the pod starts must not fail the run for good; the operator retries
            # up to runPolicy.backoffLimit with this message.
            raise StorageError(f"{UNREACHABLE}: cannot reach object storage at {where}: {exc}") from exc
        except Exception as exc:
            raise self._access_error(exc, where) from exc

    def _access_error(self, exc: BaseException, where: str) -> InvalidInput:
        info = client_error_info(exc)
        status, code = info if info else (0, "")
        if code in _NOT_FOUND_BUCKET_CODES or (status == 404 and self.protocol == "s3"):
            return InvalidInput(BUCKET_NOT_FOUND, f"bucket {self.bucket!r} does not exist at {where}")
        if status in (401, 403) or code in _DENIED_CODES or isinstance(exc, PermissionError):
            hint = {"InvalidAccessKeyId": "the access key id is not known to the server",
                    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
                    "ExpiredToken": "the session token has expired"}.get(code, "access denied")
            return InvalidInput(ACCESS_DENIED, f"access to {where} refused: {hint} ({describe(exc)})")
        if isinstance(exc, FileNotFoundError):  # e.g. a local volume that is not mounted
            return InvalidInput(BUCKET_NOT_FOUND, f"{where}: not found ({describe(exc)})")
        return InvalidInput(UNREACHABLE, f"cannot use object storage at {where}: {describe(exc)}")

    def _check_s3(self, write: bool, budget: float) -> None:
        bucket, _, prefix = self.base_path.partition("/")
        if not bucket:
            raise InvalidInput(BUCKET_NOT_FOUND, f"no bucket in {self.base_uri}")
        # ListObjectsV2 on the prefix: works with prefix-scoped IAM policies, unlike HeadBucket.
        try:
            retry_call(lambda: self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1),
                       f"list {self.base_uri}", self.retry, total_seconds=budget)
        except PermissionError:
            # A reader may hold s3:GetObject on one input file without s3:ListBucket.
            if write or not prefix:
                raise
            try:
                retry_call(lambda: self.fs.call_s3("head_object", Bucket=bucket, Key=prefix),
                           f"stat {self.base_uri}", self.retry, total_seconds=budget)
            except FileNotFoundError:
                pass  # readable but absent: existence is the caller's question (exists())
        if write:
            self._probe_write(budget)

    def _check_generic(self, write: bool, budget: float) -> None:
        if write:
            if self.protocol == "file":
                os.makedirs(self.base_path, exist_ok=True)
            self._probe_write(budget)
        else:
            # Reaching the store is what is checked; whether the path exists is the caller's question.
            retry_call(lambda: self.fs.exists(self.base_path), f"stat {self.base_uri}", self.retry,
                       total_seconds=budget)

    def _probe_write(self, budget: float) -> None:
        probe = self._path(f".lft-access-check-{uuid.uuid4().hex[:12]}")
        retry_call(lambda: self.fs.pipe_file(probe, b"ok"), f"write {self._to_uri(probe)}", self.retry,
                   total_seconds=budget)
        retry_call(lambda: self.fs.rm(probe), f"delete {self._to_uri(probe)}", self.retry, total_seconds=budget)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _local_write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _local_copy_atomic(src: Path, dst: Path) -> None:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def download(uri: str, local_dir: str | Path, spec: StorageSpec | None = None,
             retry: RetryPolicy | None = None) -> Path:
    """Fetch a file or a directory at an absolute URI into local_dir.

    A directory's files land in local_dir itself (returns local_dir); a single file lands in
    local_dir/<its name> (returns that path). Local paths are returned as they are, without copying.
    """
    protocol, path = split_uri(uri)
    if protocol == "file":
        return Path(path)
    storage = Storage(uri, spec, retry)
    if storage.is_dir():
        return storage.download_dir("", local_dir)
    return storage.download_file("", Path(local_dir) / PurePosixPath(path).name)
