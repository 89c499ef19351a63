"""``framebroker extract-frames SOURCE DESTINATION``: replay a video into a frame server.

The tool of the frame server (the OverTrack plugin rig): decode ``SOURCE`` with PyAV, sample it at
``--fps`` on the video's own clock from ``--seek``, scale each sample to 1920×1080 (or
``--size``), and POST it to ``DESTINATION`` as ``multipart/form-data`` with two parts:

- ``image``: the raw BGR bytes, ``height × width × 3`` (6,220,800 bytes at 1920×1080);
- ``frame``: JSON, the original API's fields in the original API's order::

    {"timestamp": 1556855549.37, "timestamp_str": "2019/05/03 03:52:29.37",
     "relative_timestamp_str": "00:00:00.00", "relative_timestamp": 0.0, "frame_no": 51,
     "source": {...}}

``relative_timestamp`` is the frame's time on the video clock (0 at the start of the video,
also after a seek) and ``frame_no`` its number in the video. ``timestamp`` is
``start + relative_timestamp``, where ``start`` is, by default, the time the container says
the recording was made (its ``creation_time``) and otherwise the wall-clock time the
extraction began (what the original API's tool always did); ``--start-time`` picks either or a fixed
time. A replay therefore carries the recording's own times when the file has them, and
timestamps always advance with the video, however fast it is replayed. ``timestamp_str`` is
``timestamp`` in UTC to the hundredth of a second.

``source`` is the same object in every frame of a run; it describes the file and the
extraction (see :func:`describe_source`), and its ``run`` field is new for every run, so a
server keying sessions by the ``source`` object starts a fresh session for each replay.

Frames go out as fast as they decode, one request at a time on one kept-alive connection;
``--realtime`` holds each one back to its time on the video clock, as a live capture would.
A reply other than 200 with a JSON object stops the run (``--keep-going`` counts it and goes
on); ``--out`` saves each good reply as one line of JSON.

Exit status: 0 every frame answered 200; 1 some frame was refused; 2 the source, the
destination or the ``--out`` file cannot be used, or the connection was lost; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TextIO

import av
import numpy as np
import orjson
from numpy.typing import NDArray
from tqdm import tqdm

from .. import __version__
from ..client.connection import Verify
from ..client.errors import ApiError, ClientError, ProtocolError
from ..client.frames import FramesClient
from ..errors import FramebrokerError
from ..media.container import open_source
from ..media.sampling import read_frames

__all__ = [
    "DEFAULT_SIZE",
    "ExtractOptions",
    "ExtractSummary",
    "OutputError",
    "VideoInfo",
    "describe_source",
    "extract",
    "frame_document",
    "parse_fps",
    "parse_header",
    "parse_size",
    "parse_start_time",
    "probe",
    "relative_timestamp_str",
    "run",
    "timestamp_str",
]

DEFAULT_SIZE = (1920, 1080)
StartTime = float | Literal["auto", "now"]
# A creation time before this is a muxer's placeholder (0 on the 1904 or 1970 epoch).
_EARLIEST_CREATION = datetime(1990, 1, 1, tzinfo=UTC).timestamp()
# How much of a refused frame's reply body goes into the one-line report.
_BODY_SHOWN = 500


class OutputError(FramebrokerError):
    """The ``--out`` file cannot be opened or written."""

    code = "output_error"

    def __init__(self, message: str, *, field: str | None = "out") -> None:
        super().__init__(message, field=field)


def timestamp_str(epoch: float) -> str:
    """``epoch`` (seconds) in UTC as ``2019/05/03 03:52:29.37``, rounded to 1/100 s."""
    seconds, centis = divmod(round(epoch * 100), 100)
    stamp = datetime.fromtimestamp(seconds, UTC)
    return f"{stamp:%Y/%m/%d %H:%M:%S}.{centis:02d}"


def relative_timestamp_str(seconds: float) -> str:
    """``seconds`` into the video as ``HH:MM:SS.cc`` (``00:00:00.00``), rounded to 1/100 s;
    hours go past 99 rather than wrap. Raises ``ValueError`` for a negative or non-finite
    time."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"relative time must be a non-negative number, got {seconds!r}")
    whole, centis = divmod(round(seconds * 100), 100)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{centis:02d}"


def parse_fps(text: str) -> float | None:
    """``--fps``: a positive number of frames per second (``0.5`` allowed), or ``all`` for
    every frame of the video (``None``). Raises ``ValueError``."""
    if text.strip().lower() == "all":
        return None
    try:
        fps = float(text)
    except ValueError:
        fps = math.nan
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"expected a positive number of frames per second or 'all', got {text!r}")
    return fps


def parse_size(text: str) -> tuple[int, int]:
    """``--size``: ``WIDTHxHEIGHT`` in pixels, e.g. ``1280x720``. Raises ``ValueError``."""
    width, sep, height = text.lower().partition("x")
    if sep and width.strip().isdigit() and height.strip().isdigit():
        size = int(width), int(height)
        if all(0 < v <= 16384 for v in size):
            return size
    raise ValueError(
        f"expected WIDTHxHEIGHT in pixels (1 to 16384 each), e.g. 1280x720, got {text!r}"
    )


def parse_header(text: str) -> tuple[str, str]:
    """``--header``: ``NAME:VALUE`` (spaces around the value dropped). Raises ``ValueError``."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME:VALUE, e.g. 'Session-Id: game-1', got {text!r}")
    return name.strip(), value.strip()


def parse_start_time(text: str) -> StartTime:
    """``--start-time``: ``auto`` (the file's creation time, else now), ``now``, seconds since
    the epoch, or an ISO 8601 time (UTC unless it names a zone). Raises ``ValueError``."""
    word = text.strip().lower()
    if word in ("auto", "now"):
        return "auto" if word == "auto" else "now"
    try:
        value = float(word)
    except ValueError:
        try:
            value = _epoch_of(text.strip())
        except ValueError:
            raise ValueError(
                "expected auto, now, seconds since 1970 or an ISO 8601 time such as "
                f"2019-05-03T03:52:29Z, got {text!r}"
            ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"start time must be at or after 1970-01-01, got {text!r}")
    return value


def _epoch_of(iso: str) -> float:
    stamp = datetime.fromisoformat(iso)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says about a video before it is extracted: its ``label`` (the
    source with any password masked), frame rate, length and frame count (``None`` where
    unknown), the size of its frames, and its ``creation_time`` in seconds since the epoch
    (``None`` unless the container records a plausible one)."""

    label: str
    kind: str
    fps: float | None
    duration_s: float | None
    frame_count: int | None
    width: int
    height: int
    creation_time: float | None


def probe(source: str) -> VideoInfo:
    """Open ``source``, read what :class:`VideoInfo` holds, and close it.

    Raises :class:`~framebroker.media.sources.SourceError` as
    :func:`~framebroker.media.container.open_source` does.
    """
    with open_source(source) as opened:
        created: float | None = None
        for metadata in (opened.container.metadata, opened.stream.metadata):
            text = metadata.get("creation_time")
            if not text:
                continue
            try:
                value = _epoch_of(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            if _EARLIEST_CREATION <= value <= time.time() + 86_400:
                created = value
                break
        return VideoInfo(
            label=opened.spec.label,
            kind=opened.spec.kind,
            fps=opened.fps,
            duration_s=opened.duration_s,
            frame_count=opened.frame_count,
            width=opened.width,
            height=opened.height,
            creation_time=created,
        )


@dataclass(frozen=True, slots=True)
class ExtractOptions:
    """What one ``extract-frames`` run does; see the module docstring and ``--help``.

    ``fps`` ``None`` sends every frame; ``out`` ``"-"`` writes replies to standard output.
    Raises ``ValueError`` for a non-positive ``fps`` or ``timeout``, a negative ``seek_s``,
    or a bad ``size``.
    """

    source: str
    destination: str
    fps: float | None = 1.0
    seek_s: float = 0.0
    size: tuple[int, int] = DEFAULT_SIZE
    realtime: bool = False
    keep_going: bool = False
    out: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    start_time: StartTime = "auto"
    timeout_s: float = 30.0
    cafile: str | None = None
    insecure: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number or None, got {self.fps!r}")
        if not (math.isfinite(self.seek_s) and self.seek_s >= 0):
            raise ValueError(f"seek_s must be a non-negative number, got {self.seek_s!r}")
        if len(self.size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.size):
            raise ValueError(f"size must be (width, height) in pixels, got {self.size!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number, got {self.timeout_s!r}")


@dataclass(slots=True)
class ExtractSummary:
    """How a run went: its exit ``status`` (see module), frames answered 200 (``sent``) and
    refused (``failed``), seconds since the first frame was asked for, and TCP connections
    opened."""

    status: int = 0
    sent: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    connections: int = 0

    @property
    def fps(self) -> float:
        frames = self.sent + self.failed
        return frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


def describe_source(
    info: VideoInfo, options: ExtractOptions, *, start: float, run_id: str
) -> dict[str, Any]:
    """The ``source`` object sent with every frame of a run.

    The original API's fields (``file``, ``video_fps``, ``video_frames``, ``extract_fps``,
    ``original_shape`` as ``[height, width, 3]``) plus ``name`` (the file name), ``kind``
    (``file``, ``network`` or ``device``), ``duration`` (seconds or ``null``), ``seek``,
    ``realtime``, ``width`` and ``height`` (of the images sent), ``creation_time`` (ISO 8601
    or ``null``), ``start_timestamp`` (what ``relative_timestamp`` is added to), ``run`` (new
    for every run) and ``tool``.
    """
    width, height = options.size
    return {
        "type": "extract_frames",
        "file": info.label,
        "name": Path(info.label).name if info.kind == "file" else info.label,
        "kind": info.kind,
        "video_fps": info.fps,
        "video_frames": info.frame_count,
        "duration": info.duration_s,
        "original_shape": [info.height, info.width, 3],
        "extract_fps": options.fps,
        "seek": options.seek_s,
        "realtime": options.realtime,
        "width": width,
        "height": height,
        "creation_time": (
            None
            if info.creation_time is None
            else datetime.fromtimestamp(info.creation_time, UTC).isoformat()
        ),
        "start_timestamp": start,
        "run": run_id,
        "tool": f"framebroker extract-frames {__version__}",
    }


def frame_document(
    start: float, pts_s: float, frame_no: int, source: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``frame`` JSON of the frame at ``pts_s`` seconds into the video (see module)."""
    timestamp = start + pts_s
    return {
        "timestamp": timestamp,
        "timestamp_str": timestamp_str(timestamp),
        "relative_timestamp_str": relative_timestamp_str(pts_s),
        "relative_timestamp": pts_s,
        "frame_no": frame_no,
        "source": source,
    }


def _start_of(info: VideoInfo, start_time: StartTime) -> float:
    if start_time == "now":
        return time.time()
    if start_time == "auto":
        return info.creation_time if info.creation_time is not None else time.time()
    return start_time


def _expected_frames(info: VideoInfo, options: ExtractOptions) -> int | None:
    """About how many frames the run will send, for the progress bar; None: unknown."""
    if info.duration_s is None:
        return None
    span = max(info.duration_s - options.seek_s, 0.0)
    rates = [r for r in (options.fps, info.fps) if r is not None]
    if not rates:
        return None
    return max(1, math.ceil(span * min(rates) - 1e-9))


def _refusal(error: ApiError | ProtocolError) -> str:
    """Why a frame counts as refused, in one line: the status and the start of the body."""
    if not isinstance(error, ApiError):
        return error.message
    text = " ".join(error.text[:_BODY_SHOWN].split()) or "(empty body)"
    more = " ..." if len(error.text) > _BODY_SHOWN else ""
    return f"HTTP {error.status} {error.reason}: {text}{more}"


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
        return
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        stream = open(path, "wb")  # noqa: SIM115 (closed below, after the yield)
    except OSError as exc:
        raise OutputError(f"cannot write replies to {path!r}: {exc.strerror or exc}") from None
    with stream:
        yield stream


def _verify(options: ExtractOptions) -> Verify:
    if options.insecure:
        return False
    return options.cafile if options.cafile is not None else True


def run(options: ExtractOptions, *, stderr: TextIO | None = None) -> int:
    """:func:`extract`, and the exit status (see module)."""
    return extract(options, stderr=stderr).status


def extract(options: ExtractOptions, *, stderr: TextIO | None = None) -> ExtractSummary:
    """Extract and post every frame ``options`` ask for; how it went.

    Progress and the closing summary go to ``stderr`` (standard error when ``None``): a
    progress bar only when it is a terminal, neither with ``options.quiet``. Each refused
    frame is reported there in one line. Raises
    :class:`~framebroker.media.sources.SourceError`, a
    :class:`~framebroker.client.errors.ClientError` or :class:`OutputError` when the run
    cannot start; once frames are flowing, such errors are reported in one line with the
    summary and give status 2.

    Frames go through :class:`~framebroker.client.FramesClient`, without retries: the
    first refusal is reported as the server gave it.
    """
    err = stderr if stderr is not None else sys.stderr
    poster = FramesClient(
        options.destination,
        headers=dict(options.headers),
        timeout=options.timeout_s,
        verify=_verify(options),
        retries=0,
    )
    with poster:
        info = probe(options.source)
        frames = read_frames(
            options.source,
            fps=options.fps,
            seek_s=options.seek_s,
            size=options.size,
            realtime=options.realtime,
        )
        ahead = _DecodeAhead(frames)
        try:
            poster.connect()
            summary = ExtractSummary()
            with _output(options.out) as out:
                summary.status = _send_all(options, info, ahead, poster, out, summary, err)
        finally:
            ahead.close()
        summary.connections = poster.connections
    if not options.quiet:
        _print_summary(options, summary, err)
    return summary


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


_Sample = tuple[NDArray[np.uint8], float, int]


class _DecodeAhead:
    """Iterates ``frames`` in a thread of its own, ``depth`` frames ahead of the consumer.

    Decoding and scaling the next frame then overlaps posting this one (the poster waits in
    socket calls, which release the GIL), instead of adding to it. The queue is bounded, so
    at most ``depth + 2`` frames exist at once. An error in decoding is raised to the
    consumer at the frame where it happened. :meth:`close` stops the thread, which closes
    ``frames``.
    """

    _POLL_S = 0.1

    def __init__(self, frames: Iterator[_Sample], depth: int = 2) -> None:
        self._frames = frames
        self._queue: queue.Queue[tuple[_Sample | None, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="extract-frames-decoder", daemon=True
        )

    def __iter__(self) -> Iterator[_Sample]:
        self._thread.start()
        while True:
            try:
                sample, error = self._queue.get(timeout=self._POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return  # stopped by close()
                continue
            if error is not None:
                raise error
            if sample is None:
                return
            yield sample

    def _run(self) -> None:
        try:
            for sample in self._frames:
                if not self._put((sample, None)):
                    return
            self._put((None, None))
        except BaseException as exc:
            self._put((None, exc))
        finally:
            _close(self._frames)

    def _put(self, item: tuple[_Sample | None, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self._POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Stop decoding and wait up to ``timeout`` s for the thread (a source blocked on the
        network may take longer; the thread is a daemon, it cannot keep the process alive)."""
        self._stop.set()
        if self._thread.ident is None:
            _close(self._frames)
            return
        self._thread.join(timeout)


def _write_reply(out: IO[bytes], document: dict[str, Any], path: str | None) -> None:
    try:
        out.write(orjson.dumps(document) + b"\n")
        out.flush()  # a line per reply as it comes, for a reader at the other end of a pipe
    except OSError as exc:
        raise OutputError(f"cannot write replies to {path!r}: {exc.strerror or exc}") from None


def _send_all(
    options: ExtractOptions,
    info: VideoInfo,
    frames: Iterable[_Sample],
    poster: FramesClient,
    out: IO[bytes] | None,
    summary: ExtractSummary,
    err: TextIO,
) -> int:
    start = _start_of(info, options.start_time)
    source = describe_source(info, options, start=start, run_id=uuid.uuid4().hex)
    progress = _Progress(
        err,
        show=not options.quiet and err.isatty(),
        total=_expected_frames(info, options),
        name=source["name"],
    )
    began = time.perf_counter()
    status = 0
    try:
        for image, pts, index in frames:
            document = frame_document(start, pts, index, source)
            try:
                accepted = poster.post(image, orjson.dumps(document))
            except (ApiError, ProtocolError) as refused:
                summary.failed += 1
                progress.report(
                    f"framebroker: frame {index} at {relative_timestamp_str(pts)}: "
                    f"{_refusal(refused)}"
                )
                status = 1
                if not options.keep_going:
                    break
            else:
                summary.sent += 1
                if out is not None:
                    _write_reply(out, accepted, options.out)
            progress.advance(summary.failed)
    except (FramebrokerError, ClientError) as exc:  # the source, server or --out failed
        print(f"framebroker: {exc.message}", file=err)
        status = 2
    except av.FFmpegError as exc:
        print(f"framebroker: source {info.label!r}: cannot decode further: {exc}", file=err)
        status = 2
    except KeyboardInterrupt:
        print("framebroker: interrupted", file=err)
        status = 130
    finally:
        summary.elapsed_s = time.perf_counter() - began
        progress.close()
    return status


class _Progress:
    """A tqdm bar (frames/s) when ``show``, nothing otherwise: a disabled tqdm still starts
    its monitor thread, which would outlive the run."""

    def __init__(self, err: TextIO, *, show: bool, total: int | None, name: str) -> None:
        self._err = err
        self._bar = (
            tqdm(
                total=total, unit="frame", desc=name[:40], file=err, dynamic_ncols=True, leave=False
            )
            if show
            else None
        )

    def advance(self, refused: int) -> None:
        if self._bar is not None:
            if refused:
                self._bar.set_postfix(refused=refused, refresh=False)
            self._bar.update()

    def report(self, message: str) -> None:
        """Print one line above the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self._err)
        else:
            print(message, file=self._err)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_summary(options: ExtractOptions, summary: ExtractSummary, err: TextIO) -> None:
    connections = "connection" if summary.connections == 1 else "connections"
    line = (
        f"framebroker: sent {summary.sent} frames in {summary.elapsed_s:.2f} s "
        f"({summary.fps:.1f} frames/s) to {options.destination} over {summary.connections} "
        f"{connections}, {summary.failed} refused"
    )
    if options.out is not None and options.out != "-":
        line += f"; replies in {options.out}"
    print(line, file=err)
