"""What the cluster tests share: waiting for a condition, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 5.0, what: str = ""
) -> float:
    """Poll ``check`` until it is true; returns the seconds it took. Fails the test with
    ``what`` after ``timeout_s``."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what or check}")
        await asyncio.sleep(0.02)
