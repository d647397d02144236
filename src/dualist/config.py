"""Typed dataclass configs, loadable from YAML with command-line overrides.

A subcommand declares which config dataclasses it takes; each field becomes a ``--flag`` whose
``--help`` shows its description, its default and (for ``Literal`` fields) its choices. Precedence:
dataclass default < YAML file (``--config``) < explicit flag. The resolved config is written next
to every artifact (see :func:`dualist._io.write_meta`).

Field descriptions live in ``field(metadata={"help": ...})``; use :func:`opt` for brevity.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from dualist.errors import ConfigError

__all__ = ["opt", "add_config_args", "config_from_args", "load_yaml", "config_from_dict", "to_dict"]

T = TypeVar("T")


def opt(default: Any, help: str, *, fingerprint: bool | Literal["if-set"] = True,
        **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a description for ``--help``.

    ``fingerprint`` says what stage fingerprints (:func:`dualist._io.fingerprint_obj`) make of it:
    ``False`` for a setting that changes how a result is computed (speed, memory) but not the result,
    so toggling it never invalidates finished outputs; ``"if-set"`` for a setting added after outputs
    existed, counted only when it differs from its default, so upgrading keeps those outputs.
    """
    metadata = {"help": help} if fingerprint is True else {"help": help, "fingerprint": fingerprint}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a YAML/CLI value to the field's type, with an error that names the field."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional or value is None:
            return None
    origin = get_origin(base)
    try:
        if origin is Literal:
            choices = get_args(base)
            if value not in choices:
                # YAML may give 1 for "1"; compare as strings too.
                match = [c for c in choices if str(c) == str(value)]
                if not match:
                    raise ConfigError(f"{name}: {value!r} is not one of {list(choices)}")
                return match[0]
            return value
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        if origin in (list, tuple):
            (item,) = get_args(base)[:1] or (str,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            return [_coerce(v, item, name) for v in value]
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
            return base(value)
        if base is Path:
            return Path(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: cannot read {value!r} as {getattr(base, '__name__', base)}") from exc
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with the list of known ones."""
    data = dict(data or {})
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known keys: {names}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                    exclude: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` to ``parser`` (defaults shown in help)."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        tp = hints[f.name]
        base, optional = _unwrap_optional(tp)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
            kwargs["metavar"] = "{" + ",".join(map(str, get_args(base))) + "}"
            kwargs["type"] = type(get_args(base)[0])
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) in (list, tuple):
            kwargs["type"] = str
            kwargs["metavar"] = "A,B,..."
        else:
            kwargs["type"] = str if optional else base
            kwargs["metavar"] = getattr(base, "__name__", "VALUE").upper()
        shown = "none" if default is None else (",".join(map(str, default)) if isinstance(default, list)
                                                 else default)
        if shown == "":
            shown = "none"
        kwargs["help"] = help_text if "(default" in help_text else f"{help_text} (default: {shown})".strip()
        group.add_argument(_flag(f.name), **kwargs)


def config_from_args(cls: type[T], args: argparse.Namespace, yaml_data: dict[str, Any] | None = None,
                     *, section: str | None = None) -> T:
    """Resolve ``cls`` from defaults, then the YAML (its ``section`` or top-level keys), then flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    data: dict[str, Any] = {}
    if yaml_data:
        src = yaml_data.get(section, {}) if section and isinstance(yaml_data.get(section), dict) else yaml_data
        # A section (a mapping) never fills a scalar field of the same name at the top level.
        data.update({k: v for k, v in src.items() if k in names and not isinstance(v, dict)})
    data.update({k: v for k, v in vars(args).items() if k in names})
    return config_from_dict(cls, data, where=section or cls.__name__)
