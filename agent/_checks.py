"""Type and range checks shared by the agent's frozen settings dataclasses.

Each raises ValueError naming ``<Class>.<field>``, the rule and the value, so a
bad job or flag says which field to fix.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

__all__ = ["require_finite", "require_ints"]


def _bound(at_least: Optional[float]) -> str:
    return "" if at_least is None else f" >= {at_least}"


def require_ints(owner: object, names: Iterable[str], at_least: Optional[int] = None) -> None:
    """Each named field of ``owner`` is an int (not a bool), and ``>= at_least`` when given."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or (at_least is not None and value < at_least):
            raise ValueError(f"{type(owner).__name__}.{name} must be an int{_bound(at_least)}, got {value!r}")


def require_finite(owner: object, names: Iterable[str], at_least: Optional[float] = None) -> None:
    """Each named field of ``owner`` is a finite int or float (not a bool), and ``>= at_least`` when given."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (at_least is not None and value < at_least):
            raise ValueError(
                f"{type(owner).__name__}.{name} must be a finite number{_bound(at_least)}, got {value!r}")
