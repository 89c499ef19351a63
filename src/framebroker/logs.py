"""Log lines that say which session they are about, as text or as one JSON object per line.

The session comes from a context variable, set by the broker around everything it does for a
session (its lane task, and each call into the worker pool through :func:`in_session`), so a
processor's own ``logging`` calls carry the id without knowing it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import orjson

__all__ = [
    "JsonFormatter",
    "SessionFilter",
    "configure_logging",
    "current_session",
    "in_session",
    "session_var",
]

T = TypeVar("T")

session_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "framebroker_session_id", default=None
)

LogFormat = Literal["text", "json"]
_CHATTY = ("aioice",)
_TEXT = "%(asctime)s %(levelname)s %(name)s%(session_tag)s: %(message)s"
# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "session_id",
    "session_tag",
}


def current_session() -> str | None:
    return session_var.get()


def in_session(sid: str, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``fn(*args)`` as a no-argument call that runs with ``sid`` as the current session,
    for handing to a thread pool (which does not carry context variables over)."""
    ctx = contextvars.copy_context()
    ctx.run(session_var.set, sid)
    return functools.partial(ctx.run, fn, *args)


class SessionFilter(logging.Filter):
    """Adds ``session_id`` (or ``None``) and ``session_tag`` (`` [id]`` or nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        sid = getattr(record, "session_id", None) or session_var.get()
        record.session_id = sid
        record.session_tag = f" [{sid}]" if sid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, session_id, extras, error."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "session_id": getattr(record, "session_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "info", fmt: LogFormat = "text") -> None:
    """Send the process's logs to stderr in ``fmt``, each line with its session."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SessionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aioice logs each ICE candidate pair's state change at INFO: a dozen lines per WebRTC
    # connection that say nothing to an operator unless ICE fails (then it warns).
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # Alembic narrates each migration run ("Context impl ...") at INFO; the store logs one
    # line of its own when it upgrades a database.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
