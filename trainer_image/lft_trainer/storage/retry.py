"""Retry with backoff and the classification of storage errors (transient or not), with secret scrubbing.

Pure apart from the clock and sleep, which are injectable: unit-tested without a server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import InvalidInput, StorageError
from ..security.scrubbing import scrub

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV_RETRY_SECONDS = "LFT_STORAGE_RETRY_SECONDS"


# S3 error codes that mean "try again later" even when the HTTP status is not 5xx.
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "ServiceUnavailable", "PriorRequestNotComplete",
    "TooManyRequestsException", "BandwidthLimitExceeded", "EC2ThrottledException",
}
DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
NOT_FOUND_BUCKET_CODES = {"NoSuchBucket"}


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

