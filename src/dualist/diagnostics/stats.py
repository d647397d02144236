"""Summary statistics shared by the diagnostics and the report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["describe"]


def describe(values: Iterable[float] | Mapping[Any, float] | np.ndarray) -> dict[str, float]:
    """Mean, median, 10th and 90th percentile (linear interpolation) and count of ``values``.

    A mapping is summarized over its values (so a per-query dict works as is). NaN marks a
    missing value and is left out; an empty input gives ``n = 0`` and NaN statistics.

    >>> d = describe([1.0, 2.0, 3.0, 4.0, float("nan")])
    >>> {k: round(v, 3) for k, v in d.items()}
    {'mean': 2.5, 'median': 2.5, 'p10': 1.3, 'p90': 3.7, 'n': 4}
    >>> describe({})["n"]
    0
    """
    if isinstance(values, Mapping):
        values = list(values.values())
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "p10": nan, "p90": nan, "n": 0}
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {
        "mean": float(arr.mean()),
        "median": float(p50),
        "p10": float(p10),
        "p90": float(p90),
        "n": int(arr.size),
    }
