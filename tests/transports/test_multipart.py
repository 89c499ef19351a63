"""The streaming multipart parser, fed bytes directly (no server), and its async reader."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from framebroker.errors import (
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from framebroker.transports.multipart import (
    FormEnd,
    FormLimits,
    MultipartParser,
    PartBuffer,
    PartData,
    PartEnd,
    PartStart,
    form_boundary,
    read_form,
)

LIMITS = FormLimits(max_body_bytes=1 << 22)
BOUNDARY = b"7687a10fad66d3283d5c250230a3cda2"


@dataclass(frozen=True)
class Part:
    name: str
    content: bytes
    filename: str | None = None
    content_type: str | None = None


def build(
    boundary: bytes,
    parts: Sequence[Part],
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    padding: bytes = b"",
) -> bytes:
    """A multipart body written by hand, so tests control every byte."""
    out = [preamble + b"\r\n"] if preamble else []
    for p in parts:
        out.append(b"--" + boundary + padding + b"\r\n")
        disposition = f'Content-Disposition: form-data; name="{p.name}"'
        if p.filename is not None:
            disposition += f'; filename="{p.filename}"'
        out.append(disposition.encode() + b"\r\n")
        if p.content_type is not None:
            out.append(f"Content-Type: {p.content_type}\r\n".encode())
        out.append(b"\r\n" + p.content + b"\r\n")
    out.append(b"--" + boundary + b"--" + epilogue)
    return b"".join(out)


def split(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(body)})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


Chunk = bytes | bytearray | memoryview


def parse(
    chunks: Iterable[Chunk], boundary: bytes = BOUNDARY, limits: FormLimits = LIMITS
) -> list[Part]:
    """Feed chunks, rebuild the parts from the events, checking the events' grammar."""
    parser = MultipartParser(boundary, limits)
    parts: list[Part] = []
    start: PartStart | None = None
    data = bytearray()
    ended = False
    for chunk in chunks:
        parser.receive_data(chunk)
        for event in parser.events_received():
            assert not ended
            if isinstance(event, PartStart):
                assert start is None
                start, data = event, bytearray()
            elif isinstance(event, PartData):
                assert start is not None
                assert event.data.nbytes > 0
                data += event.data
            elif isinstance(event, PartEnd):
                assert start is not None
                parts.append(Part(start.name, bytes(data), start.filename, start.content_type))
                start = None
            else:
                assert isinstance(event, FormEnd)
                assert start is None
                ended = True
    parser.receive_eof()
    assert ended
    assert parser.done
    return parts


SEED_PARTS = [
    Part("image", os.urandom(5000), "image.raw", "application/octet-stream"),
    Part("frame", b'{"timestamp": 1556855549.3732016, "frame_no": 51}', "frame.json", None),
]


# -- the content type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; BOUNDARY="a b:c"', b"a b:c"),
        ("multipart/form-data;boundary=----WebKitFormBoundary7MA", b"----WebKitFormBoundary7MA"),
        ("multipart/form-data; boundary=" + "x" * 70, b"x" * 70),
    ],
)
def test_boundary_from_content_type(content_type: str, boundary: bytes) -> None:
    assert form_boundary(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "x" * 71,
        'multipart/form-data; boundary="ends in space "',
        "multipart/form-data; boundary=semi\x00colon",
    ],
)
def test_bad_boundary_is_invalid_input(content_type: str) -> None:
    with pytest.raises(InvalidInput, match="boundary") as err:
        form_boundary(content_type)
    assert err.value.field == "Content-Type"
    assert err.value.http_status == 400


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "multipart/mixed; boundary=a", "text/plain"]
)
def test_other_media_types_are_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="multipart/form-data"):
        form_boundary(content_type)


# -- parsing --------------------------------------------------------------------------------


def test_httpx_body_in_one_chunk_and_byte_by_byte() -> None:
    image, frame = os.urandom(3000) + b"\r\n--", b'{"a": 1}'
    request = httpx.Request(
        "POST",
        "http://x/",
        files={
            "image": ("image.raw", image, "application/octet-stream"),
            "frame": ("frame.json", frame, "application/json"),
        },
    )
    body = request.read()
    boundary = form_boundary(request.headers["content-type"])
    expected = [
        Part("image", image, "image.raw", "application/octet-stream"),
        Part("frame", frame, "frame.json", "application/json"),
    ]
    assert parse([body], boundary) == expected
    assert parse([body[i : i + 1] for i in range(len(body))], boundary) == expected


def test_preamble_epilogue_padding_and_empty_parts() -> None:
    parts = [Part("a", b""), Part("b", b"\r\n"), Part("c", b"--" + BOUNDARY)]
    body = build(
        BOUNDARY,
        parts,
        preamble=b"This is a preamble\r\n--not the boundary",
        epilogue=b"\r\nepilogue --" + BOUNDARY,
        padding=b" \t ",
    )
    assert parse([body]) == parts
    assert parse(split(body, range(0, len(body), 3))) == parts


def test_empty_form_and_part_without_other_headers() -> None:
    assert parse([b"--" + BOUNDARY + b"--"]) == []
    assert parse([b"--" + BOUNDARY + b"--\r\n"]) == []


def test_quoted_names_and_filenames() -> None:
    body = (
        b"--" + BOUNDARY + b"\r\n"
        b'content-disposition: form-data; filename="a \\"b\\".raw"; name=image\r\n'
        b"X-Extra:  kept  \r\n\r\nxyz\r\n--" + BOUNDARY + b"--"
    )
    parser = MultipartParser(BOUNDARY, LIMITS)
    parser.receive_data(body)
    start = parser.events_received()[0]
    assert isinstance(start, PartStart)
    assert (start.name, start.filename) == ("image", 'a "b".raw')
    assert start.headers["x-extra"] == "kept"


def test_delimiter_split_at_every_position() -> None:
    """A delimiter, or something that starts like one, straddling two chunks."""
    near_misses = b"\r\n--" + BOUNDARY[:-1] + b"\r\r\n-\r\n--" + BOUNDARY[:5]
    parts = [Part("image", b"x" * 50 + near_misses + b"y" * 50), Part("frame", near_misses)]
    body = build(BOUNDARY, parts)
    for cut in range(1, len(body)):
        assert parse([body[:cut], body[cut:]]) == parts, cut
    for a in range(1, len(body), 7):
        for b in range(a + 1, min(len(body), a + 60)):
            assert parse([body[:a], body[a:b], body[b:]]) == parts, (a, b)


def test_data_events_are_views_on_the_fed_chunk() -> None:
    body = build(BOUNDARY, SEED_PARTS)
    parser = MultipartParser(BOUNDARY, LIMITS)
    parser.receive_data(body)
    data = [e for e in parser.events_received() if isinstance(e, PartData)]
    assert data[0].data.obj is body  # the image: no copy was made


def test_bytearray_and_memoryview_chunks_are_accepted() -> None:
    body = build(BOUNDARY, SEED_PARTS)
    chunks: list[Chunk] = [bytearray(body[:100]), memoryview(body)[100:], b""]
    assert parse(chunks) == SEED_PARTS


def test_empty_chunks_change_nothing() -> None:
    body = build(BOUNDARY, SEED_PARTS)
    assert parse([b"", body[:10], b"", body[10:], b""]) == SEED_PARTS


# -- malformed bodies -----------------------------------------------------------------------


def feed(body: bytes, limits: FormLimits = LIMITS, *, eof: bool = True) -> None:
    parser = MultipartParser(BOUNDARY, limits)
    parser.receive_data(body)
    if eof:
        parser.receive_eof()


@pytest.mark.parametrize(
    ("cut", "where"),
    [
        (0, "before its first boundary"),
        (10, "before its first boundary"),
        (len(BOUNDARY) + 2, "right after a boundary"),
        (len(BOUNDARY) + 10, "inside a part's headers"),
        (-60, "inside a part"),
        (-4, "inside a part"),
        (-1, "right after a boundary"),
    ],
)
def test_truncated_body(cut: int, where: str) -> None:
    body = build(BOUNDARY, SEED_PARTS)
    with pytest.raises(InvalidInput, match=f"ended {where}.*truncated"):
        feed(body[:cut])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--" + BOUNDARY + b"x\r\n", "followed by 'x'"),
        (b"--" + BOUNDARY + b"-x", "followed by '-x'"),
        (b"--" + BOUNDARY + b" " * 300, "expected '--' or a line break"),
        (b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\n", "expected a header line"),
        (b"--" + BOUNDARY + b"\r\nBad Name: x\r\n\r\n", "expected a header line"),
        (b"--" + BOUNDARY + b"\r\n\r\nbody", "no Content-Disposition"),
        (b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\n", "no Content-Disposition"),
        (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data\r\n\r\n", "form-data; name="),
        (b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment; name=a\r\n\r\n", "form-data"),
    ],
)
def test_malformed_is_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        feed(body, eof=False)
    assert err.value.http_status == 400


def test_body_limit_is_enforced_before_the_chunk_is_parsed() -> None:
    limits = FormLimits(max_body_bytes=2000)
    body = build(BOUNDARY, [Part("image", os.urandom(3000))])
    parser = MultipartParser(BOUNDARY, limits)
    parser.receive_data(body[:1500])
    assert parser.events_received()
    with pytest.raises(PayloadTooLarge, match="over the limit of 2000 bytes"):
        parser.receive_data(body[1500:])
    assert parser.events_received() == []  # the chunk over the limit was not looked at


def test_too_many_parts() -> None:
    body = build(BOUNDARY, [Part(f"p{i}", b"x") for i in range(5)])
    feed(body, FormLimits(max_body_bytes=10_000, max_parts=5))
    with pytest.raises(PayloadTooLarge, match="more than 4 parts"):
        feed(body, FormLimits(max_body_bytes=10_000, max_parts=4))


def test_header_block_limit_without_waiting_for_its_end() -> None:
    limits = FormLimits(max_body_bytes=1 << 20, max_header_bytes=1000)
    parser = MultipartParser(BOUNDARY, limits)
    parser.receive_data(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=a\r\n")

    def a_header_that_never_ends() -> None:
        for _ in range(100):
            parser.receive_data(b"X-Pad: " + b"y" * 50 + b"\r\n")

    with pytest.raises(PayloadTooLarge, match="headers are over the limit of 1000 bytes"):
        a_header_that_never_ends()
    ok = b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--"
    feed(ok + BOUNDARY + b"--", limits)


def test_a_boundary_must_be_valid() -> None:
    with pytest.raises(InvalidInput, match="boundary"):
        MultipartParser(b"", LIMITS)
    with pytest.raises(ValueError, match="max_parts"):
        FormLimits(max_body_bytes=1, max_parts=0)


def test_feeding_after_eof_is_a_programming_error() -> None:
    parser = MultipartParser(BOUNDARY, LIMITS)
    parser.receive_data(b"--" + BOUNDARY + b"--")
    parser.receive_eof()
    with pytest.raises(RuntimeError):
        parser.receive_data(b"x")


# -- properties -----------------------------------------------------------------------------

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
boundaries = st.text(BCHARS, min_size=1, max_size=70).filter(lambda b: not b.endswith(" "))
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\;'), max_size=12
)
# Content made of pieces that look like the start of a delimiter, to stress held-back tails.
tricky = st.sampled_from([b"\r", b"\n", b"-", b"\r\n", b"\r\n-", b"\r\n--", b"--", b"\r\r\n"])


@st.composite
def contents(draw: st.DrawFn, boundary: bytes) -> bytes:
    pieces = draw(
        st.lists(
            st.one_of(st.binary(max_size=40), tricky, st.just(b"\r\n--" + boundary[:-1])),
            max_size=12,
        )
    )
    return b"".join(pieces)


@st.composite
def forms(draw: st.DrawFn) -> tuple[bytes, list[Part], bytes]:
    boundary = draw(boundaries).encode()
    delimiter = b"\r\n--" + boundary
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        content = draw(contents(boundary))
        assume((content + delimiter).find(delimiter) == len(content))
        filename = draw(st.none() | names)
        ctype = draw(st.none() | st.sampled_from(["application/json", "image/png"]))
        parts.append(Part(draw(names), content, filename, ctype))
    preamble = draw(st.binary(max_size=20) | tricky)
    epilogue = draw(st.binary(max_size=20) | tricky)
    opening = b"\r\n" + (preamble + b"\r\n" if preamble else b"") + b"--" + boundary
    assume(opening.find(delimiter) == len(opening) - len(delimiter))
    body = build(
        boundary,
        parts,
        preamble=preamble,
        epilogue=epilogue,
        padding=draw(st.sampled_from([b"", b" ", b"\t \t"])),
    )
    return boundary, parts, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(form=forms(), data=st.data())
def test_any_chunking_gives_back_exactly_the_parts(
    form: tuple[bytes, list[Part], bytes], data: st.DataObject
) -> None:
    boundary, parts, body = form
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    assert parse(split(body, cuts), boundary) == parts


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=400)
    | st.builds(lambda a, b: a + b, st.binary(max_size=60), st.just(b"--" + BOUNDARY + b"\r\n")),
    cuts=st.lists(st.integers(0, 500), max_size=10),
)
def test_random_bytes_only_raise_typed_errors(body: bytes, cuts: list[int]) -> None:
    parser = MultipartParser(BOUNDARY, FormLimits(max_body_bytes=300, max_parts=3))
    with contextlib.suppress(InvalidInput, PayloadTooLarge):
        for chunk in split(body, cuts):
            parser.receive_data(chunk)
            parser.events_received()
        parser.receive_eof()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(form=forms(), data=st.data())
def test_damaged_forms_only_raise_typed_errors(
    form: tuple[bytes, list[Part], bytes], data: st.DataObject
) -> None:
    boundary, _, body = form
    at = data.draw(st.integers(0, len(body)))
    action = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    junk = data.draw(st.binary(min_size=1, max_size=8))
    if action == "truncate":
        body = body[:at]
    elif action == "flip":
        body = body[:at] + junk + body[at + len(junk) :]
    elif action == "insert":
        body = body[:at] + junk + body[at:]
    else:
        body = body[:at] + body[at + len(junk) :]
    limits = FormLimits(max_body_bytes=10_000, max_parts=4, max_header_bytes=300)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    # A damaged body may still be a valid form (with other parts); parse() checks that the
    # events keep their grammar whatever the bytes, and only typed errors may escape.
    with contextlib.suppress(InvalidInput, PayloadTooLarge):
        parse(split(body, cuts), boundary, limits)


# -- a last part of declared size -----------------------------------------------------------


def parse_declaring(
    chunks: Sequence[bytes], declared: int, boundary: bytes = BOUNDARY
) -> tuple[list[Part], bool]:
    """Like :func:`parse`, declaring the last part's size as soon as it has begun; also
    whether the parser took the hint."""
    body_size = sum(len(c) for c in chunks)
    parser = MultipartParser(boundary, LIMITS)
    parts: list[Part] = []
    start: PartStart | None = None
    data = bytearray()
    taken = False
    for chunk in chunks:
        parser.receive_data(chunk)
        for event in parser.events_received():
            if isinstance(event, PartStart):
                start, data = event, bytearray()
            elif isinstance(event, PartData):
                data += event.data
            elif isinstance(event, PartEnd):
                assert start is not None
                parts.append(Part(start.name, bytes(data), start.filename, start.content_type))
                start = None
        if start is not None and start.name == "last" and not taken:
            taken = parser.expect_part_size(declared, body_size=body_size)
            assert parser.part_bytes == len(data)
    parser.receive_eof()
    assert parser.done
    return parts, taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    boundary=boundaries.map(str.encode),
    first=st.binary(max_size=50),
    data=st.data(),
    epilogue=st.sampled_from([b"", b"\r\n"]),
)
def test_a_declared_size_right_or_wrong_gives_back_exactly_the_parts(
    boundary: bytes, first: bytes, data: st.DataObject, epilogue: bytes
) -> None:
    last = data.draw(contents(boundary) | st.binary(min_size=1, max_size=300))
    delimiter = b"\r\n--" + boundary
    for content in (first, last):
        assume((content + delimiter).find(delimiter) == len(content))
    parts = [Part("first", first), Part("last", last)]
    body = build(boundary, parts, epilogue=epilogue)
    declared = len(last) + data.draw(st.sampled_from([0, 0, 0, -2, -1, 1, 2, -len(last)]))
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=20))
    got, taken = parse_declaring(split(body, cuts), declared, boundary)
    assert got == parts
    if taken:
        # Only the right size, or one 2 bytes off that a closing CRLF makes look right.
        assert abs(declared - len(last)) in (0, 2)


def test_a_declared_size_is_taken_and_its_bytes_are_not_searched() -> None:
    pixels = os.urandom(300_000)
    body = build(BOUNDARY, [Part("frame", b"{}"), Part("last", pixels)])
    chunks = split(body, range(0, len(body), 65_536))
    got, taken = parse_declaring(chunks, len(pixels))
    assert taken
    assert got == [Part("frame", b"{}"), Part("last", pixels)]
    # Unsearched is unsearched: a delimiter inside the declared bytes (which RFC 2046
    # forbids) stays part of them, where a full search would have cut the part there.
    inside = pixels[:1000] + b"\r\n--" + BOUNDARY + b"\r\n\r\n" + pixels[1000:2000]
    body = build(BOUNDARY, [Part("frame", b"{}"), Part("last", inside)])
    got, taken = parse_declaring(split(body, [len(body) - len(inside) + 10]), len(inside))
    assert taken
    assert got[1].content == inside


def test_a_declared_size_is_refused_where_the_part_may_be_shorter() -> None:
    pixels = os.urandom(5000)
    # Not the last part: what follows could begin inside the declared size.
    body = build(BOUNDARY, [Part("last", pixels), Part("frame", b"{}")])
    got, taken = parse_declaring(split(body, [200]), len(pixels))
    assert not taken
    assert got == [Part("last", pixels), Part("frame", b"{}")]
    # The last part, but the body ends before the declared size would.
    body = build(BOUNDARY, [Part("frame", b"{}"), Part("last", pixels[:3000])])
    got, taken = parse_declaring(split(body, [200]), len(pixels))
    assert not taken
    assert got[1].content == pixels[:3000]


# -- the part buffer ------------------------------------------------------------------------


def test_part_buffer_sized_from_the_hint_never_moves() -> None:
    buf = PartBuffer(size_hint=1000, limit=10_000)
    block = buf.view().obj
    for _ in range(10):
        buf.write(memoryview(b"0123456789" * 10))
    assert buf.capacity == 1000
    assert buf.view().obj is block
    assert bytes(buf.view()) == b"0123456789" * 100
    assert buf.view().readonly


def test_part_buffer_grows_geometrically_up_to_its_limit() -> None:
    buf = PartBuffer(size_hint=0, limit=1_000_000)
    capacities = set()
    payload = os.urandom(10_000)
    for _ in range(100):
        buf.write(memoryview(payload))
        capacities.add(buf.capacity)
    assert bytes(buf.view()) == payload * 100
    assert len(capacities) <= 6  # 64 KiB doubling to 1 MB, not one step per write
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000000 bytes"):
        buf.write(memoryview(b"x"))


def test_part_buffer_pixels_are_read_in_place() -> None:
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8)
    buf = PartBuffer(size_hint=60, limit=60)
    buf.write(memoryview(pixels.tobytes()))
    image = np.frombuffer(buf.view(), np.uint8).reshape(4, 5, 3)
    assert np.shares_memory(image, np.frombuffer(buf.view(), np.uint8))
    assert not image.flags.writeable
    assert image.ravel().tolist() == pixels.tolist()


# -- the async reader -----------------------------------------------------------------------


async def stream(chunks: Iterable[bytes], pulled: list[int] | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pulled is not None:
            pulled.append(len(chunk))
        yield chunk


async def test_read_form_copies_the_large_part_once_into_a_block_from_content_length() -> None:
    body = build(BOUNDARY, SEED_PARTS)
    chunks = split(body, range(0, len(body), 512))
    form = await read_form(
        stream(chunks), BOUNDARY, LIMITS, content_length=len(body), large={"image"}
    )
    image = form["image"]
    assert bytes(image.data) == SEED_PARTS[0].content
    assert (image.filename, image.content_type) == ("image.raw", "application/octet-stream")
    block = image.data.obj
    assert isinstance(block, np.ndarray)
    assert block.size <= len(body)  # one block, sized up front from Content-Length
    assert bytes(form["frame"].data) == SEED_PARTS[1].content


async def test_read_form_skips_unwanted_parts_and_refuses_repeats() -> None:
    extra = Part("extra", os.urandom(100))
    body = build(BOUNDARY, [extra, *SEED_PARTS])
    form = await read_form(stream([body]), BOUNDARY, LIMITS, wanted={"image", "frame"})
    assert sorted(form) == ["frame", "image"]
    twice = build(BOUNDARY, [SEED_PARTS[1], *SEED_PARTS])
    with pytest.raises(InvalidInput, match="'frame' was sent more than once") as err:
        await read_form(stream([twice]), BOUNDARY, LIMITS, wanted={"image", "frame"})
    assert err.value.field == "frame"


async def test_read_form_refuses_a_declared_length_over_the_limit_before_reading() -> None:
    pulled: list[int] = []
    with pytest.raises(PayloadTooLarge, match="body of 5000 bytes is over the limit of 4096"):
        await read_form(
            stream([b"x" * 5000], pulled),
            BOUNDARY,
            FormLimits(max_body_bytes=4096),
            content_length=5000,
        )
    assert pulled == []


async def test_read_form_stops_reading_as_soon_as_the_limit_is_passed() -> None:
    body = build(BOUNDARY, [Part("image", os.urandom(100_000))])
    pulled: list[int] = []
    with pytest.raises(PayloadTooLarge):
        await read_form(
            stream(split(body, range(0, len(body), 1000)), pulled),
            BOUNDARY,
            FormLimits(max_body_bytes=10_000),
        )
    assert sum(pulled) <= 11_000


async def test_read_form_reports_a_truncated_stream() -> None:
    body = build(BOUNDARY, SEED_PARTS)
    with pytest.raises(InvalidInput, match="truncated"):
        await read_form(stream([body[:-10]]), BOUNDARY, LIMITS)
