"""Faults an emulator injects into its next responses, switchable per test, and a request log."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["429", "500", "503", "slow", "truncated", "401", "403", "404"]


@dataclass
class Fault:
    """One kind of failure for requests whose path contains `match` (and whose method is `method`,
    when given); `times` < 0: every such request."""

    kind: FaultKind
    times: int = 1
    match: str = ""
    method: str = ""
    retry_after_s: float = 1.0  # 429/503: the Retry-After header
    delay_s: float = 5.0  # slow: how long the response is held back


@dataclass(frozen=True)
class Seen:
    """A request as the emulator received it."""

    method: str
    path: str
    range: str | None
    fault: str | None


@dataclass
class Faults:
    """Pending faults (first match wins) and every request seen, safe across handler threads."""

    pending: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(
        self, kind: FaultKind, times: int = 1, match: str = "", method: str = "", **options: float
    ) -> Fault:
        """Fail the next `times` matching requests with `kind` (times < 0: all of them)."""
        fault = Fault(kind, times, match, method, **options)
        with self._lock:
            self.pending.append(fault)
        return fault

    def clear(self) -> None:
        """No more faults."""
        with self._lock:
            self.pending.clear()

    def take(self, method: str, path: str, range_header: str | None) -> Fault | None:
        """Record a request and return the fault it suffers, if any."""
        with self._lock:
            fault = next(
                (f for f in self.pending
                 if f.match in path and f.method in ("", method) and f.times != 0),
                None,
            )  # fmt: skip
            if fault is not None and fault.times > 0:
                fault.times -= 1
            self.seen.append(Seen(method, path, range_header, fault.kind if fault else None))
            return fault

    def count(self, match: str = "", fault: str | None = None) -> int:
        """Requests seen whose path contains `match` (and that suffered `fault`, when given)."""
        with self._lock:
            return sum(match in s.path and (fault is None or s.fault == fault) for s in self.seen)

    def reset_log(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self.seen.clear()
