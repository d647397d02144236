"""Checks of what a user passes, run where it enters: before any work, before anything is written.

Each check raises :class:`~dualist.errors.ConfigError` (a value) or :class:`~dualist.errors.DataError`
(a file) naming the option, what is wrong and how to fix it, so the CLI prints one line instead of a
traceback. The command-line dataclasses call :func:`at_least` from ``__post_init__``; the subcommands
call the path checks on their inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dualist.errors import ConfigError, DataError

__all__ = ["flag", "at_least", "fraction", "input_file", "input_dir", "output_file", "output_dir",
           "check_config_keys"]


def flag(name: str) -> str:
    """The command-line spelling of a config field: ``dev_depth`` -> ``--dev-depth``."""
    return "--" + name.replace("_", "-")


def at_least(cfg: Any, minimum: int, *names: str) -> None:
    """Every field ``names`` of ``cfg`` is an integer >= ``minimum``."""
    for name in names:
        value = getattr(cfg, name)
        if value < minimum:
            what = "a positive integer" if minimum == 1 else f"at least {minimum}"
            raise ConfigError(f"{flag(name)} must be {what}, got {value}")


def fraction(value: float, name: str, *, closed: bool = False) -> None:
    """``value`` lies in [0, 1) (or [0, 1] with ``closed``)."""
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ConfigError(f"{flag(name)} must be in {interval}, got {value}")


def input_file(path: str | Path, option: str, what: str) -> Path:
    """An existing regular file; ``what`` says what it should be and where it comes from."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{option}: is a directory, expected {what}", path=p)
    if not p.is_file():
        raise DataError(f"{option}: file not found; expected {what}", path=p)
    return p


def input_dir(path: str | Path, option: str, what: str) -> Path:
    """An existing directory."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{option}: {'not a directory' if p.exists() else 'folder not found'}; expected {what}",
                        path=p)
    return p


def output_file(path: str | Path, option: str = "--out") -> Path:
    """A file that can be written: not an existing directory, and not below an existing file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p} is a directory; give a file path, e.g. {p / 'run.trec'}")
    _parent_is_creatable(p, option)
    return p


def output_dir(path: str | Path, option: str = "--out") -> Path:
    """A folder that can be created or reused: not an existing file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p} is a file; give a folder path (it is created when missing)")
    _parent_is_creatable(p, option)
    return p


def _parent_is_creatable(p: Path, option: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {p}: {parent} is a file, so nothing can be written below it")
            return


def check_config_keys(data: Mapping[str, Any], classes: Iterable[tuple[type, str | None]], *,
                      where: str, ignore: Iterable[str] = ("dualist_version",)) -> None:
    """Refuse YAML keys that no config of the subcommand reads (a misspelling would be ignored).

    ``classes``: (config dataclass, YAML section or None). A field may sit at the top level or, for a
    sectioned class, inside its section mapping (``model: {num_layers: 3}``).
    """
    classes = list(classes)
    top = {f.name for cls, _ in classes for f in dataclasses.fields(cls)} | set(ignore)
    sections = {section: {f.name for f in dataclasses.fields(cls)} for cls, section in classes if section}
    problems = []
    for key, value in data.items():
        if key in sections and isinstance(value, Mapping):
            problems += [(f"{key}.{k}", sorted(sections[key])) for k in value if k not in sections[key]]
        elif key not in top:
            problems.append((key, sorted(top | set(sections))))
    if problems:
        lines = []
        for key, known in problems:
            close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
            lines.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(lines)}; this subcommand reads: "
                          f"{', '.join(sorted(top - set(ignore)))}"
                          + "".join(f"; {s}: {', '.join(sorted(k))}" for s, k in sections.items()))
