"""Argument and state checks shared by the processors: numbers in a range, zones, days.

Each raises ``ValueError`` naming the argument, what it expected and what it got, which the
registry turns into a load error naming the processor.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["integer_in", "is_count", "is_number", "number_in", "parse_day", "parse_zone"]


def is_number(value: Any) -> TypeGuard[float]:
    """A finite int or float, and not a bool (JSON true is not 1 here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def number_in(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    ok = is_number(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{lo}, {hi}], got {value!r}")
    return float(value)


def integer_in(name: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]`` (no upper bound without ``hi``)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not (whole and value >= lo and (hi is None or value <= hi)):
        span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {span}, got {value!r}")
    return int(value)


def parse_zone(name: Any) -> ZoneInfo:
    """An IANA time zone; raises ``ValueError`` naming what was given."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be an IANA name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone must be an IANA name such as 'Europe/Berlin', got {name!r}"
        ) from None


def parse_day(value: Any, what: str) -> date:
    """A ``YYYY-MM-DD`` date; raises ``ValueError`` naming ``what`` and the value."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a date 'YYYY-MM-DD', got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} must be a date 'YYYY-MM-DD', got {value!r}") from None
