"""Streaming ``multipart/form-data`` (RFC 7578): a sans-I/O parser and an async reader.

:class:`MultipartParser` is fed bytes as they arrive (``receive_data``) and hands back events
(``events_received``): :class:`PartStart`, :class:`PartData`, :class:`PartEnd`,
:class:`FormEnd`. It does no I/O and keeps no part data, so it is tested by feeding it bytes,
and :func:`read_form` is the thin layer that drives it from an ASGI body stream.

Why not buffer the body and split it: a frame-server frame is a 6.2 MB raw image. Splitting a
buffered body copies it at least twice (join, slice) and reads it all before knowing it is
too large. Here each chunk is scanned with one ``bytes.find`` for the delimiter; the data
events are ``memoryview`` slices of the chunk the caller passed in (no copy), and only the
few bytes at a chunk's end that could begin a delimiter are held back (copied) until the
next chunk says whether they do. :func:`read_form` then copies each kept part's bytes once,
into one block (:class:`PartBuffer`) sized in advance from ``Content-Length`` when known,
so an image's pixels end up contiguous and ``np.frombuffer`` reads them where they lie.

A part whose size the caller knows in advance (a raw image whose dimensions the ``frame``
part declared) need not be searched: :meth:`MultipartParser.expect_part_size` has the parser
pass all but its last two bytes through unsearched, then search on as usual, so a part
longer than declared is still read to its delimiter. The hint is taken only for the body's
last part, where ``Content-Length`` leaves room after it for the closing delimiter alone.
Two kinds of body read differently than under a full search: one that breaks RFC 2046 by
carrying its delimiter inside that part (the declared bytes are taken whole), and one whose
last part is shorter than declared by what an epilogue after the closing delimiter makes up
(it reads as truncated). The search was a fifth of the server's CPU per 6 MB frame.

Limits, all enforced as bytes arrive: the whole body (``max_body_bytes``,
:class:`~framebroker.errors.PayloadTooLarge` as soon as the count passes it, before the chunk
that passed it is parsed), the number of parts and the size of one part's header block.
Malformed input raises :class:`~framebroker.errors.InvalidInput`; nothing else escapes the
parser for any input. After an error the parser is spent: make a new one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum, auto

import numpy as np

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "FormEnd",
    "FormLimits",
    "FormPart",
    "MultipartParser",
    "PartBuffer",
    "PartData",
    "PartEnd",
    "PartSize",
    "PartStart",
    "form_boundary",
    "read_form",
]

MAX_BOUNDARY = 70
"""RFC 2046: a boundary is 1 to 70 characters."""

_MAX_PADDING = 256  # whitespace allowed between a boundary and its line break (RFC 2046 LWSP)
_SMALL_PART = 64 * 1024  # first block of a small part
_LARGE_PART = 1024 * 1024  # first block of a large part when Content-Length is not known
_MIN_GROWTH = 64 * 1024
_SEARCHED_END = 2  # bytes at the end of a part of declared size that are searched anyway

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BOUNDARY_PARAM = re.compile(r';\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")
# RFC 2046 bchars; a boundary may hold spaces but not end in one.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass(frozen=True, slots=True)
class FormLimits:
    """Bounds on one form: the whole body, its part count and one part's header block."""

    max_body_bytes: int
    max_parts: int = 16
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_parts", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part's header block was read. ``headers`` has lower-case names."""

    name: str
    filename: str | None
    content_type: str | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """Some bytes of the current part: a view on the caller's chunk (or on a small join of
    held-back bytes), valid for as long as the caller keeps that chunk unchanged."""

    data: memoryview


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part ended (its closing delimiter was seen)."""


@dataclass(frozen=True, slots=True)
class FormEnd:
    """The closing delimiter ``--boundary--`` was seen; what follows is ignored."""


Event = PartStart | PartData | PartEnd | FormEnd


class _State(Enum):
    PREAMBLE = auto()  # before the first delimiter; discarded
    DELIMITER = auto()  # after "--boundary": "--" (the end) or padding and CRLF
    HEADERS = auto()
    BODY = auto()
    EPILOGUE = auto()  # after the closing delimiter; discarded


def form_boundary(content_type: str | None, *, field: str = "Content-Type") -> bytes:
    """The boundary of a ``multipart/form-data`` content type.

    Raises :class:`UnsupportedMediaType` for another media type and :class:`InvalidInput`
    for a missing or malformed boundary (RFC 2046: 1-70 of its allowed characters).
    """
    media = (content_type or "").partition(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected Content-Type multipart/form-data, got {content_type!r}", field=field
        )
    match = _BOUNDARY_PARAM.search(content_type or "")
    if match is None:
        raise InvalidInput(
            f"multipart/form-data needs a boundary parameter, got {content_type!r}", field=field
        )
    boundary = match.group(1) if match.group(1) is not None else match.group(2)
    if not _BOUNDARY.fullmatch(boundary):
        raise InvalidInput(
            f"multipart boundary must be 1-{MAX_BOUNDARY} characters of letters, digits and "
            f"'()+_,-./:=? (not ending in a space), got {boundary!r}",
            field=field,
        )
    return boundary.encode("ascii")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _parse_headers(block: bytes, number: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    if not block:
        return headers
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            shown = line[:60].decode("utf-8", "replace")
            raise InvalidInput(
                f"multipart part {number}: expected a header line 'Name: value', got {shown!r}",
                field="body",
            )
        headers[name.decode("ascii").lower()] = value.strip(b" \t").decode("utf-8", "replace")
    return headers


class MultipartParser:
    """Sans-I/O ``multipart/form-data`` parser: bytes in, part events out.

    ``boundary`` is the raw boundary (see :func:`form_boundary`). ``receive_data`` raises
    :class:`PayloadTooLarge` for a body, part count or header block over ``limits`` and
    :class:`InvalidInput` for malformed input; ``receive_eof`` raises :class:`InvalidInput`
    if the closing delimiter never came (a truncated upload).
    """

    def __init__(self, boundary: bytes, limits: FormLimits) -> None:
        if not _BOUNDARY.fullmatch(boundary.decode("latin-1")):
            raise InvalidInput(f"invalid multipart boundary {boundary!r}", field="Content-Type")
        self.limits = limits
        self._delimiter = b"\r\n--" + boundary
        # The first delimiter may open the body with no line break before it: pretend one.
        self._tail = b"\r\n"
        self._state = _State.PREAMBLE
        self._head = bytearray()
        self._events: list[Event] = []
        self._parts = 0
        self._eof = False
        self._part_bytes = 0  # data bytes emitted for the current part
        self._part_start = 0  # offset in the body of the current part's first data byte
        self._base = 0  # offset in the body of the chunk being parsed
        self._unsearched: int | None = None  # bytes to pass before the expected delimiter
        self.bytes_received = 0
        """Body bytes fed so far, the epilogue included."""

    @property
    def done(self) -> bool:
        """True once the closing delimiter was seen."""
        return self._state is _State.EPILOGUE

    def events_received(self) -> list[Event]:
        """Events produced since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    @property
    def part_bytes(self) -> int:
        """Data bytes of the current part handed out so far (in :class:`PartData` events)."""
        return self._part_bytes

    def expect_part_size(self, size: int, *, body_size: int) -> bool:
        """Announce that the part being read holds ``size`` bytes and is the body's last, which
        is ``body_size`` bytes long; see the module's docstring. Returns whether the hint was
        taken: only while inside a part that has not yet passed ``size`` bytes, and only if
        ``body_size`` leaves room after it for exactly the closing delimiter (and a line
        break), so a part shorter than declared is never read past its end."""
        if self._state is not _State.BODY or self._unsearched is not None:
            return False
        # The last bytes are searched: a body with a closing line break after the closing
        # delimiter has the same length as one whose part is that much shorter.
        left = size - self._part_bytes - _SEARCHED_END
        if left < len(self._tail):
            return False
        after = body_size - (self._part_start + size)
        closing = len(self._delimiter) + 2  # --boundary--
        if after not in (closing, closing + 2):
            return False
        self._unsearched = left
        return True

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of the body. ``bytes`` are not copied: data events view them."""
        if self._eof:
            raise RuntimeError("receive_data() called after receive_eof()")
        size = memoryview(data).nbytes
        self.bytes_received += size
        limit = self.limits.max_body_bytes
        if self.bytes_received > limit:
            raise PayloadTooLarge(
                f"body is over the limit of {limit} bytes (read {self.bytes_received} so far)",
                field="body",
            )
        if not size or self._state is _State.EPILOGUE:
            return
        # Events hold views on the chunk, so it must not change under them.
        chunk = data if isinstance(data, bytes) else bytes(data)
        self._base = self.bytes_received - size
        pos, end = 0, len(chunk)
        while pos < end and not self.done:
            if self._state is _State.HEADERS:
                pos = self._headers(chunk, pos)
            elif self._state is _State.DELIMITER:
                pos = self._after_delimiter(chunk, pos)
            elif self._unsearched is not None:
                pos = self._pass_declared(chunk, pos)
            else:
                pos = self._scan(chunk, pos)

    def receive_eof(self) -> None:
        """The body ended; raises :class:`InvalidInput` unless the form was complete."""
        self._eof = True
        if self._state is not _State.EPILOGUE:
            where = {
                _State.PREAMBLE: "before its first boundary",
                _State.DELIMITER: "right after a boundary",
                _State.HEADERS: "inside a part's headers",
                _State.BODY: "inside a part",
            }[self._state]
            raise InvalidInput(
                f"multipart body ended {where}, after {self.bytes_received} bytes, without "
                "its closing boundary: the upload is truncated",
                field="body",
            )

    # -- states ----------------------------------------------------------------------------

    def _emit(self, view: memoryview) -> None:
        if view.nbytes and self._state is _State.BODY:
            self._part_bytes += view.nbytes
            self._events.append(PartData(view))

    def _found_delimiter(self) -> None:
        if self._state is _State.BODY:
            self._events.append(PartEnd())
        self._state = _State.DELIMITER
        self._head.clear()
        self._part_bytes = 0

    def _pass_declared(self, chunk: bytes, pos: int) -> int:
        """Inside a part of declared size: hand out its bytes unsearched, up to a little
        before the declared end, from where the search finds the delimiter (or, if the part
        is longer than declared, goes on past it)."""
        assert self._unsearched is not None
        if self._tail:  # held back before the size was declared: part of those bytes
            tail, self._tail = self._tail, b""
            self._emit(memoryview(tail))
            self._unsearched -= len(tail)
        take = min(self._unsearched, len(chunk) - pos)
        self._emit(memoryview(chunk)[pos : pos + take])
        self._unsearched -= take
        if not self._unsearched:
            self._unsearched = None
        return pos + take

    def _hold_back(self, buf: bytes, pos: int) -> None:
        """Emit ``buf[pos:]`` except a suffix that may start a delimiter, kept for later."""
        delim = self._delimiter
        # Candidates start with CRLF, or are a lone CR at the very end; looking for CRLF
        # rather than CR keeps this cheap on pixels full of 0x0d.
        k = buf.find(b"\r\n", max(pos, len(buf) - len(delim) + 1))
        while k >= 0 and not delim.startswith(buf[k:]):
            k = buf.find(b"\r\n", k + 1)
        if k < 0 and len(buf) > pos and buf[-1] == 0x0D:
            k = len(buf) - 1
        if k < 0:
            self._emit(memoryview(buf)[pos:])
        else:
            self._emit(memoryview(buf)[pos:k])
            self._tail = buf[k:]

    def _scan(self, chunk: bytes, pos: int) -> int:
        """Body or preamble: look for the next delimiter; returns where parsing goes on."""
        delim = self._delimiter
        n = len(delim)
        tail = self._tail
        if tail:
            self._tail = b""
            # A delimiter that starts in the held-back bytes ends within n - 1 bytes more.
            window = tail + chunk[pos : pos + n - 1]
            i = window.find(delim)
            if i >= 0:
                self._emit(memoryview(window)[:i])
                self._found_delimiter()
                return pos + i + n - len(tail)
            if len(chunk) - pos < n - 1:  # the whole chunk is in the window
                self._hold_back(window, 0)
                return len(chunk)
            self._emit(memoryview(tail))
        i = chunk.find(delim, pos)
        if i >= 0:
            self._emit(memoryview(chunk)[pos:i])
            self._found_delimiter()
            return i + n
        self._hold_back(chunk, pos)
        return len(chunk)

    def _after_delimiter(self, chunk: bytes, pos: int) -> int:
        """After ``--boundary``: ``--`` ends the form; else optional padding, then CRLF."""
        head = self._head
        before = len(head)
        take = chunk[pos : pos + _MAX_PADDING + 2 - before]
        head += take
        if head.startswith(b"--"):
            self._state = _State.EPILOGUE
            self._events.append(FormEnd())
            return len(chunk)
        if head == b"-":
            return len(chunk)
        j = head.find(b"\r\n")
        line = head if j < 0 else head[:j]
        if line.rstrip(b"\r").strip(b" \t") or (j < 0 and len(head) > _MAX_PADDING + 1):
            shown = bytes(line[:20]).decode("latin-1")
            raise InvalidInput(
                f"multipart boundary is followed by {shown!r}; expected '--' or a line break",
                field="body",
            )
        if j < 0:
            return len(chunk)
        head.clear()
        self._state = _State.HEADERS
        return pos + j + 2 - before

    def _headers(self, chunk: bytes, pos: int) -> int:
        """A part's header block, up to the blank line."""
        head = self._head
        limit = self.limits.max_header_bytes
        before = len(head)
        take = chunk[pos : pos + limit + 4 - before]
        head += take
        if head.startswith(b"\r\n"):  # no headers at all
            block, used = b"", 2
        else:
            i = head.find(b"\r\n\r\n", max(0, before - 3))
            if i < 0 and len(head) <= limit:
                return len(chunk)
            if i < 0 or i > limit:
                raise PayloadTooLarge(
                    f"multipart part {self._parts + 1}: headers are over the limit of "
                    f"{limit} bytes",
                    field="body",
                )
            block, used = bytes(head[:i]), i + 4
        head.clear()
        self._start_part(block)
        self._part_start = self._base + pos + used - before
        return pos + used - before

    def _start_part(self, block: bytes) -> None:
        self._parts += 1
        number = self._parts
        if number > self.limits.max_parts:
            raise PayloadTooLarge(
                f"multipart body has more than {self.limits.max_parts} parts", field="body"
            )
        headers = _parse_headers(block, number)
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise InvalidInput(
                f"multipart part {number} has no Content-Disposition header", field="body"
            )
        kind, _, rest = disposition.partition(";")
        params = {
            m.group(1).lower(): _unquote(m.group(2))
            for m in _DISPOSITION_PARAM.finditer(";" + rest)
        }
        if kind.strip().lower() != "form-data" or "name" not in params:
            raise InvalidInput(
                f"multipart part {number}: expected Content-Disposition: form-data; "
                f'name="...", got {disposition[:80]!r}',
                field="body",
            )
        self._events.append(
            PartStart(
                name=params["name"],
                filename=params.get("filename"),
                content_type=headers.get("content-type"),
                headers=headers,
            )
        )
        self._state = _State.BODY


class PartBuffer:
    """One part's bytes gathered into one contiguous block, each byte copied exactly once.

    The block is ``size_hint`` bytes to begin with (an upper bound, such as what is left of
    ``Content-Length``: memory never written is never touched, so over-asking costs little)
    and doubles when it must, never past ``limit``. :meth:`view` is a read-only view on it:
    ``np.frombuffer(buffer.view())`` reads the pixels where they were received.
    """

    __slots__ = ("_block", "_limit", "_size", "_view")

    def __init__(self, size_hint: int, limit: int) -> None:
        self._limit = limit
        self._block = np.empty(max(0, min(size_hint, limit)), np.uint8)
        self._view = self._block.data
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return int(self._block.size)

    def write(self, data: memoryview) -> None:
        """Append ``data``; raises :class:`PayloadTooLarge` past ``limit`` bytes in all."""
        end = self._size + data.nbytes
        if end > self._block.size:
            self._grow(end)
        self._view[self._size : end] = data
        self._size = end

    def _grow(self, needed: int) -> None:
        if needed > self._limit:
            raise PayloadTooLarge(
                f"a multipart part is over the limit of {self._limit} bytes", field="body"
            )
        size = min(self._limit, max(needed, 2 * self._block.size, _MIN_GROWTH))
        block = np.empty(size, np.uint8)
        block[: self._size] = self._block[: self._size]
        self._block, self._view = block, block.data

    def view(self) -> memoryview:
        """The bytes written so far, read-only, without a copy."""
        return self._view[: self._size].toreadonly()


PartSize = Callable[[str, memoryview, Mapping[str, "FormPart"]], int | None]
"""``(name, first_bytes, parts_read_before) -> size``: see :func:`read_form`."""


@dataclass(frozen=True, slots=True)
class FormPart:
    """A part read whole: its name, filename, content type and bytes (read-only view)."""

    name: str
    filename: str | None
    content_type: str | None
    data: memoryview


async def read_form(
    chunks: AsyncIterable[bytes],
    boundary: bytes,
    limits: FormLimits,
    *,
    content_length: int | None = None,
    wanted: Collection[str] | None = None,
    large: Collection[str] = (),
    part_size: PartSize | None = None,
) -> dict[str, FormPart]:
    """Read a whole form from ``chunks`` (e.g. Starlette's ``request.stream()``).

    Returns the parts by name; with ``wanted`` set, other parts are skipped without keeping
    their bytes. A part named in ``large`` gets a block sized from what ``Content-Length``
    says is left of the body, so it is copied once and never moved; others start small.
    A declared ``content_length`` over the limit is refused before anything is read.

    ``part_size(name, first_bytes, parts_so_far)`` is asked once about each kept part, after
    its first chunk, for the size the part will have, if the parts read before it say so;
    with ``content_length`` known, the rest of a last part of that size is then not searched
    (:meth:`MultipartParser.expect_part_size`).

    Raises :class:`PayloadTooLarge` (body, parts, headers), :class:`InvalidInput`
    (malformed or truncated body, a wanted part sent twice); exceptions of ``chunks``
    (a client disconnecting) pass through.
    """
    if content_length is not None and content_length > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"body of {content_length} bytes is over the limit of {limits.max_body_bytes} bytes",
            field="body",
        )
    parser = MultipartParser(boundary, limits)
    parts: dict[str, FormPart] = {}
    current: PartStart | None = None
    buffer: PartBuffer | None = None
    asked = True  # whether part_size was asked about the current part
    async for chunk in chunks:
        # An upper bound of what the next part can hold; without one, start small and grow.
        left = content_length - parser.bytes_received if content_length is not None else None
        parser.receive_data(chunk)
        for event in parser.events_received():
            if isinstance(event, PartData):
                if buffer is not None:
                    buffer.write(event.data)
            elif isinstance(event, PartStart):
                current, buffer = event, None
                if wanted is None or event.name in wanted:
                    if event.name in parts:
                        raise InvalidInput(
                            f"multipart part {event.name!r} was sent more than once",
                            field=event.name,
                        )
                    if left is None:
                        hint = _LARGE_PART if event.name in large else _SMALL_PART
                    else:
                        hint = left if event.name in large else min(left, _SMALL_PART)
                    buffer = PartBuffer(hint, limits.max_body_bytes)
                    asked = part_size is None or content_length is None
            elif isinstance(event, PartEnd):
                if current is not None and buffer is not None:
                    parts[current.name] = FormPart(
                        current.name, current.filename, current.content_type, buffer.view()
                    )
                current, buffer = None, None
        if not asked and current is not None and buffer is not None and len(buffer):
            asked = True
            size = part_size(current.name, buffer.view(), parts) if part_size else None
            if size is not None and content_length is not None:
                parser.expect_part_size(size, body_size=content_length)
    parser.receive_eof()
    return parts
