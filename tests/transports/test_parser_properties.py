"""Property tests: every parser a client's bytes reach either returns a value or raises the
project's typed error, never anything else (which a transport would turn into a 500).

Parsers covered here: the tracking request (boxes, box formats, base64 images), base64 and
raw images, seed-003 frame parts, the seed-001 WebSocket requests and the seed-004 offer.
The multipart parser has its own properties in ``test_multipart.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framebroker.config import Limits
from framebroker.errors import FramebrokerError
from framebroker.media.image import decode_base64_image, open_image
from framebroker.transports.box_requests import parse_tracking_request
from framebroker.transports.frame_upload import parse_frame_request
from framebroker.transports.webrtc_peer import parse_offer

from .images import jpeg_b64, png_b64, scene

LIMITS = Limits(max_boxes=50, max_body_bytes=200_000, max_image_pixels=100_000)
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
numbers = st.integers(-(10**6), 10**6) | st.floats(allow_nan=True, allow_infinity=True)
box_rows = st.lists(st.lists(numbers, min_size=0, max_size=8), max_size=8)


def dumps(value: Any) -> bytes:
    """JSON as any client may send it: integers past 64 bits, NaN and Infinity included."""
    return json.dumps(value).encode()


def only_typed_errors(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except FramebrokerError as exc:
        refusal = exc
    assert refusal.message  # every refusal says what is wrong
    return None


@QUICK
@given(
    body=st.one_of(
        st.binary(max_size=200),
        json_values.map(dumps),
        st.fixed_dictionaries(
            {"boxes": box_rows},
            optional={
                "box_format": st.sampled_from(["xyxy", "xywh", "cxcywh", "nope", 3]),
                "image": st.text(max_size=40) | st.integers(),
            },
        ).map(dumps),
    ),
    header=st.none() | st.sampled_from(["xyxy", "xywh", "tlbr", ""]),
)
def test_tracking_requests_parse_or_refuse(body: bytes, header: str | None) -> None:
    req = only_typed_errors(
        parse_tracking_request, body, limits=LIMITS, default_format="xywh", format_header=header
    )
    if req is not None:
        assert len(req.detections) == len(req.rows) <= LIMITS.max_boxes


@QUICK
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode()),
        st.binary(max_size=60).map(
            lambda b: "data:image/png;base64," + base64.b64encode(b).decode()
        ),
        st.integers(0, 200).map(lambda n: png_b64(scene(32, 24))[: n * 4]),  # truncated
    )
)
def test_base64_images_decode_or_refuse(text: str) -> None:
    image = only_typed_errors(
        decode_base64_image,
        text,
        max_bytes=LIMITS.max_body_bytes,
        max_pixels=LIMITS.max_image_pixels,
    )
    if image is not None:
        arr = only_typed_errors(image.decode)
        if arr is not None:
            assert arr.ndim == 3
            assert arr.shape[2] == 3


def test_whole_images_still_decode() -> None:
    for text in (png_b64(scene(32, 24)), jpeg_b64(scene(32, 24))):
        img = decode_base64_image(text, max_bytes=10**6, max_pixels=10**6)
        assert img.decode().shape == (24, 32, 3)


@QUICK
@given(data=st.binary(max_size=300))
def test_raw_bytes_open_or_refuse(data: bytes) -> None:
    only_typed_errors(open_image, data, max_pixels=LIMITS.max_image_pixels)


class _Part:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)


@QUICK
@given(
    frame=st.binary(max_size=60) | json_values.map(dumps),
    image=st.binary(max_size=200),
    width=st.integers(-2, 12),
    height=st.integers(-2, 12),
)
def test_seed_003_frames_parse_or_refuse(
    frame: bytes, image: bytes, width: int, height: int
) -> None:
    form: dict[str, Any] = {"frame": _Part(frame), "image": _Part(image)}
    only_typed_errors(parse_frame_request, form, limits=LIMITS, default_size=(width or 4, 2))
    sized = orjson.dumps({"width": width, "height": height, "source": {"x": 1}})
    req = only_typed_errors(
        parse_frame_request, {"frame": _Part(sized), "image": _Part(image)}, limits=LIMITS,
        default_size=(4, 2),
    )  # fmt: skip
    if req is not None and len(image) == width * height * 3:
        image_source = req.to_frame().image
        assert image_source is not None
        assert image_source.decode().shape == (height, width, 3)


@QUICK
@given(payload=json_values)
def test_seed_004_offers_parse_or_refuse(payload: Any) -> None:
    only_typed_errors(parse_offer, payload)


@QUICK
@given(
    sdp=st.text(max_size=300),
    lines=st.lists(
        st.sampled_from(
            [
                "v=0",
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
                "a=sendonly",
                "a=ice-ufrag:x",
                "a=fingerprint:sha-256 00",
                "m=audio 9 x 0",
            ]
        ),
        max_size=8,
    ),
)
def test_odd_sdp_is_refused_cleanly(sdp: str, lines: list[str]) -> None:
    only_typed_errors(parse_offer, {"type": "offer", "sdp": sdp})
    only_typed_errors(parse_offer, {"type": "offer", "sdp": "\r\n".join(lines) + "\r\n"})


@QUICK
@given(raw=st.text(max_size=200) | json_values.map(lambda v: dumps(v).decode()))
def test_seed_001_requests_always_get_an_answer(raw: str) -> None:
    from framebroker.core.bus import Bus
    from framebroker.transports.people_ws import LiveHub

    hub = LiveHub(Bus())  # no store: face requests are answered from nothing
    reply = asyncio.run(hub.answer(raw))
    if reply is not None:
        body = orjson.loads(reply)
        assert isinstance(body, dict)
