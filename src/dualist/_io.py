"""Small file helpers shared by every stage: atomic writes, fingerprints, artifact metadata, progress.

Files are the interface between stages (DESIGN.md §1). Each artifact directory carries a
``dualist.json`` with the resolved config, the package version and the fingerprints of its inputs,
so a stage can tell whether its output is still valid and skip finished work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "write_json",
    "read_json",
    "fingerprint_files",
    "fingerprint_obj",
    "write_meta",
    "read_meta",
    "META_FILE",
    "progress",
    "progress_enabled",
]

META_FILE = "dualist.json"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Write ``path`` through a temporary file renamed into place, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the artifact the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any, *, fingerprint: bool = False) -> Any:
    """``obj`` as plain JSON values; ``fingerprint=True`` leaves out the dataclass fields that stage
    fingerprints do not count (see :func:`fingerprint_obj`)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name), fingerprint=fingerprint) for f in fields(obj)
                if not fingerprint or _counts(f, obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, fingerprint=fingerprint) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, fingerprint=fingerprint) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def write_json(path: str | Path, obj: Any, *, indent: int = 2) -> None:
    """Atomically write ``obj`` (dataclasses, paths and numpy scalars allowed) as JSON."""
    with atomic_write(path) as fh:
        json.dump(_jsonable(obj), fh, indent=indent, sort_keys=False)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def fingerprint_obj(obj: Any) -> str:
    """A short stable hash of a JSON-able object (a config, a list of ids...).

    Dataclass fields declared with ``opt(..., fingerprint=False)`` (speed or memory settings that
    leave the result unchanged) are left out, and those with ``fingerprint="if-set"`` while they hold
    their default (settings added later, so that older outputs stay valid).
    """
    blob = json.dumps(_jsonable(obj, fingerprint=True), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _counts(f: Any, obj: Any) -> bool:
    """Whether a stage fingerprint counts dataclass field ``f`` of ``obj`` (its ``opt(fingerprint=...)``)."""
    rule = f.metadata.get("fingerprint", True)
    if rule == "if-set":
        return getattr(obj, f.name) != f.default
    return bool(rule)


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


def write_meta(directory: str | Path, *, stage: str, config: Any, inputs: dict[str, str] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``dualist.json`` into an artifact directory: what made it, from what, with which settings."""
    from dualist import __version__

    meta = {
        "stage": stage,
        "dualist_version": __version__,
        "config": _jsonable(config),
        "config_fingerprint": fingerprint_obj(config),
        "inputs": inputs or {},
    }
    if extra:
        meta.update(_jsonable(extra))
    write_json(Path(directory) / META_FILE, meta)
    return meta


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    p = Path(directory) / META_FILE
    return read_json(p) if p.exists() else None


def progress_enabled() -> bool:
    """Progress bars show on a terminal unless ``DUALIST_NO_PROGRESS`` is set."""
    if os.environ.get("DUALIST_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
             disable: bool | None = None, **kwargs: Any):
    """A tqdm bar that stays silent when not on a terminal or when asked (``DUALIST_NO_PROGRESS=1``)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not progress_enabled()
    return tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, **kwargs)
