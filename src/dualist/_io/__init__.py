"""Small file helpers shared by every stage, one module per concern.

- :mod:`~dualist._io.files` — atomic writes and JSON;
- :mod:`~dualist._io.fingerprints` — stable hashes of settings and files (what stage markers hold);
- :mod:`~dualist._io.meta` — the ``dualist.json`` that every artifact folder carries;
- :mod:`~dualist._io.progress` — progress bars.

Files are the interface between stages (docs/architecture.md): each artifact directory carries a
``dualist.json`` with the resolved config, the package version and the fingerprints of its inputs,
so a stage can tell whether its output is still valid and skip finished work.
"""

from __future__ import annotations

from dualist._io.files import atomic_write, jsonable, read_json, write_json
from dualist._io.fingerprints import fingerprint_files, fingerprint_obj
from dualist._io.meta import META_FILE, read_meta, write_meta
from dualist._io.progress import progress, progress_enabled

__all__ = [
    "atomic_write",
    "write_json",
    "read_json",
    "jsonable",
    "fingerprint_files",
    "fingerprint_obj",
    "write_meta",
    "read_meta",
    "META_FILE",
    "progress",
    "progress_enabled",
]
