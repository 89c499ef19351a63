"""Every error framebroker raises on purpose, and how each one looks on the wire.

Transports never invent status codes: they catch :class:`FramebrokerError` and turn it into
an HTTP response, a WebSocket ``error`` message or close code, or a Socket.IO error event,
using the attributes the class carries. Anything else that escapes is a bug and becomes a 500.

The tree::

    FramebrokerError                  500  internal
    ├── InvalidInput                  400  invalid_input      (bad client data; names a field)
    │   ├── InvalidJSON               400  invalid_json
    │   ├── InvalidBoxes              400  invalid_boxes
    │   ├── InvalidImage              400  invalid_image
    │   ├── UnsupportedMediaType      415  unsupported_media_type
    │   └── ProcessorLoadError        400  processor_load_error (unknown or unbuildable processor)
    ├── PayloadTooLarge               413  payload_too_large  (a size limit was exceeded)
    │   └── HeadersTooLarge           431  headers_too_large  (max_header_bytes, 8 KiB lines)
    ├── SessionNotFound               404  session_not_found
    ├── SourceNotFound                404  source_not_found
    ├── SourceElsewhere               409  source_elsewhere   (another node of the cluster runs it)
    ├── SessionConflict               409  session_conflict
    │   └── StaleOwner                409  stale_owner        (a newer owner holds the session)
    │       └── SessionFenced         409  stale_owner        (the same, refused by the directory)
    ├── CapacityExceeded              503  capacity_exceeded  (too many sessions, inbox full)
    │   └── TooManyConnections        503  too_many_connections (a listener's max_connections)
    ├── StoreUnavailable              503  store_unavailable  (the database cannot be reached now)
    ├── ClusterUnavailable            503  cluster_unavailable (the cluster's Redis did not answer)
    ├── RequestTimeout                408  request_timeout    (a request arrived too slowly)
    │   ├── HeaderTimeout             408  header_timeout     (header_timeout_s)
    │   └── BodyTimeout               408  body_timeout       (body_timeout_s)
    ├── TooManyRequests               429  too_many_requests  (one client's or session's share)
    │   ├── ClientSessionLimit        429  client_session_limit (max_sessions_per_client)
    │   └── FrameRateExceeded         429  frame_rate_exceeded  (max_fps_per_session)
    ├── ProcessorTimeout              504  processor_timeout  (processor_timeout_s; names it)
    └── ConfigError                   ---  config_error       (at start-up, never on the wire)
        └── UvicornIncompatible       ---  uvicorn_incompatible (a uvicorn hook is gone or changed)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BodyTimeout",
    "CapacityExceeded",
    "ClientSessionLimit",
    "ClusterUnavailable",
    "ConfigError",
    "FrameRateExceeded",
    "FramebrokerError",
    "HeaderTimeout",
    "HeadersTooLarge",
    "InvalidBoxes",
    "InvalidImage",
    "InvalidInput",
    "InvalidJSON",
    "PayloadTooLarge",
    "ProcessorLoadError",
    "ProcessorTimeout",
    "RequestTimeout",
    "SessionConflict",
    "SessionFenced",
    "SessionNotFound",
    "SourceElsewhere",
    "SourceNotFound",
    "StaleOwner",
    "StoreUnavailable",
    "TooManyConnections",
    "TooManyRequests",
    "UnsupportedMediaType",
    "UvicornIncompatible",
]


class FramebrokerError(Exception):
    """Base of every deliberate framebroker error.

    ``http_status`` and ``ws_close_code`` say how a transport reports it; ``code`` is a stable
    machine-readable name; ``field`` names the part of the request at fault, when there is one.
    """

    http_status: ClassVar[int] = 500
    ws_close_code: ClassVar[int] = 1011
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The JSON body every transport sends for this error."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(FramebrokerError):
    """The client sent data that cannot be used; nothing was changed."""

    http_status = 400
    ws_close_code = 1007
    code = "invalid_input"


class InvalidJSON(InvalidInput):
    code = "invalid_json"


class InvalidBoxes(InvalidInput):
    code = "invalid_boxes"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class UnsupportedMediaType(InvalidInput):
    http_status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(FramebrokerError):
    """A body, message or image is over its configured limit."""

    http_status = 413
    ws_close_code = 1009
    code = "payload_too_large"


class HeadersTooLarge(PayloadTooLarge):
    """A request's head is over ``limits.max_header_bytes``, or a WebSocket handshake has a
    line longer than the WebSocket layer reads. The connection is closed after the answer."""

    http_status = 431
    code = "headers_too_large"


class SessionNotFound(FramebrokerError):
    http_status = 404
    ws_close_code = 4404
    code = "session_not_found"

    def __init__(self, session_id: str, *, field: str | None = "Session-Id") -> None:
        shown = (
            session_id if len(session_id) <= 64 else f"{session_id[:64]}… ({len(session_id)} chars)"
        )
        super().__init__(f"no active session with id {shown!r}", field=field)
        self.session_id = session_id


class SourceNotFound(FramebrokerError):
    """No ``--source`` of that name on this server."""

    http_status = 404
    ws_close_code = 4404
    code = "source_not_found"


class SourceElsewhere(FramebrokerError):
    """A ``--source`` this node of a cluster stands by for: another node holds its lease
    and runs it (``node``; ``None`` while no node does), so it cannot start here."""

    http_status = 409
    ws_close_code = 4409
    code = "source_elsewhere"

    def __init__(self, source: str, node: str | None) -> None:
        where = f"node {node!r} runs it" if node else "no node holds it this moment"
        super().__init__(
            f"source {source!r} runs on one node of the cluster at a time, and {where}; "
            "start or stop it there",
            field="name",
        )
        self.source = source
        self.node = node


class SessionConflict(FramebrokerError):
    http_status = 409
    ws_close_code = 4409
    code = "session_conflict"


class StaleOwner(SessionConflict):
    """A write to a session that another owner, or a later life of this one, now holds
    (see :mod:`framebroker.core.store`): this process must not write for it any more."""

    code = "stale_owner"


class SessionFenced(StaleOwner):
    """The cluster's directory refused a write from this node for ``session_id``: it held
    the session under ``epoch``, and the session was taken over since (its lease had
    expired), so whatever this node still keeps of it is stale. ``owner`` and
    ``owner_epoch`` say who holds it now (``None`` when the entry is gone)."""

    def __init__(
        self,
        session_id: str,
        *,
        epoch: int,
        owner: str | None = None,
        owner_epoch: int | None = None,
    ) -> None:
        now = f"node {owner!r} holds it (epoch {owner_epoch})" if owner else "it is gone"
        super().__init__(f"session {session_id!r} is no longer ours (epoch {epoch}): {now}")
        self.session_id = session_id
        self.epoch = epoch
        self.owner = owner
        self.owner_epoch = owner_epoch


class CapacityExceeded(FramebrokerError):
    """A server-wide bound (sessions, queued frames) is reached; retry later."""

    http_status = 503
    ws_close_code = 1013
    code = "capacity_exceeded"


class TooManyConnections(CapacityExceeded):
    """A listener already holds ``limits.max_connections`` open connections."""

    code = "too_many_connections"


class StoreUnavailable(FramebrokerError):
    """The database cannot be reached or used right now (restarting, unreachable, its pool
    exhausted). Nothing was written; retry later: the store reconnects by itself."""

    http_status = 503
    ws_close_code = 1013
    code = "store_unavailable"


class ClusterUnavailable(FramebrokerError):
    """The cluster's Redis did not answer in time (restarted, unreachable, overloaded), and
    the request needs it: a new session must be claimed in the directory, an owner looked up.
    Sessions this node already runs keep working; retry later. ``operation`` names what was
    attempted (``"claim"``, ``"lookup"``, ...)."""

    http_status = 503
    ws_close_code = 1013
    code = "cluster_unavailable"

    def __init__(self, message: str, *, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


class RequestTimeout(FramebrokerError):
    """A request's headers or body did not arrive in time. The connection is closed after
    the answer, since the rest of the request may still be on its way."""

    http_status = 408
    ws_close_code = 1008
    code = "request_timeout"


class HeaderTimeout(RequestTimeout):
    code = "header_timeout"


class BodyTimeout(RequestTimeout):
    code = "body_timeout"


class TooManyRequests(FramebrokerError):
    """One client or session is over its own share; others are unaffected. ``limit`` names
    the setting (under ``limits``); ``retry_after_s``, when known, says when to try again."""

    http_status = 429
    ws_close_code = 1013
    code = "too_many_requests"

    def __init__(self, message: str, *, limit: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["limit"] = self.limit
        if self.retry_after_s is not None:
            body["retry_after_s"] = round(self.retry_after_s, 3)
        return body


class ClientSessionLimit(TooManyRequests):
    """A client (one address) already holds ``limits.max_sessions_per_client`` sessions."""

    code = "client_session_limit"


class FrameRateExceeded(TooManyRequests):
    """A session is sending frames faster than ``limits.max_fps_per_session``."""

    code = "frame_rate_exceeded"


class ProcessorTimeout(FramebrokerError):
    """A processor ran past ``limits.processor_timeout_s`` on a frame of this session.

    Raised for the frames waiting on it when it overran, and for the session's later frames
    until the call returns or the session is ended. ``processor`` and ``session_id`` say
    which; ``timeout_s`` is the limit.
    """

    http_status = 504
    ws_close_code = 1011
    code = "processor_timeout"

    def __init__(self, message: str, *, processor: str, session_id: str, timeout_s: float) -> None:
        super().__init__(message)
        self.processor = processor
        self.session_id = session_id
        self.timeout_s = timeout_s

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["processor"] = self.processor
        body["session_id"] = self.session_id
        body["timeout_s"] = self.timeout_s
        return body


class ConfigError(FramebrokerError):
    """The configuration cannot be used; raised at start-up."""

    code = "config_error"


class UvicornIncompatible(ConfigError):
    """The installed uvicorn lacks, or has changed, a name the server hooks into (see
    :mod:`framebroker.server.uvicorn_hooks`); serving on it would switch the connection
    deadlines off unnoticed. ``uvicorn_version`` is the installed version, ``problems`` says
    what is missing or changed, one entry per name."""

    code = "uvicorn_incompatible"

    def __init__(self, message: str, *, uvicorn_version: str, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.uvicorn_version = uvicorn_version
        self.problems = problems


class ProcessorLoadError(InvalidInput):
    """A processor named in a request or the configuration cannot be found or built."""

    code = "processor_load_error"
