"""The download cache (atomic, validated, one fetch under concurrency) and the retry policy."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from affine import Affine

from imagery.errors import SourceError
from imagery.sources.cache import CorruptPayload, FetchCache, cache_key, validate_raster, write_array_tif
from imagery.sources.retry import (
    RetryPolicy,
    SourceAuthError,
    TransientError,
    backoff_delay,
    call_with_retries,
    raise_for_http,
    retry_after_seconds,
)

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, total_timeout_s=5)


def _write_tile(path: Path) -> None:
    write_array_tif(
        path,
        np.arange(64 * 64, dtype=np.uint16).reshape(64, 64),
        {"crs": "EPSG:32718", "transform": Affine(10, 0, 300000, 0, -10, 8660000)},
    )


def test_key_is_canonical_and_distinguishes_requests() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_second_request_hits_the_cache(tmp_path: Path) -> None:
    cache, calls = FetchCache(tmp_path), []

    def fetch(path: Path) -> None:
        calls.append(path)
        _write_tile(path)

    first = cache.get_or_fetch({"item": "x", "band": "B02"}, fetch)
    second = cache.get_or_fetch({"item": "x", "band": "B02"}, fetch)
    assert first == second and len(calls) == 1
    assert cache.get({"item": "x", "band": "B02"}) == first
    assert list(cache.entries()) == [first]


def test_truncated_payload_is_never_cached(tmp_path: Path) -> None:
    cache = FetchCache(tmp_path)

    def truncated(path: Path) -> None:
        _write_tile(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CorruptPayload, match=r"not a readable raster|expected"):
        cache.get_or_fetch({"item": "y"}, truncated)
    assert cache.get({"item": "y"}) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_wrong_shape_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.tif"
    _write_tile(path)
    validate_raster(path, shape=(64, 64))
    with pytest.raises(CorruptPayload, match="expected 32x64"):
        validate_raster(path, shape=(32, 64))


def _slow_fetch_in_process(root: str, counter: str) -> None:
    def fetch(path: Path) -> None:
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.5)
        _write_tile(path)

    FetchCache(root).get_or_fetch({"item": "shared"}, fetch)


def test_two_processes_fetch_once(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_slow_fetch_in_process, args=(str(tmp_path / "c"), str(counter))) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert counter.read_text() == "x"
    assert FetchCache(tmp_path / "c").get({"item": "shared"}) is not None


def test_transient_faults_are_retried_until_success() -> None:
    outcomes: list[Exception | str] = [
        TransientError("HTTP 500"),
        requests.ConnectionError("reset"),
        requests.Timeout("slow"),
        "ok",
    ]

    def fn() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert call_with_retries(fn, FAST, "GET x") == "ok"
    assert outcomes == []


def test_retries_stop_at_the_attempt_bound_with_one_line() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        raise TransientError("GET http://h/x: HTTP 503")

    with pytest.raises(SourceError, match=r"HTTP 503: gave up after 4 attempt\(s\)") as info:
        call_with_retries(fn, FAST, "GET http://h/x")
    assert len(calls) == 4 and "\n" not in str(info.value)


def test_retries_stop_at_the_total_time_bound() -> None:
    policy = RetryPolicy(max_attempts=100, base_delay_s=0.2, max_delay_s=0.2, total_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(SourceError, match="gave up"):
        call_with_retries(lambda: (_ for _ in ()).throw(TransientError("HTTP 500")), policy, "x")
    assert time.monotonic() - start < 1.0


def test_permanent_faults_are_not_retried() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        raise_for_http(401, {}, "POST http://h/token", "VIGIA_SH_CLIENT_ID / VIGIA_SH_CLIENT_SECRET")

    with pytest.raises(SourceAuthError, match="credentials refused: check VIGIA_SH_CLIENT_ID"):
        call_with_retries(fn, FAST, "token")
    assert len(calls) == 1
    with pytest.raises(SourceError, match="HTTP 404"):
        raise_for_http(404, {}, "GET http://h/x", "s")


def test_retry_after_is_honoured() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({}) is None
    with pytest.raises(TransientError) as info:
        raise_for_http(429, {"Retry-After": "3"}, "GET x", "s")
    assert info.value.retry_after == 3.0
    assert backoff_delay(1, RetryPolicy(max_delay_s=10), 3.0) == 3.0
    assert backoff_delay(1, RetryPolicy(max_delay_s=1), 3.0) == 1.0
    assert 0.25 <= backoff_delay(2, RetryPolicy(base_delay_s=0.25), None) <= 0.5
