"""Digests that key data the code made (cached tiles, kept looks): of the package's source and of values."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import imagery


@cache
def pixel_code_digest() -> str:
    """SHA-256 over the package's source: new code never reuses data made by the old (safe, if eager)."""
    digest = hashlib.sha256(imagery.__version__.encode())
    root = Path(imagery.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 of `value` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
