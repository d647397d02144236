"""Resume markers: how a stage knows that its output is finished, stale, or half made.

A finished output carries a ``.done.json`` marker holding the fingerprint of everything it depends
on (inputs, settings, version). A training stage also writes ``.started.json`` when it starts, so a
rerun with the same fingerprint resumes its checkpoints; what a rerun with other settings does is the
stage's ``resume`` setting (start over, or let the trainer refuse it and put the markers back).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from dualist._io import read_json, write_json

__all__ = ["marker_path", "is_done", "clear_done", "mark_done", "start", "finished_model", "snapshot", "restore"]

logger = logging.getLogger(__name__)


def marker_path(out: str | Path) -> Path:
    """The ``.done.json`` marker of an output file or directory."""
    out = Path(out)
    return out / ".done.json" if out.is_dir() or not out.suffix else out.with_name(out.name + ".done.json")


def is_done(out: str | Path, fingerprint: str) -> bool:
    """True when ``out`` exists and its marker carries ``fingerprint``."""
    out, m = Path(out), marker_path(out)
    if not (out.exists() and m.exists()):
        return False
    try:
        return read_json(m).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def clear_done(out: str | Path) -> None:
    """Remove the marker of ``out``: call it before a stage starts rewriting ``out``.

    Otherwise a run with other settings that replaced the outputs and was killed before writing its
    own marker would leave the old marker behind, and switching the settings back would take the
    replaced (or deleted) outputs for finished work.
    """
    marker_path(out).unlink(missing_ok=True)


def mark_done(out: str | Path, fingerprint: str, **info: Any) -> None:
    """Write the marker of a finished ``out``: its fingerprint, the version and ``info``."""
    from dualist import __version__

    write_json(marker_path(out), {"fingerprint": fingerprint, "dualist_version": __version__,
                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})


def start(out: Path, fingerprint: str) -> bool:
    """Note that a training stage starts in ``out``; True when a partial run with the same fingerprint can resume.

    A partial run made with other settings is not resumed (its checkpoints would be refused): the
    stage starts over, which the trainer does by replacing the old outputs.
    """
    clear_done(out)
    started = out / ".started.json"
    same = (out / "checkpoints").exists() and started.exists() and read_json(started).get("fingerprint") == fingerprint
    write_json(started, {"fingerprint": fingerprint})
    return same


def finished_model(out: Path, fingerprint: str) -> Path | None:
    """The model a finished training stage saved in ``out``, or None when the stage must run.

    The marker alone is not enough: a work folder left by an older dualist can carry a valid marker
    beside a model that a killed rerun deleted.
    """
    if not is_done(out, fingerprint):
        return None
    path = out / read_json(marker_path(out))["model_path"]  # relative to out (older markers: absolute)
    if not path.is_dir():
        logger.warning("%s is marked finished but its model %s is missing; training again", out, path)
        return None
    return path


def snapshot(out: Path) -> dict[str, tuple[bytes, int, int] | None]:
    """The markers of a training folder as they are (content and times), for :func:`restore` when a start
    is refused."""
    saved: dict[str, tuple[bytes, int, int] | None] = {}
    for name in (".done.json", ".started.json"):
        p = out / name
        saved[name] = (p.read_bytes(), p.stat().st_atime_ns, p.stat().st_mtime_ns) if p.is_file() else None
    return saved


def restore(out: Path, saved: dict[str, tuple[bytes, int, int] | None]) -> None:
    """Put back the markers :func:`snapshot` saw: a refused rerun leaves the earlier run as it was."""
    import os

    for name, was in saved.items():
        p = out / name
        if was is None:
            p.unlink(missing_ok=True)
        else:
            p.write_bytes(was[0])
            os.utime(p, ns=(was[1], was[2]))
