"""Artifact metadata: the ``dualist.json`` in every artifact folder says what made it, from what, how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualist._io.files import jsonable, read_json, write_json
from dualist._io.fingerprints import META_FILE, fingerprint_obj

__all__ = ["META_FILE", "write_meta", "read_meta"]


def write_meta(directory: str | Path, *, stage: str, config: Any, inputs: dict[str, str] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``dualist.json`` into an artifact directory: what made it, from what, with which settings."""
    from dualist import __version__

    meta = {
        "stage": stage,
        "dualist_version": __version__,
        "config": jsonable(config),
        "config_fingerprint": fingerprint_obj(config),
        "inputs": inputs or {},
    }
    if extra:
        meta.update(jsonable(extra))
    write_json(Path(directory) / META_FILE, meta)
    return meta


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    p = Path(directory) / META_FILE
    return read_json(p) if p.exists() else None
