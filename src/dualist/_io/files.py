"""Files every stage writes: atomic writes, JSON (dataclasses, paths and numpy scalars allowed)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import Field, fields, is_dataclass
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json", "read_json", "jsonable", "counts_in_fingerprint"]


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


def jsonable(obj: Any, *, fingerprint: bool = False) -> Any:
    """``obj`` as plain JSON values; ``fingerprint=True`` leaves out the dataclass fields that stage
    fingerprints do not count (see :func:`fingerprint_obj`)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), fingerprint=fingerprint) for f in fields(obj)
                if not fingerprint or counts_in_fingerprint(f, obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v, fingerprint=fingerprint) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, fingerprint=fingerprint) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def counts_in_fingerprint(f: Field, obj: Any) -> bool:
    """Whether a stage fingerprint counts dataclass field ``f`` of ``obj`` (its ``opt(fingerprint=...)``)."""
    rule = f.metadata.get("fingerprint", True)
    if rule == "if-set":
        return getattr(obj, f.name) != f.default
    return bool(rule)


def write_json(path: str | Path, obj: Any, *, indent: int = 2) -> None:
    """Atomically write ``obj`` (dataclasses, paths and numpy scalars allowed) as JSON."""
    with atomic_write(path) as fh:
        json.dump(jsonable(obj), fh, indent=indent, sort_keys=False)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
