"""What crosses the relay between nodes: the calls a node makes to a session's owner, their
answers and their errors, as versioned JSON.

A relayed call is ``POST /relay/v2/<op>`` with a JSON object body; the answer is a JSON object,
``{"ok": <result>}`` or ``{"error": {...}}``. Errors travel as the class name of a
:class:`~framebroker.errors.FramebrokerError` with its message, field and own attributes, and
come back as that very class, so a transport on the receiving node answers a relayed
``SessionNotFound`` or ``FrameRateExceeded`` exactly as the owner would have (the client sees
one server). A name this version does not know becomes a plain ``FramebrokerError`` (500)
and is counted: a node of a newer framebroker can add errors without crashing an older one.

The version is in the path, so an old node's call to a new one (or the reverse) is refused
as a whole (``relay_version``), never half understood.

Calls are authenticated with a token derived from the cluster's shared ``SECRET_KEY`` and
its name (HMAC-SHA256): the secret itself never crosses the network, and two clusters
sharing one secret by accident still refuse each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import Any

import orjson

from .. import errors as errors_module
from ..errors import FramebrokerError
from ..sessions import SessionInfo, SessionSummary

__all__ = [
    "PATH_PREFIX",
    "VERSION",
    "NotOwner",
    "RelayRefused",
    "dumps",
    "error_from_wire",
    "error_to_wire",
    "info_from_wire",
    "info_to_wire",
    "loads_object",
    "relay_token",
    "summary_from_wire",
    "summary_to_wire",
]

VERSION = 2
PATH_PREFIX = f"/relay/v{VERSION}/"
_DUMPS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_BASE_ATTRS = frozenset({"message", "field", "args"})

_ERRORS: dict[str, type[FramebrokerError]] = {
    name: cls
    for name in errors_module.__all__
    if isinstance(cls := getattr(errors_module, name), type) and issubclass(cls, FramebrokerError)
}
_ERRORS["FramebrokerError"] = FramebrokerError


class RelayRefused(ValueError):
    """A relay message this node cannot use; ``reason`` is the refusal's counter
    (``relay_auth``, ``relay_version``, ``relay_malformed``, ``unknown_error``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotOwner(FramebrokerError):
    """The node a call was relayed to does not hold the session (the caller's view of the
    directory is stale): the caller looks the owner up again. Never reaches a client."""

    http_status = 409
    code = "not_owner"

    def __init__(self, session_id: str, node: str) -> None:
        super().__init__(f"node {node!r} does not hold session {session_id!r}")
        self.session_id = session_id
        self.node = node


_ERRORS["NotOwner"] = NotOwner


def relay_token(secret: str, cluster: str) -> str:
    """The bearer token every node of cluster ``cluster`` sends and expects."""
    return hmac.new(
        secret.encode(), f"framebroker-relay/v{VERSION}/{cluster}".encode(), hashlib.sha256
    ).hexdigest()


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_DUMPS)


def loads_object(data: bytes) -> dict[str, Any]:
    """A JSON object from ``data``; raises :class:`RelayRefused` (``relay_malformed``)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RelayRefused("relay_malformed", f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise RelayRefused("relay_malformed", f"expected an object, got {type(value).__name__}")
    return value


def error_to_wire(error: FramebrokerError) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        k: v
        for k, v in vars(error).items()
        if k not in _BASE_ATTRS and isinstance(v, str | int | float | bool | type(None))
    }
    for k, v in vars(error).items():
        if isinstance(v, tuple) and all(isinstance(x, str) for x in v):
            attrs[k] = list(v)
    return {
        "type": type(error).__name__,
        "message": error.message,
        "field": error.field,
        "attrs": attrs,
    }


def error_from_wire(data: Any) -> FramebrokerError:
    """The error the owner raised, as its own class; raises :class:`RelayRefused`
    (``unknown_error``) with a plain ``FramebrokerError`` to raise instead when the class is
    not one this version knows."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        raise RelayRefused("relay_malformed", f"an error without a message: {data!r:.200}")
    message, field = data["message"], data.get("field")
    cls = _ERRORS.get(str(data.get("type")))
    if cls is None:
        raise RelayRefused("unknown_error", f"unknown error {data.get('type')!r}: {message}")
    # Built without the class's own __init__ (whose arguments differ per class): the base's
    # message and field, then the attributes the owner's instance carried.
    error = cls.__new__(cls)
    FramebrokerError.__init__(error, message, field=field if isinstance(field, str) else None)
    attrs = data.get("attrs")
    if isinstance(attrs, dict):
        for k, v in attrs.items():
            if isinstance(k, str) and k not in _BASE_ATTRS:
                setattr(error, k, tuple(v) if isinstance(v, list) else v)
    return error


def info_to_wire(info: SessionInfo) -> dict[str, Any]:
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(SessionInfo)}


def info_from_wire(data: Any) -> SessionInfo:
    if not isinstance(data, dict):
        raise RelayRefused("relay_malformed", f"a session info is an object, got {data!r:.100}")
    names = {f.name for f in dataclasses.fields(SessionInfo)}
    values = {k: v for k, v in data.items() if k in names}
    try:
        values["stage_widths"] = tuple(int(w) for w in values.get("stage_widths") or ())
        return SessionInfo(**values)
    except (TypeError, ValueError) as e:
        raise RelayRefused("relay_malformed", f"a session info: {e}") from None


def summary_to_wire(summary: SessionSummary) -> dict[str, Any]:
    return summary.to_dict()


def summary_from_wire(data: Any) -> SessionSummary:
    if not isinstance(data, dict):
        raise RelayRefused("relay_malformed", f"a summary is an object, got {data!r:.100}")
    try:
        return SessionSummary(**data)
    except TypeError as e:
        raise RelayRefused("relay_malformed", f"a summary: {e}") from None
