"""What crosses Redis between nodes: bus envelopes and the JSON of directory entries, versioned
and bounded.

A bus message on the wire is one JSON object (orjson)::

    {"v": 1, "n": "<node>", "s": <seq>, "t": "<topic>", "at": <sent, epoch s>,
     "k": "j" | "f", "b": 0 | 1, "p": <payload>}

``k`` says how the payload comes back: ``"j"`` as the JSON it is, ``"f"`` as a
:class:`~framebroker.sessions.FrameOut` (what ``session/<id>/result`` carries, rebuilt with
:meth:`FrameOut.from_wire`). ``b`` says the payload holds bytes, sent as ``{"$b": base64}``
and restored on arrival (the walk is done only when ``b`` is set, so a frame's 56 KB of
base64 text is parsed once and never visited). ``s`` numbers the messages that must arrive
(per sending node, from 1), so a receiver drops a duplicate and counts a gap; it is 0 for
droppable ones.

Why JSON and not msgpack: the payloads the bus carries are already JSON-able by contract
(``FrameOut.to_wire``, the live hub's ``jpeg_b64`` text); orjson is already a dependency and
parses a 56 KB frame message in microseconds; and ``redis-cli MONITOR`` stays readable when a
cluster misbehaves. A format change bumps :data:`VERSION`: a node refuses (logs, counts) what
it cannot read rather than guessing, so a rolling upgrade shows up in the refusal counters,
not as crashes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from ..sessions import FrameOut

__all__ = [
    "VERSION",
    "Envelope",
    "UnknownVersion",
    "WireError",
    "decode",
    "dumps_bounded",
    "encode",
]

VERSION = 1
MAX_TOPIC_CHARS = 512
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class WireError(ValueError):
    """A message or entry that cannot be used. ``reason`` is the counter it goes to:
    ``"malformed"``, ``"version"`` or ``"too_large"``."""

    reason = "malformed"


class UnknownVersion(WireError):
    """Written by a version of framebroker this one cannot read."""

    reason = "version"


class TooLarge(WireError):
    reason = "too_large"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One bus message as a node received it."""

    topic: str
    payload: Any
    node: str
    seq: int
    sent_at: float


def _dumps(value: Any) -> tuple[bytes, bool]:
    """``value`` as JSON, and whether it held bytes (sent as ``{"$b": base64}``)."""
    had_bytes = False

    def default(obj: Any) -> Any:
        nonlocal had_bytes
        if isinstance(obj, bytes | bytearray | memoryview):
            had_bytes = True
            return {"$b": base64.b64encode(obj).decode("ascii")}
        raise TypeError(f"{type(obj).__name__} is not JSON-able")

    return orjson.dumps(value, default=default, option=_DUMPS_OPTIONS), had_bytes


def dumps_bounded(value: Any, *, max_bytes: int, what: str) -> bytes:
    """``value`` as JSON of at most ``max_bytes``; raises :class:`WireError` (``TooLarge``
    past the bound) naming ``what``."""
    try:
        data, _ = _dumps(value)
    except TypeError as e:
        raise WireError(f"{what} is not JSON-able: {e}") from None
    if len(data) > max_bytes:
        raise TooLarge(f"{what} is {len(data)} bytes as JSON, over the {max_bytes} allowed")
    return data


def encode(
    topic: str, payload: Any, *, node: str, seq: int, sent_at: float, max_bytes: int
) -> bytes:
    """The wire form of one bus message; raises :class:`WireError` for a payload that is not
    JSON-able or is over ``max_bytes`` encoded."""
    kind = "j"
    if isinstance(payload, FrameOut):
        kind, payload = "f", payload.to_wire()
    body = {"v": VERSION, "n": node, "s": seq, "t": topic, "at": sent_at, "k": kind, "b": 0}
    try:
        # The payload is dumped inside the envelope in one pass; ``b`` is fixed up after,
        # which costs a second pass only for the rare payloads that carry bytes.
        body["p"] = payload
        data, had_bytes = _dumps(body)
        if had_bytes:
            body["b"] = 1
            data, _ = _dumps(body)
    except TypeError as e:
        raise WireError(f"the payload of {topic!r} is not JSON-able: {e}") from None
    if len(data) > max_bytes:
        raise TooLarge(f"a message on {topic!r} is {len(data)} bytes, over {max_bytes}")
    return data


def _restore_bytes(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$b" in value and isinstance(value["$b"], str):
            return base64.b64decode(value["$b"], validate=True)
        return {k: _restore_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_bytes(v) for v in value]
    return value


def decode(data: bytes, *, max_bytes: int) -> Envelope:
    """The message ``data`` carries; raises :class:`WireError` (``UnknownVersion``,
    ``TooLarge``) saying what is wrong with it, never anything else."""
    if len(data) > max_bytes:
        raise TooLarge(f"a message of {len(data)} bytes, over {max_bytes}")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise WireError(f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise WireError(f"expected a JSON object, got {type(body).__name__}")
    version = body.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise WireError(f"no version number (v), got {version!r:.40}")
    if version != VERSION:
        raise UnknownVersion(f"version {version}; this node reads version {VERSION}")
    topic, node, seq = body.get("t"), body.get("n"), body.get("s")
    sent_at, kind = body.get("at"), body.get("k")
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_CHARS:
        raise WireError(f"a topic must be 1 to {MAX_TOPIC_CHARS} characters, got {topic!r:.60}")
    if not isinstance(node, str) or not node:
        raise WireError(f"no sending node (n), got {node!r:.60}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError(f"a sequence number (s) must be an integer >= 0, got {seq!r:.40}")
    if not isinstance(sent_at, int | float) or isinstance(sent_at, bool):
        raise WireError(f"a sending time (at) must be a number, got {sent_at!r:.40}")
    if "p" not in body:
        raise WireError("no payload (p)")
    payload = body["p"]
    try:
        if body.get("b"):
            payload = _restore_bytes(payload)
        if kind == "f":
            payload = FrameOut.from_wire(payload)
        elif kind != "j":
            raise WireError(f"unknown payload kind {kind!r:.20}")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(f"a payload of kind {kind!r} that does not parse: {e!r:.200}") from None
    return Envelope(topic=topic, payload=payload, node=node, seq=seq, sent_at=float(sent_at))
