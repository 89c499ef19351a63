"""Every private uvicorn name the server builds on, and the start-up check that they are all
still there.

uvicorn has no public hook for connection deadlines, request bodies or ready WebSocket frames,
so :mod:`.deadlines`, :mod:`.body_chunks`, :mod:`.ws_protocol` and :mod:`.serve` subclass its
protocol classes, override private methods and read attributes its methods set. A uvicorn
release that renames one of them breaks nothing loudly: the override is simply never called,
and the header, body and idle deadlines and the connection cap switch off. :data:`HOOKS` lists
each such name with what it is expected to be; :func:`check_uvicorn` compares them with the
installed uvicorn, without importing the modules that subclass it, and raises
:class:`~framebroker.errors.UvicornIncompatible` naming the version and every mismatch.

A hook is checked three ways, each from uvicorn's own classes (never ours):

- it exists, defined by a uvicorn class (a method that moved up to ``asyncio.Protocol`` would
  no longer be uvicorn's);
- a method has the parameters expected (names, kinds and defaults, annotations aside);
- the uvicorn methods that must call or set it still name it in their code: an override runs
  only while uvicorn calls it, and an attribute is only worth reading while uvicorn sets it.

When uvicorn is upgraded: run the deadline tests (``tests/server/``,
``tests/e2e/test_limits_connections.py``), fix what moved, update this table, and raise the
bound in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any

import uvicorn

from ..errors import UvicornIncompatible

__all__ = ["HOOKS", "Hook", "check_uvicorn", "hook_problems"]


@dataclass(frozen=True)
class Hook:
    """One name of a uvicorn class that framebroker overrides, calls or reads.

    ``owner`` is ``"module:Class"``; ``name`` is the attribute (``None``: the class itself).
    ``signature`` is a method's parameter list as :func:`inspect.signature` prints it without
    annotations, ``None`` for a plain attribute. ``named_in`` are methods of ``owner`` whose
    code must name it. ``used_by`` is the framebroker module that relies on it.
    """

    owner: str
    name: str | None
    used_by: str
    signature: str | None = None
    named_in: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        cls = self.owner.rpartition(":")[2]
        return cls if self.name is None else f"{cls}.{self.name}"


_HTTP = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"
_CYCLE = "uvicorn.protocols.http.httptools_impl:RequestResponseCycle"
_FLOW = "uvicorn.protocols.http.flow_control:FlowControl"
_STATE = "uvicorn.server:ServerState"
_SERVER = "uvicorn.server:Server"
_WS = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"

_DEADLINES = "server/deadlines.py"
_BODY = "server/body_chunks.py"
_WS_PROTOCOL = "server/ws_protocol.py"
_SERVE = "server/serve.py"


def _method(owner: str, name: str, signature: str, used_by: str, *named_in: str) -> Hook:
    return Hook(owner, name, used_by, signature, named_in)


def _attribute(owner: str, name: str, used_by: str, *named_in: str) -> Hook:
    return Hook(owner, name, used_by, None, named_in)


HOOKS: tuple[Hook, ...] = (
    # The httptools protocol, subclassed by ChunkedBodyProtocol and DeadlineProtocol.
    _method(_HTTP, "__init__", "(self, config, server_state, app_state, _loop=None)", _DEADLINES),
    _method(_HTTP, "connection_made", "(self, transport)", _DEADLINES),
    _method(_HTTP, "connection_lost", "(self, exc)", _DEADLINES),
    _method(_HTTP, "data_received", "(self, data)", _DEADLINES),
    _method(_HTTP, "handle_websocket_upgrade", "(self)", _DEADLINES, "data_received"),
    _method(_HTTP, "_should_upgrade", "(self)", _DEADLINES, "data_received", "on_headers_complete"),
    _method(_HTTP, "_unsupported_upgrade_warning", "(self)", _DEADLINES, "data_received"),
    _method(_HTTP, "on_message_begin", "(self)", _DEADLINES),
    _method(_HTTP, "on_url", "(self, url)", _DEADLINES),
    _method(_HTTP, "on_header", "(self, name, value)", _DEADLINES),
    _method(_HTTP, "on_headers_complete", "(self)", _DEADLINES),
    _method(_HTTP, "on_body", "(self, body)", _BODY),
    _method(_HTTP, "on_message_complete", "(self)", _DEADLINES),
    # The body timer starts here: for the first request and for each pipelined one.
    _method(
        _HTTP,
        "_start_asgi_task",
        "(self, cycle, app)",
        _DEADLINES,
        "on_headers_complete",
        "on_response_complete",
    ),
    _method(_HTTP, "on_response_complete", "(self)", _DEADLINES, "on_headers_complete"),
    # Called after on_response_complete to cancel the keep-alive timer it just armed.
    _method(_HTTP, "_unset_keepalive_if_required", "(self)", _DEADLINES),
    _attribute(
        _HTTP,
        "timeout_keep_alive_task",
        _DEADLINES,
        "on_response_complete",
        "_unset_keepalive_if_required",
    ),
    # A connection over the cap swaps its app for the 503 answer.
    _attribute(_HTTP, "app", _DEADLINES, "__init__", "on_headers_complete"),
    _attribute(_HTTP, "connections", _DEADLINES, "__init__", "connection_made"),
    _attribute(_HTTP, "cycle", _DEADLINES, "__init__", "on_headers_complete"),
    _attribute(_HTTP, "pipeline", _DEADLINES, "__init__", "on_response_complete"),
    _attribute(_HTTP, "url", _DEADLINES, "on_message_begin", "on_url"),
    _attribute(_HTTP, "headers", _DEADLINES, "on_message_begin", "on_header"),
    _attribute(_HTTP, "transport", _DEADLINES, "connection_made"),
    _attribute(_HTTP, "client", _DEADLINES, "connection_made"),
    _attribute(_HTTP, "flow", _BODY, "connection_made"),
    _attribute(_HTTP, "loop", _DEADLINES, "__init__"),
    _attribute(_HTTP, "parser", _BODY, "__init__"),
    _attribute(_HTTP, "server_state", _DEADLINES, "__init__"),
    _attribute(_STATE, "default_headers", _DEADLINES, "__init__"),
    _method(_FLOW, "pause_reading", "(self)", _BODY),
    # The request cycle: its body is replaced by BodyChunks, a body timeout disconnects it.
    _attribute(_CYCLE, "body", _BODY, "__init__", "receive"),
    _attribute(_CYCLE, "message_event", _BODY, "__init__", "receive"),
    _attribute(_CYCLE, "disconnected", _DEADLINES, "__init__", "receive"),
    _attribute(_CYCLE, "response_started", _DEADLINES, "__init__", "send"),
    _attribute(_CYCLE, "response_complete", _DEADLINES, "__init__", "send"),
    # The WebSocket protocol, subclassed by PreframedWebSocketProtocol.
    _method(_WS, "handle_connect", "(self, event)", _WS_PROTOCOL, "handle_events"),
    _method(_WS, "send", "(self, message)", _WS_PROTOCOL, "run_asgi"),
    _attribute(_WS, "scope", _WS_PROTOCOL, "handle_connect"),
    _attribute(_WS, "writable", _WS_PROTOCOL, "__init__"),
    _attribute(_WS, "disconnected", _WS_PROTOCOL, "__init__"),
    _attribute(_WS, "handshake_complete", _WS_PROTOCOL, "__init__"),
    _attribute(_WS, "close_sent", _WS_PROTOCOL, "__init__"),
    _attribute(_WS, "transport", _WS_PROTOCOL, "connection_made"),
    Hook("uvicorn.protocols.utils:ClientDisconnected", None, _WS_PROTOCOL),
    # Per-connection INFO lines go out at DEBUG: both loggers are replaced after __init__.
    _method(_WS, "__init__", "(self, config, server_state, app_state, _loop=None)", _WS_PROTOCOL),
    _attribute(_WS, "logger", _WS_PROTOCOL, "__init__"),
    _attribute(_WS, "conn", _WS_PROTOCOL, "__init__"),
    # Every listener serves on a socket bound before the store is opened.
    _method(_SERVER, "serve", "(self, sockets=None)", _SERVE),
    # The main server ends the sources before uvicorn closes the connections.
    _method(_SERVER, "__init__", "(self, config)", _SERVE),
    _method(_SERVER, "shutdown", "(self, sockets=None)", _SERVE, "_serve"),
    # The compatibility listeners leave signals to the main server.
    _method(_SERVER, "capture_signals", "(self)", _SERVE, "serve"),
    _attribute(_SERVER, "started", _SERVE, "__init__"),
    _attribute(_SERVER, "should_exit", _SERVE, "__init__"),
)
"""Every uvicorn name the server relies on beyond uvicorn's documented API."""


def check_uvicorn(hooks: Sequence[Hook] = HOOKS) -> None:
    """Refuse to serve on a uvicorn that has lost or changed any of ``hooks``.

    Raises :class:`~framebroker.errors.UvicornIncompatible`, whose one-line message names the
    installed uvicorn version, each mismatch and the versions framebroker is tested with.
    """
    problems = hook_problems(hooks)
    if not problems:
        return
    version = uvicorn.__version__
    tested = _tested_versions()
    advice = f"; install a tested uvicorn ({tested})" if tested else ""
    raise UvicornIncompatible(
        f"uvicorn {version} lacks names framebroker's server hooks into (the connection "
        f"deadlines would switch off unnoticed): {'; '.join(problems)}{advice}",
        uvicorn_version=version,
        problems=tuple(problems),
    )


def hook_problems(hooks: Sequence[Hook] = HOOKS) -> list[str]:
    """What is missing or changed for each of ``hooks``, one line each; empty when none."""
    problems: list[str] = []
    for hook in hooks:
        problem = _problem(hook)
        if problem is not None:
            problems.append(f"{problem} (used by {hook.used_by})")
    return problems


def _problem(hook: Hook) -> str | None:
    module_name, _, class_name = hook.owner.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return f"module {module_name} is missing"
    owner = getattr(module, class_name, None)
    if not isinstance(owner, type):
        return f"{module_name}.{class_name} is missing"
    if hook.name is None:
        return None
    if hook.signature is not None:
        method = _uvicorn_attribute(owner, hook.name)
        if method is None:
            return f"{hook.label} is missing"
        found = _parameters(method)
        if found != hook.signature:
            return f"{hook.label} changed: expected {hook.signature}, found {found}"
    for caller in hook.named_in:
        code = _code_of(_uvicorn_attribute(owner, caller))
        if code is None:
            return f"{hook.label}: {class_name}.{caller} is missing"
        if hook.name not in set(_names(code)):
            verb = "call" if hook.signature is not None else "set or read"
            return f"{hook.label} is unused: {class_name}.{caller} does not {verb} it"
    return None


def _uvicorn_attribute(owner: type, name: str) -> Any:
    """``owner``'s attribute ``name`` as defined by uvicorn (not by asyncio or object)."""
    for cls in owner.__mro__:
        if cls.__module__.partition(".")[0] == "uvicorn" and name in vars(cls):
            return vars(cls)[name]
    return None


def _parameters(method: Any) -> str:
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return "not a method"
    plain = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=plain, return_annotation=inspect.Signature.empty))


def _code_of(method: Any) -> CodeType | None:
    function = inspect.unwrap(method) if callable(method) else None
    code = getattr(function, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _names(code: CodeType) -> Iterator[str]:
    """The attribute and global names ``code`` uses, its nested functions' included."""
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _names(constant)


def _tested_versions() -> str:
    """framebroker's own requirement on uvicorn, as installed (empty when not installed)."""
    try:
        requirements = importlib.metadata.requires("framebroker") or []
    except importlib.metadata.PackageNotFoundError:
        return ""
    return next((r for r in requirements if r.startswith("uvicorn")), "")
