"""Send one video to every analysis service and in-process pipeline; merge their answers.

The answer is ``{name: answer}`` with one entry per name asked for, whatever happened: a
service that times out, refuses the connection, answers 5xx, 4xx or something that is not
JSON gets ``{"error": message, "code": ..., "attempts": n}`` in its place and the others
are unaffected. Nothing here raises for a service's failure.

- :class:`HttpServices`: multipart ``POST`` of the MP4 with one shared ``httpx.AsyncClient``;
  each service has a deadline covering all its attempts; refused connections and 5xx are
  retried up to ``retries`` times with exponential backoff and jitter; a server-wide
  semaphore bounds the requests in flight; answers are read up to a size limit.
- :class:`InProcessPipelines`: named pipelines run as sessions, one session per (stream,
  pipeline), so a tracker keeps its tracks from window to window.
- :class:`Fanout`: both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

from ..core.manager import ProcessorSpec
from ..errors import FramebrokerError, InvalidInput, SessionNotFound
from ..processors.annotate import CLASS_NAMES_META
from ..sessions import FrameIn, FrameOut, Sessions

__all__ = [
    "Fanout",
    "HttpService",
    "HttpServices",
    "InProcessPipelines",
    "PipelineAnswer",
    "Video",
    "jsonable",
]

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]

_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_ERROR_BODY_CHARS = 200
_TRANSPORT = "analysis"
"""The label of the pipelines' own sessions (frames analysed in process), apart from the
streams' (``socketio``: frames received)."""


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into lists and numbers, and anything
    else JSON cannot hold turned into its ``str``; what Socket.IO's JSON encoder accepts."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str))


@dataclass(frozen=True, slots=True)
class HttpService:
    """An analysis service: ``POST url`` with the video in multipart field ``field``."""

    name: str
    url: str
    timeout_s: float = 30.0
    retries: int = 2
    field: str = "file"

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"service {self.name!r}: timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"service {self.name!r}: retries must be >= 0, got {self.retries}")


@dataclass(frozen=True, slots=True)
class Video:
    """A video to send: bytes in memory or a file on disk (read afresh for each attempt)."""

    data: bytes | None = None
    path: Path | None = None
    filename: str = "video.mp4"
    content_type: str = "video/mp4"

    def __post_init__(self) -> None:
        if (self.data is None) == (self.path is None):
            raise ValueError("a Video needs exactly one of data and path")

    @contextlib.contextmanager
    def opened(self) -> Iterator[bytes | BinaryIO]:
        """The bytes, or the file opened for reading (closed on exit)."""
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        with self.path.open("rb") as fh:
            yield fh

    def part(self, body: bytes | BinaryIO) -> tuple[str, bytes | BinaryIO, str]:
        return (self.filename, body, self.content_type)


class _Failure(Exception):
    """One attempt at a service failed; ``retry`` says whether another may help."""

    def __init__(self, code: str, message: str, *, retry: bool, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry = retry
        self.status = status


def _error(code: str, message: str, attempts: int, status: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": message, "code": code, "attempts": attempts}
    if status is not None:
        out["status"] = status
    return out


class HttpServices:
    """Posts videos to HTTP analysis services; see the module docstring for the guarantees.

    ``transport`` replaces httpx's network transport (tests); the client is made on first
    use in the running loop and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        services: Iterable[HttpService],
        *,
        max_concurrency: int = 16,
        max_answer_bytes: int = 4 * 1024 * 1024,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.services = {s.name: s for s in services}
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.max_answer_bytes = max_answer_bytes
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def names(self) -> list[str]:
        return list(self.services)

    def _ensure_client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        if self._client is None or self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._client = httpx.AsyncClient(
                transport=self._transport,
                limits=httpx.Limits(
                    max_connections=self.max_concurrency,
                    max_keepalive_connections=self.max_concurrency,
                ),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client, self._slots

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def send(
        self, video: Video, names: Collection[str] | None = None
    ) -> dict[str, dict[str, Any] | Any]:
        """Post ``video`` to the services named (all by default), at once; see the module
        docstring for the shape of the answer."""
        chosen = [self.services[n] for n in (names if names is not None else self.services)]
        if not chosen:
            return {}
        answers = await asyncio.gather(*(self._one(s, video) for s in chosen))
        return dict(zip((s.name for s in chosen), answers, strict=True))

    async def _one(self, service: HttpService, video: Video) -> Any:
        attempts = 0
        deadline = time.monotonic() + service.timeout_s
        try:
            async with asyncio.timeout(service.timeout_s):
                while True:
                    attempts += 1
                    try:
                        return await self._attempt(service, video, deadline)
                    except _Failure as failure:
                        if not failure.retry or attempts > service.retries:
                            return _error(failure.code, failure.message, attempts, failure.status)
                        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
                        delay *= 0.5 + random.random()  # jitter: retries of many sessions spread
                        if time.monotonic() + delay >= deadline:
                            return _error(failure.code, failure.message, attempts, failure.status)
                        log.info(
                            "service %s: %s; retry %d in %.2f s",
                            service.name,
                            failure.message,
                            attempts,
                            delay,
                        )
                        await asyncio.sleep(delay)
        except TimeoutError:
            return _error(
                "service_timeout",
                f"{service.name}: no answer within {service.timeout_s:g} s",
                attempts,
            )
        except Exception as exc:  # a bug here must not take the other answers down
            log.exception("service %s failed unexpectedly", service.name)
            return _error("service_error", f"{service.name}: {type(exc).__name__}: {exc}", attempts)

    async def _attempt(self, service: HttpService, video: Video, deadline: float) -> Any:
        client, slots = self._ensure_client()
        async with slots:
            remaining = max(0.001, deadline - time.monotonic())
            try:
                with video.opened() as body:
                    request = client.build_request(
                        "POST",
                        service.url,
                        files={service.field: video.part(body)},
                        timeout=httpx.Timeout(remaining),
                    )
                    response = await client.send(request, stream=True)
                    try:
                        content = await self._read(response, service)
                    finally:
                        await response.aclose()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise _Failure(
                    "service_unavailable",
                    f"{service.name}: cannot connect to {service.url}: {exc or type(exc).__name__}",
                    retry=True,
                ) from None
            except httpx.TimeoutException:
                raise TimeoutError from None  # the deadline is the service's whole budget
            except httpx.HTTPError as exc:
                raise _Failure(
                    "service_error",
                    f"{service.name}: {type(exc).__name__}: {exc}",
                    retry=isinstance(exc, httpx.RemoteProtocolError),
                ) from None
        status = response.status_code
        if status >= 400:
            text = content[:_ERROR_BODY_CHARS].decode("utf-8", "replace")
            raise _Failure(
                "service_error",
                f"{service.name}: answered HTTP {status}: {text}",
                retry=status in _RETRY_STATUSES,
                status=status,
            )
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("content-type", "no content type")
            raise _Failure(
                "invalid_answer",
                f"{service.name}: answered {len(content)} bytes of {kind}, expected JSON",
                retry=False,
                status=status,
            ) from None

    async def _read(self, response: httpx.Response, service: HttpService) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_answer_bytes:
            raise _Failure(
                "invalid_answer",
                f"{service.name}: answer of {declared} bytes is over the limit of "
                f"{self.max_answer_bytes}",
                retry=False,
                status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_answer_bytes:
                raise _Failure(
                    "invalid_answer",
                    f"{service.name}: answer is over the limit of {self.max_answer_bytes} bytes",
                    retry=False,
                    status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def frame_answer(result: FrameOut) -> dict[str, Any]:
    """What one frame of an in-process pipeline gave: every processor's output and, when the
    pipeline found or tracked anything, ``tracks``: each object's box (``[x1, y1, x2, y2]``
    pixels), score, class id and name (when the detector names its classes), and track id
    (``None`` until a tracker confirms one), as the REST tracker answers."""
    out = dict(result.outputs)
    dets = result.detections
    if dets is None:
        return out
    found = result.meta.get(CLASS_NAMES_META)
    names: list[Any] | tuple[Any, ...] = found if isinstance(found, list | tuple) else ()
    tracks = []
    for box, score, class_id, track_id in zip(
        dets.xyxy.tolist(),
        dets.score.tolist(),
        dets.class_id.tolist(),
        dets.track_id.tolist(),
        strict=True,
    ):
        named = 0 <= class_id < len(names)
        tracks.append(
            {
                "box": [round(v, 2) for v in box],
                "score": round(score, 4),
                "class_id": class_id,
                "class_name": str(names[class_id]) if named else None,
                "track_id": track_id if track_id >= 0 else None,
            }
        )
    out["tracks"] = tracks
    return out


@dataclass(slots=True)
class PipelineAnswer:
    """What one pipeline made of some frames: per-frame outputs in order, the frames' errors,
    and, once its session ended, the summary of ``end()``."""

    frames: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames, "results": jsonable(self.results)}
        if self.errors:
            out["errors"] = jsonable(self.errors)
        if self.summary is not None:
            out["summary"] = jsonable(self.summary)
        if self.truncated:
            out["truncated"] = True
        return out


class InProcessPipelines:
    """Named pipelines (processor specs) run on frames as sessions of their own.

    A *stream* (one video analysis session, one /batch upload) gets one session per pipeline,
    made on its first frames and ended by :meth:`end`; the idle sweep may end one first, and
    then the next frames start a fresh one.
    """

    def __init__(
        self, sessions: Sessions, pipelines: Mapping[str, Sequence[ProcessorSpec]]
    ) -> None:
        self.sessions = sessions
        self.pipelines = {name: list(specs) for name, specs in pipelines.items()}
        self._sessions: dict[tuple[str, str], str] = {}
        # Windows of one stream may be analysed side by side; their frames must still reach
        # each pipeline in order, one window after the other.
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def names(self) -> list[str]:
        return list(self.pipelines)

    def check(self) -> None:
        """Build each pipeline once so a bad spec stops the server at start-up
        (:class:`~framebroker.errors.ProcessorLoadError`)."""
        for specs in self.pipelines.values():
            self.sessions.check_pipeline(specs)

    async def _session(self, stream: str, name: str) -> str:
        session_id = self._sessions.get((stream, name))
        if session_id is not None:
            return session_id
        info = await self.sessions.create(transport=_TRANSPORT, pipeline=self.pipelines[name])
        self._sessions[(stream, name)] = info.id
        return info.id

    async def run(
        self,
        stream: str,
        frames: Sequence[Image],
        names: Collection[str] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``frames`` through each pipeline named (all by default), pipelines at once;
        ``{name: PipelineAnswer.to_dict() or {"error": ...}}``."""
        chosen = list(names if names is not None else self.pipelines)
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            answers = await asyncio.gather(
                *(self._run_one(stream, name, frames, meta or {}) for name in chosen)
            )
        return dict(zip(chosen, answers, strict=True))

    async def _run_one(
        self, stream: str, name: str, frames: Sequence[Image], meta: Mapping[str, Any]
    ) -> dict[str, Any]:
        answer = PipelineAnswer()
        try:
            for image in frames:
                await self._submit(stream, name, image, meta, answer)
        except FramebrokerError as exc:
            return {**exc.to_dict(), "frames": answer.frames}
        except Exception as exc:
            log.exception("pipeline %s failed", name)
            return {"error": f"{type(exc).__name__}: {exc}", "code": "internal"}
        return answer.to_dict()

    async def _submit(
        self, stream: str, name: str, image: Image, meta: Mapping[str, Any], answer: PipelineAnswer
    ) -> None:
        session_id = await self._session(stream, name)
        frame = FrameIn.from_array(image, meta=dict(meta))
        try:
            result = await self.sessions.submit(session_id, frame)
        except SessionNotFound:
            # Ended by the idle sweep between two windows: start it again, once.
            self._sessions.pop((stream, name), None)
            session_id = await self._session(stream, name)
            result = await self.sessions.submit(session_id, frame)
        answer.frames += 1
        answer.results.append(frame_answer(result))
        answer.errors.extend({"frame": answer.frames - 1, **e} for e in result.errors)

    async def run_stream(
        self,
        frames: AsyncIterator[Image],
        names: Collection[str] | None = None,
        *,
        max_frames: int,
    ) -> dict[str, Any]:
        """Run the frames of ``frames`` through each pipeline named, in a stream of its own
        that is ended afterwards, with its summary in the answer. Only the first
        ``max_frames`` are run (``truncated`` says when there were more)."""
        chosen = list(names if names is not None else self.pipelines)
        stream = f"batch-{id(frames):x}-{time.monotonic_ns():x}"
        answers = {name: PipelineAnswer() for name in chosen}
        failed: dict[str, dict[str, Any]] = {}
        seen = 0
        try:
            async for image in frames:
                live = [n for n in chosen if n not in failed]
                if not live:
                    break
                if seen >= max_frames:
                    for n in live:
                        answers[n].truncated = True
                    break
                seen += 1
                outcomes = await asyncio.gather(
                    *(self._submit(stream, n, image, {}, answers[n]) for n in live),
                    return_exceptions=True,
                )
                for n, outcome in zip(live, outcomes, strict=True):
                    if isinstance(outcome, FramebrokerError):
                        failed[n] = {**outcome.to_dict(), "frames": answers[n].frames}
                    elif isinstance(outcome, BaseException):
                        if not isinstance(outcome, Exception):
                            raise outcome
                        log.error("pipeline %s failed", n, exc_info=outcome)
                        failed[n] = {"error": f"{type(outcome).__name__}: {outcome}"}
        finally:
            summaries = await self.end(stream)
        out: dict[str, Any] = {}
        for name in chosen:
            if name in failed:
                out[name] = failed[name]
                continue
            answers[name].summary = summaries.get(name)
            out[name] = answers[name].to_dict()
        return out

    async def end(self, stream: str) -> dict[str, dict[str, Any]]:
        """End the stream's pipeline sessions; their summaries (``end()`` results) by name."""
        out: dict[str, dict[str, Any]] = {}
        self._locks.pop(stream, None)
        for key in [k for k in self._sessions if k[0] == stream]:
            session_id = self._sessions.pop(key)
            with contextlib.suppress(SessionNotFound):
                summary = await self.sessions.end(session_id, reason="stream_ended")
                out[key[1]] = summary.results
        return out


class Fanout:
    """The HTTP services and the in-process pipelines of one server, under one set of names.

    ``select`` turns a client's choice (``None``: everything) into the names to run, raising
    :class:`~framebroker.errors.InvalidInput` for a name that is not configured.
    """

    def __init__(self, http: HttpServices, pipelines: InProcessPipelines | None = None) -> None:
        self.http = http
        self.pipelines = pipelines
        both = set(http.names) & set(pipelines.names if pipelines else ())
        if both:
            raise ValueError(f"{sorted(both)} named both as a service and as a pipeline")

    @property
    def names(self) -> list[str]:
        return [*self.http.names, *(self.pipelines.names if self.pipelines else [])]

    @property
    def has_pipelines(self) -> bool:
        return bool(self.pipelines and self.pipelines.names)

    def options(self) -> list[dict[str, Any]]:
        """What can be run, for ``GET /options`` (service URLs are the server's business)."""
        out: list[dict[str, Any]] = [
            {"name": name, "kind": "service"} for name in self.http.services
        ]
        if self.pipelines is not None:
            for name, specs in self.pipelines.pipelines.items():
                procs = [s if isinstance(s, str) else str(s.get("name")) for s in specs]
                out.append({"name": name, "kind": "pipeline", "processors": procs})
        return out

    def select(self, requested: Iterable[str] | None, *, field: str = "processes") -> list[str]:
        if requested is None:
            return self.names
        chosen = list(dict.fromkeys(requested))
        unknown = sorted(set(chosen) - set(self.names))
        if unknown:
            raise InvalidInput(
                f"{field}: unknown {unknown}; configured: {self.names or 'none'}", field=field
            )
        return chosen

    def _split(self, names: Collection[str]) -> tuple[list[str], list[str]]:
        http = [n for n in names if n in self.http.services]
        local = [n for n in names if n not in self.http.services]
        return http, local

    async def window(
        self,
        stream: str,
        video: Video,
        frames: Sequence[Image],
        names: Collection[str],
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One window: the video to the services and the frames to the pipelines, at once."""
        http, local = self._split(names)
        jobs = [self.http.send(video, http)]
        if local and self.pipelines is not None:
            jobs.append(self.pipelines.run(stream, frames, local, meta=meta))
        parts = await asyncio.gather(*jobs)
        merged: dict[str, Any] = {}
        for part in parts:
            merged.update(part)
        return {name: merged[name] for name in names}

    async def batch(
        self,
        video: Video,
        frames: AsyncIterator[Image] | None,
        names: Collection[str],
        *,
        max_frames: int,
    ) -> dict[str, Any]:
        """A whole uploaded video: the file to the services, its decoded ``frames`` to the
        pipelines (each in a stream of its own, ended with a summary)."""
        http, local = self._split(names)
        jobs = [self.http.send(video, http)]
        if local and self.pipelines is not None:
            if frames is None:
                raise ValueError("pipelines were named but no frames were given")
            jobs.append(self.pipelines.run_stream(frames, local, max_frames=max_frames))
        parts = await asyncio.gather(*jobs)
        merged: dict[str, Any] = {}
        for part in parts:
            merged.update(part)
        return {name: merged[name] for name in names}

    async def end(self, stream: str) -> None:
        if self.pipelines is not None:
            await self.pipelines.end(stream)

    async def aclose(self) -> None:
        await self.http.aclose()
