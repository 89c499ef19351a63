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
    ├── SessionNotFound               404  session_not_found
    ├── SessionConflict               409  session_conflict
    ├── CapacityExceeded              503  capacity_exceeded  (too many sessions, inbox full)
    └── ConfigError                   ---  config_error       (at start-up, never on the wire)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CapacityExceeded",
    "ConfigError",
    "FramebrokerError",
    "InvalidBoxes",
    "InvalidImage",
    "InvalidInput",
    "InvalidJSON",
    "PayloadTooLarge",
    "ProcessorLoadError",
    "SessionConflict",
    "SessionNotFound",
    "UnsupportedMediaType",
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


class SessionNotFound(FramebrokerError):
    http_status = 404
    ws_close_code = 4404
    code = "session_not_found"

    def __init__(self, session_id: str, *, field: str | None = "Session-Id") -> None:
        super().__init__(f"no active session with id {session_id!r}", field=field)
        self.session_id = session_id


class SessionConflict(FramebrokerError):
    http_status = 409
    ws_close_code = 4409
    code = "session_conflict"


class CapacityExceeded(FramebrokerError):
    """A server-wide bound (sessions, queued frames) is reached; retry later."""

    http_status = 503
    ws_close_code = 1013
    code = "capacity_exceeded"


class ConfigError(FramebrokerError):
    """The configuration cannot be used; raised at start-up."""

    code = "config_error"


class ProcessorLoadError(InvalidInput):
    """A processor named in a request or the configuration cannot be found or built."""

    code = "processor_load_error"
