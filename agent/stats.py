"""Summary statistics of latency samples.

Raw samples are what a measurement stores; a :class:`LatencySummary` is
derived from them and can always be recomputed.

Conventions (fixed, so that summaries computed on different devices and
in different releases compare):

* ``std`` is the *sample* standard deviation (``ddof=1``, Bessel's
  correction): the samples are a sample of the latency distribution, not
  the whole of it.  With a single sample it is ``0.0``.
* Percentiles (``median``, ``p90``, ``p99``) use linear interpolation
  between closest ranks, the same as ``numpy.percentile``'s default
  (``method="linear"``).
* ``cv`` is the coefficient of variation ``std / mean`` (unitless; ``0.0``
  when the mean is zero).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Sequence

import numpy as np

__all__ = ["LatencySummary", "summarize"]


@dataclass(frozen=True)
class LatencySummary:
    """Summary of latency samples; every field is in milliseconds except
    ``n`` (sample count) and ``cv`` (unitless ratio)."""

    median: float
    mean: float
    p90: float
    p99: float
    std: float
    min: float
    max: float
    n: int
    cv: float

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"LatencySummary needs n >= 1, got {self.n}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain ``dict`` (JSON-ready) with the same keys as the fields."""
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> LatencySummary:
    """Summarize latency samples given in milliseconds.

    Raises:
        ValueError: if ``samples_ms`` is empty or holds a negative or
            non-finite value.
    """
    values = np.asarray(list(samples_ms), dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot summarize zero latency samples")
    if not np.all(np.isfinite(values)):
        raise ValueError("latency samples must be finite numbers")
    if np.any(values < 0):
        raise ValueError("latency samples must be non-negative")
    n = int(values.size)
    lo, hi = float(values.min()), float(values.max())
    # Clamp guards against a last-ulp rounding excursion of the interpolation.
    median, p90, p99 = (
        min(max(float(v), lo), hi) for v in np.percentile(values, [50.0, 90.0, 99.0])
    )
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    cv = std / mean if mean > 0 and math.isfinite(std) else 0.0
    return LatencySummary(
        median=median,
        mean=mean,
        p90=p90,
        p99=p99,
        std=std,
        min=lo,
        max=hi,
        n=n,
        cv=cv,
    )
