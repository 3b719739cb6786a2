"""Retries for remote sources: exponential backoff with jitter, Retry-After, a bound on total time.

Transient faults (429, 5xx, connection errors, timeouts, truncated payloads) are retried; bad
credentials (401/403) end at once with one line naming the setting to fix; anything else that is
permanent (404, a bad request) ends at once with one line naming the URL.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests
from pydantic import BaseModel, Field

from imagery.errors import SourceError

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How long and how often a remote request is tried."""

    max_attempts: int = Field(6, ge=1, description="Tries per request, the first included.")
    base_delay_s: float = Field(0.5, ge=0, description="First backoff; doubles per attempt.")
    max_delay_s: float = Field(30.0, ge=0, description="Longest single wait (Retry-After included).")
    total_timeout_s: float = Field(300.0, gt=0, description="Give up once this much time has passed.")
    request_timeout_s: float = Field(60.0, gt=0, description="Connect/read timeout of one request.")


class SourceAuthError(SourceError):
    """The source refused the credentials: retrying cannot help."""


class TransientError(Exception):
    """A fault worth retrying; `retry_after` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header as seconds (delta-seconds or HTTP date), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def http_fault(status: int, headers: Mapping[str, str], what: str, setting: str) -> Exception | None:
    """The fault an HTTP status means: TransientError / SourceAuthError / SourceError; None on success."""
    if status < 400:
        return None
    if status in (401, 403):
        return SourceAuthError(f"{what}: HTTP {status}, credentials refused: check {setting}")
    if status == 429 or status >= 500 or status == 408:
        return TransientError(f"{what}: HTTP {status}", retry_after_seconds(headers))
    return SourceError(f"{what}: HTTP {status}")


def raise_for_http(status: int, headers: Mapping[str, str], what: str, setting: str) -> None:
    """Raise the fault an HTTP status means (see `http_fault`); return on success."""
    fault = http_fault(status, headers, what, setting)
    if fault is not None:
        raise fault


def backoff_delay(attempt: int, policy: RetryPolicy, retry_after: float | None) -> float:
    """Wait before try `attempt + 1`: the server's Retry-After, else base * 2^(attempt-1) with jitter."""
    if retry_after is not None:
        return min(retry_after, policy.max_delay_s)
    delay = policy.base_delay_s * 2 ** (attempt - 1)
    return min(delay * random.uniform(0.5, 1.0), policy.max_delay_s)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """`fn()`, retried on TransientError and requests' connection errors/timeouts within `policy`."""
    start = time.monotonic()
    last = ""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return fn()
        except TransientError as exc:
            last, retry_after = str(exc), exc.retry_after
        except (requests.ConnectionError, requests.Timeout) as exc:
            last, retry_after = f"{what}: {type(exc).__name__}", None
        if attempt == policy.max_attempts:
            break
        delay = backoff_delay(attempt, policy, retry_after)
        if time.monotonic() - start + delay > policy.total_timeout_s:
            break
        time.sleep(delay)
    elapsed = time.monotonic() - start
    raise SourceError(f"{last or what}: gave up after {attempt} attempt(s) in {elapsed:.1f} s")


def http_session(user_agent: str = "vigia") -> requests.Session:
    """A requests session for catalogue/API calls (retries are ours, not urllib3's)."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    return session
