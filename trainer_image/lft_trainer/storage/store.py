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

Nothing is written that holds a secret of the pod (secret_scan.py): upload_file, upload_dir and put_json, the
only writes, search the bytes first and raise InvalidInput SecretInOutput without writing; upload_dir checks
every file before it uploads any. open() reads only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from lft_api.conditions import Reason
from lft_api.contract import FileDigest
from lft_api.spec import StorageSpec

from ..errors import InvalidInput, StorageError
from ..security import secret_scan
from .filesystems import make_filesystem, split_uri
from .retry import DENIED_CODES, NOT_FOUND_BUCKET_CODES, RetryPolicy, T, client_error_info, describe, retry_call, scrub

log = logging.getLogger(__name__)



def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def mismatches(local_dir: Path, files: list[FileDigest]) -> list[str]:
    """What in local_dir differs from files (a manifest): '<name>: missing', size or sha256. Empty when all match."""
    problems: list[str] = []
    for f in files:
        p = Path(local_dir) / f.name
        if not p.is_file():
            problems.append(f"{f.name}: missing")
        elif p.stat().st_size != f.size:
            problems.append(f"{f.name}: size {p.stat().st_size} != {f.size}")
        elif sha256_file(p) != f.sha256:
            problems.append(f"{f.name}: sha256 mismatch")
    return problems


def local_files(local_dir: Path) -> list[Path]:
    """Regular files under local_dir, sorted by relative path (deterministic upload order)."""
    return sorted((p for p in Path(local_dir).rglob("*") if p.is_file()), key=lambda p: p.relative_to(local_dir).as_posix())


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------
class Storage:
    """Files under one base URI (e.g. the run's output prefix). Paths given to methods are relative to it."""

    def __init__(self, base_uri: str, spec: StorageSpec | None = None, retry: RetryPolicy | None = None,
                 env: Mapping[str, str] | None = None):
        """env: where S3 credentials are read (AWS_ACCESS_KEY_ID, ...); default the process environment."""
        self.spec = spec or StorageSpec()
        self.env = env
        self.retry = retry or RetryPolicy.from_env()
        self.protocol, self.base_path = split_uri(base_uri)
        self.base_uri = self._to_uri(self.base_path)
        self._fs = None

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
            self._fs = make_filesystem(self.protocol, self.spec, self.env)
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
        """Upload one file, unless it holds a secret (InvalidInput SecretInOutput, nothing written); the remote
        size is checked, so a cut transfer is retried, not kept."""
        local = Path(local)
        if getattr(_checked, "files", {}).get(local) != _stat_key(local):
            secret_scan.check_file(local, rel.strip("/"))
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
        """Upload every file under local_dir to rel/, one by one (each retried); returns name, size, sha256.
        Every file is checked for secrets first: when one holds a secret, none is uploaded."""
        local_dir = Path(local_dir)
        forms = secret_scan.patterns()
        chosen: list[tuple[Path, str, FileDigest]] = []
        checked: dict[Path, tuple[int, int, int]] = {}
        for p in local_files(local_dir):
            name = p.relative_to(local_dir).as_posix()
            if exclude is not None and exclude(name):
                continue
            target = f"{rel.strip('/')}/{name}" if rel.strip("/") else name
            checked[p] = _stat_key(p)  # before the read: a file changed meanwhile is checked again
            h = hashlib.sha256()  # in the same read as the check
            secret_scan.check_file(p, target, forms, on_chunk=h.update)
            chosen.append((p, target, FileDigest(name=name, size=p.stat().st_size, sha256=h.hexdigest())))
        _checked.files = checked
        try:
            for p, target, _ in chosen:
                self.upload_file(p, target)
        finally:
            _checked.files = {}
        return [digest for _, _, digest in chosen]

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
        """Download every file under rel/ into local_dir (created); returns local_dir. Object names that would
        land outside local_dir (a valid S3 key like `model/../../x`) are refused before anything is written."""
        local_dir = Path(local_dir)
        files = self.list_files(rel)
        if not files:
            raise FileNotFoundError(f"no files under {self.uri(rel)}")
        outside = sorted(n for n in files if n.startswith("/") or ".." in PurePosixPath(n).parts)
        if outside:
            raise InvalidInput(Reason.UNSAFE_OBJECT_NAME, f"refusing to download {self.uri(rel)}: object names leave the "
                               f"directory: {', '.join(outside[:5])}", file=self.uri(rel))
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            self.download_file(f"{rel.strip('/')}/{name}" if rel.strip("/") else name, local_dir / name)
        return local_dir

    def put_json(self, rel: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        secret_scan.check_bytes(data, rel.strip("/"))
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
        """An open file object (for streaming reads of inputs). Opening is retried; reading is not.
        Reads only: a write would pass by the secret check of the uploads."""
        if set(mode) & set("wax+"):
            raise ValueError(f"Storage.open reads only (mode {mode!r}): write with upload_file or put_json")
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
            raise StorageError(f"{Reason.STORAGE_UNREACHABLE}: cannot reach object storage at {where}: {exc}") from exc
        except Exception as exc:
            raise self._access_error(exc, where) from exc

    def _access_error(self, exc: BaseException, where: str) -> InvalidInput:
        info = client_error_info(exc)
        status, code = info if info else (0, "")
        if code in NOT_FOUND_BUCKET_CODES or (status == 404 and self.protocol == "s3"):
            return InvalidInput(Reason.BUCKET_NOT_FOUND, f"bucket {self.bucket!r} does not exist at {where}")
        if status in (401, 403) or code in DENIED_CODES or isinstance(exc, PermissionError):
            hint = {"InvalidAccessKeyId": "the access key id is not known to the server",
                    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
                    "ExpiredToken": "the session token has expired"}.get(code, "access denied")
            return InvalidInput(Reason.STORAGE_ACCESS_DENIED, f"access to {where} refused: {hint} ({describe(exc)})")
        if isinstance(exc, FileNotFoundError):  # e.g. a local volume that is not mounted
            return InvalidInput(Reason.BUCKET_NOT_FOUND, f"{where}: not found ({describe(exc)})")
        return InvalidInput(Reason.STORAGE_UNREACHABLE, f"cannot use object storage at {where}: {describe(exc)}")

    def _check_s3(self, write: bool, budget: float) -> None:
        bucket, _, prefix = self.base_path.partition("/")
        if not bucket:
            raise InvalidInput(Reason.BUCKET_NOT_FOUND, f"no bucket in {self.base_uri}")
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
# The files upload_dir has just checked, per thread (the checkpoint uploader and the history writer share
# a Storage), with _stat_key: upload_file does not read them for the check a second time.
_checked = threading.local()


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


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
