"""Wall-clock seconds per pipeline stage, so a run (or the benchmark harness) can say where time went."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

#: Stage names, in pipeline order.
READ = "read+mask+composite"
COREG = "co-registration"
CHANGE = "normalisation+change"
MOSAIC = "mosaic write"
HOTSPOTS = "hotspots"
METADATA = "metadata+report"
STAGES = (READ, COREG, CHANGE, MOSAIC, HOTSPOTS, METADATA)


class StageClock:
    """Accumulates seconds per stage name; safe to share between threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block and add it to `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add({name: time.perf_counter() - start})

    def add(self, seconds: Mapping[str, float]) -> None:
        """Add other stage seconds (e.g. from a tile) to this clock."""
        with self._lock:
            for name, value in seconds.items():
                self.seconds[name] = self.seconds.get(name, 0.0) + float(value)
