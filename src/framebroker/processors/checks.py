"""Argument and state checks shared by the counting processors: numbers, zones, days."""

from __future__ import annotations

import math
from datetime import date
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["is_count", "is_number", "parse_day", "parse_zone"]


def is_number(value: Any) -> TypeGuard[float]:
    """A finite int or float, and not a bool (JSON true is not 1 here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
