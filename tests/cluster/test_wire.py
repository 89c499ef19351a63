"""The bus's wire format and the key names, without Redis: what a node accepts, and what it
refuses with which reason."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from framebroker.cluster.keys import MAX_ID_CHARS, Keys
from framebroker.cluster.wire import (
    VERSION,
    TooLarge,
    UnknownVersion,
    WireError,
    decode,
    dumps_bounded,
    encode,
)
from framebroker.sessions import FrameOut

MAX = 1 << 20


def test_a_message_round_trips_with_bytes_and_numpy_arrays() -> None:
    payload = {"blob": b"\x00\x01", "nested": [{"b": bytearray(b"xy")}], "a": np.arange(3)}
    data = encode("t/x", payload, node="n1", seq=4, sent_at=1.5, max_bytes=MAX)
    got = decode(data, max_bytes=MAX)
    assert (got.topic, got.node, got.seq, got.sent_at) == ("t/x", "n1", 4, 1.5)
    assert got.payload == {"blob": b"\x00\x01", "nested": [{"b": b"xy"}], "a": [0, 1, 2]}


def test_a_frame_out_comes_back_as_one() -> None:
    out = FrameOut("s", 2, outputs={"n": 1}, ran=["a"], timestamp=3.0)
    got = decode(
        encode("session/s/result", out, node="n", seq=0, sent_at=0, max_bytes=MAX), max_bytes=MAX
    )
    assert got.payload == out


@pytest.mark.parametrize(
    ("body", "error", "says"),
    [
        (b"\xff", WireError, "not JSON"),
        (b"[1, 2]", WireError, "JSON object"),
        (b'{"n": "x"}', WireError, "version"),
        (b'{"v": 2}', UnknownVersion, "version 2"),
        (b'{"v": 1, "n": "x", "s": 0, "at": 0, "k": "j", "p": 1}', WireError, "topic"),
        (b'{"v": 1, "t": "a", "s": 0, "at": 0, "k": "j", "p": 1}', WireError, "sending node"),
        (
            b'{"v": 1, "t": "a", "n": "x", "s": -1, "at": 0, "k": "j", "p": 1}',
            WireError,
            "sequence",
        ),
        (b'{"v": 1, "t": "a", "n": "x", "s": 0, "at": "now", "k": "j", "p": 1}', WireError, "time"),
        (b'{"v": 1, "t": "a", "n": "x", "s": 0, "at": 0, "k": "j"}', WireError, "payload"),
        (b'{"v": 1, "t": "a", "n": "x", "s": 0, "at": 0, "k": "z", "p": 1}', WireError, "kind"),
        (b'{"v": 1, "t": "a", "n": "x", "s": 0, "at": 0, "k": "f", "p": [1]}', WireError, "parse"),
        (b'{"v": 1, "t": "a", "n": "x", "s": 0, "at": 0, "k": "f", "p": {}}', WireError, "parse"),
    ],
)
def test_what_cannot_be_read_is_a_wire_error_naming_the_fault(
    body: bytes, error: type[WireError], says: str
) -> None:
    with pytest.raises(error, match=says):
        decode(body, max_bytes=MAX)


def test_sizes_are_bounded_both_ways() -> None:
    with pytest.raises(TooLarge):
        encode("t", "x" * 100, node="n", seq=0, sent_at=0, max_bytes=50)
    with pytest.raises(TooLarge):
        decode(b"x" * 51, max_bytes=50)
    with pytest.raises(TooLarge, match="session data"):
        dumps_bounded({"x": "y" * 100}, max_bytes=50, what="session data")
    with pytest.raises(WireError, match="not JSON-able"):
        encode("t", {1, 2}, node="n", seq=0, sent_at=0, max_bytes=MAX)
    assert orjson.loads(encode("t", 1, node="n", seq=0, sent_at=0, max_bytes=MAX))["v"] == VERSION


def test_keys_share_one_hash_tag_and_patterns_escape_globs() -> None:
    keys = Keys("prod-1")
    assert keys.session("a") == "fb:{prod-1}:session:a"
    assert keys.node("n") == "fb:{prod-1}:node:n"
    assert keys.channel_pattern("live/[a]?*") == "fb:{prod-1}:bus:live/\\[a\\]\\?\\**"
    assert keys.topic_of(keys.channel("live/x/frame")) == "live/x/frame"
    assert keys.topic_of("fb:{other}:bus:live/x/frame") is None
    for bad in ("", "a{b}", "x" * 65, "sp ace"):
        with pytest.raises(ValueError, match="cluster name"):
            Keys(bad)
    with pytest.raises(ValueError, match="session id"):
        keys.session("x" * (MAX_ID_CHARS + 1))
    with pytest.raises(ValueError, match="session id"):
        keys.session("")
