"""Fingerprints: short stable hashes of what a stage's output depends on (settings, files)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dualist._io.files import jsonable

__all__ = ["fingerprint_obj", "fingerprint_files", "META_FILE"]

META_FILE = "dualist.json"
"""The metadata file of every artifact folder (:mod:`dualist._io.meta`). A folder's fingerprint leaves it
out: it records how and when the folder was made, not what it holds."""


def fingerprint_obj(obj: Any) -> str:
    """A short stable hash of a JSON-able object (a config, a list of ids...).

    Dataclass fields declared with ``opt(..., fingerprint=False)`` (speed or memory settings that
    leave the result unchanged) are left out, and those with ``fingerprint="if-set"`` while they hold
    their default (settings added later, so that older outputs stay valid).
    """
    blob = json.dumps(jsonable(obj, fingerprint=True), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """Hash of the contents of files (or of every file under a directory), order-independent of walk."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.name != META_FILE))
        else:
            files.append(p)
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
