"""Progress bars for long work: tqdm, silent when not on a terminal or when asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["progress", "progress_enabled"]


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
