"""One WebRTC connection of the WebRTC model broker: an aiortc peer, its session, its models,
its recording.

The client offers; the server answers and receives the client's camera as a video track.
From the first frame on:

- the track is *always drained*: aiortc queues decoded frames without bound, so a task takes
  each one as it arrives, whatever the models are doing, and wraps it in a
  :class:`~framebroker.core.Frame` whose pixels are converted to BGR only if a model reads
  them (:class:`~framebroker.media.av_frame.VideoFrameImage`);
- each frame is offered to the session (policy ``newest``: every model takes the newest
  frame it can keep up with, see :mod:`framebroker.runtime.model_lanes`), and the models'
  answers come back on the session's ``prediction`` topic;
- with ``record_to`` set, frames also go to an MP4 file, encoded in the worker pool from a
  bounded queue (frames the encoder cannot keep up with are dropped and counted);
- predictions go to the data channel when the client opened one, and to ``send`` (the
  signaling WebSocket) when there is one.

The connection ends when the peer closes it, when ICE fails, when no frame arrives for
``media_timeout_s`` (or none at all within ``connect_timeout_s`` of the answer), when the
signaling socket closes, or when the server stops. Ending the session runs every model's
``end`` and persists the summary; the final ``result`` message follows if the client is still
listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import orjson
from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from ..core.inbox import Backpressure
from ..core.manager import ProcessorSpec
from ..errors import FramebrokerError, InvalidInput, SessionNotFound
from ..media.av_frame import VideoFrameImage
from ..media.recording import StreamRecorder
from ..sessions import Feed, FrameIn, Sessions, SessionSummary
from .context import Offload

__all__ = ["PeerOptions", "PeerSession", "Send", "error_message", "parse_offer"]

log = logging.getLogger(__name__)

TRANSPORT = "webrtc"
END_TEXT = "end session"
"""What the original API's clients send on the data channel to end their session."""
_RECORD_QUEUE = 60  # two seconds at 30 fps
_CHANNEL_BUFFER_LIMIT = 1 << 20  # bytes queued on the data channel before predictions drop
_FLUSH_S = 1.0  # longest wait for the final result to leave on the data channel
_DIGESTS = frozenset({"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"})

Send = Callable[[str, bool], None]
"""Hands one JSON text to the signaling client; ``True`` marks one that may be dropped for a
newer one (predictions) when the client reads slowly."""


def _dumps(payload: Any) -> str:
    try:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        # A model returned something JSON cannot hold; its text still tells the client more
        # than a dropped prediction would.
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY, default=repr).decode()


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """How a server handles each connection (from :class:`~framebroker.config.WebRTCSettings`)."""

    models: tuple[ProcessorSpec, ...]
    ice_servers: tuple[RTCIceServer, ...] = ()
    prediction_queue: int = 64
    connect_timeout_s: float = 15.0
    media_timeout_s: float = 10.0
    record_to: Path | None = None


def parse_offer(payload: object) -> RTCSessionDescription:
    """The offer in ``{"sdp": ..., "type": "offer"}``, checked to carry a video track the
    client sends. Raises :class:`~framebroker.errors.InvalidInput` saying what is wrong."""
    if not isinstance(payload, dict):
        raise InvalidInput(
            'expected an offer object {"sdp": ..., "type": "offer"}, '
            f"got {type(payload).__name__}",
            field="data",
        )
    kind, sdp = payload.get("type"), payload.get("sdp")
    if kind != "offer":
        raise InvalidInput(f'expected type "offer", got {kind!r}', field="type")
    if not isinstance(sdp, str) or not sdp.strip():
        raise InvalidInput("sdp must be a non-empty SDP string", field="sdp")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever its input makes it raise
        raise InvalidInput(
            f"sdp cannot be parsed: {type(exc).__name__}: {exc}", field="sdp"
        ) from None
    sending = [
        m
        for m in parsed.media
        if m.kind == "video" and m.port != 0 and m.direction in (None, "sendrecv", "sendonly")
    ]
    if not sending:
        raise InvalidInput("the offer sends no video track; add the camera's track", field="sdp")
    for m in parsed.media:
        # aiortc checks these only once it connects, in a task whose failure nobody sees.
        if m.port == 0:
            continue
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise InvalidInput(f"m={m.kind}: ICE ufrag or password is missing", field="sdp")
        prints = m.dtls.fingerprints if m.dtls is not None else []
        if not any(f.algorithm.lower() in _DIGESTS for f in prints):
            raise InvalidInput(
                f"m={m.kind}: no DTLS fingerprint with one of {sorted(_DIGESTS)}", field="sdp"
            )
    return RTCSessionDescription(sdp=sdp, type="offer")


class PeerSession:
    """A WebRTC connection and the framebroker session it feeds.

    Use :meth:`accept` with the client's offer, then wait on :attr:`closed` or call
    :meth:`close`. ``send`` (optional) delivers messages to the signaling client;
    ``on_closed`` is called once when the connection has ended. ``client`` (the peer's
    address) holds the session, within its ``max_sessions_per_client``; its frames are
    bounded by ``max_fps_per_session``.
    """

    def __init__(
        self,
        sessions: Sessions,
        offload: Offload,
        options: PeerOptions,
        *,
        send: Send | None = None,
        on_closed: Callable[[PeerSession], None] | None = None,
        client: str | None = None,
    ) -> None:
        self.sessions = sessions
        self._offload = offload
        self.options = options
        self.client = client
        self._send = send
        self._on_closed = on_closed
        self.pc: RTCPeerConnection | None = None
        self.session_id: str | None = None
        self.models: list[str] = []
        self._predictions: Feed | None = None
        self.channel: RTCDataChannel | None = None
        self.summary: SessionSummary | None = None
        self.reason: str | None = None
        self.closed = asyncio.Event()
        self.frames_received = 0
        self.channel_dropped = 0
        self.recording: Path | None = None
        self._recorder: StreamRecorder | None = None
        self._record_queue: deque[av.VideoFrame] = deque(maxlen=_RECORD_QUEUE)
        self._record_wake = asyncio.Event()
        # Held around each encode in a worker thread: finishing the file waits for the one in
        # flight, since the encoder cannot take a frame and its final flush at the same time.
        self._record_lock = asyncio.Lock()
        self._record_dropped = 0
        self._tracks: list[MediaStreamTrack] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ending: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def id(self) -> str | None:
        """The session id, once :meth:`accept` has succeeded."""
        return self.session_id

    # -- negotiation -----------------------------------------------------------------------

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer ``offer`` and start the session; returns the answer.

        Raises :class:`~framebroker.errors.InvalidInput` (400) for an offer aiortc cannot
        use, and whatever creating the session raises (``CapacityExceeded``,
        ``ProcessorLoadError``); nothing is left running then.
        """
        if self.pc is not None:
            raise RuntimeError("accept() was already called")
        config = RTCConfiguration(iceServers=list(self.options.ice_servers))
        pc = self.pc = RTCPeerConnection(configuration=config)
        pc.on("track", self._tracks.append)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        try:
            try:
                await pc.setRemoteDescription(offer)
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:  # aiortc asserts, raises ValueError, KeyError, ...
                raise InvalidInput(
                    f"cannot answer this offer: {type(exc).__name__}: {exc}", field="sdp"
                ) from None
            answer = pc.localDescription
            if not any(t.kind == "video" for t in self._tracks):
                raise InvalidInput(
                    "no video codec in common with the offer (VP8 or H.264 expected)", field="sdp"
                )
            info = await self.sessions.create(
                transport=TRANSPORT,
                pipeline=list(self.options.models),
                backpressure=Backpressure.NEWEST,
                client=self.client,
            )
        except BaseException:
            self.pc = None
            await pc.close()
            raise
        self.session_id, self.models = info.id, info.pipeline
        self._predictions = self.sessions.subscribe(
            f"session/{info.id}/prediction", maxlen=self.options.prediction_queue
        )
        self._spawn(self._forward_predictions(self._predictions), "predictions")
        if self.options.record_to is not None:
            self.recording = self.options.record_to / f"{info.id}.mp4"
            self._recorder = StreamRecorder(self.recording)
            self._spawn(self._record(), "record")
        video = next(t for t in self._tracks if t.kind == "video")
        self._spawn(self._drain(video), "drain")
        for extra in self._tracks:
            if extra is not video:
                self._spawn(self._discard(extra), f"discard-{extra.kind}")
        pc.on("track", self._on_late_track)
        log.info("webrtc session %s: answered, models %s", info.id, self.models)
        return answer

    async def add_candidate(self, payload: object) -> None:
        """Add a trickled ICE candidate (``{"candidate", "sdpMid", "sdpMLineIndex"}``);
        an empty candidate marks the end of candidates. Raises ``InvalidInput``."""
        if self.pc is None:
            raise InvalidInput("send the offer before candidates", field="type")
        if not isinstance(payload, dict):
            raise InvalidInput("a candidate message needs a data object", field="data")
        text = payload.get("candidate")
        if not text:
            await self.pc.addIceCandidate(None)
            return
        mid, index = payload.get("sdpMid"), payload.get("sdpMLineIndex")
        try:
            if not isinstance(text, str):
                raise TypeError(f"candidate must be a string, got {type(text).__name__}")
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
            candidate.sdpMid = mid if isinstance(mid, str) else None
            candidate.sdpMLineIndex = index if isinstance(index, int) else None
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:
            raise InvalidInput(
                f"cannot use this candidate: {type(exc).__name__}: {exc}", field="candidate"
            ) from None

    # -- media -----------------------------------------------------------------------------

    def _spawn(self, coro: Any, what: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"webrtc-{self.id}-{what}"))

    def _on_late_track(self, track: MediaStreamTrack) -> None:
        # Renegotiation is not supported, but a track must never be left undrained.
        self._spawn(self._discard(track), f"discard-{track.kind}")

    async def _drain(self, track: MediaStreamTrack) -> None:
        session_id = self.session_id
        assert session_id is not None
        timeout = self.options.connect_timeout_s
        reason = "disconnected"
        while True:
            try:
                item = await asyncio.wait_for(track.recv(), timeout)
            except MediaStreamError:
                break
            except TimeoutError:
                reason = "media_timeout" if self.frames_received else "connect_timeout"
                break
            if self._stopping or not isinstance(item, av.VideoFrame):
                continue
            if not self.frames_received:
                timeout = self.options.media_timeout_s
                log.debug("webrtc session %s: first frame %dx%d", self.id, item.width, item.height)
            self.frames_received += 1
            meta: dict[str, Any] = {"pts": item.pts, "width": item.width, "height": item.height}
            if item.time is not None:
                meta["timestamp"] = float(item.time)  # the sender's capture clock
            # A frame over the session's frame rate is dropped there, and counted.
            try:
                self.sessions.offer(session_id, FrameIn(image=VideoFrameImage(item), meta=meta))
            except SessionNotFound:  # ended elsewhere (DELETE /v1/sessions/..., the console)
                reason = "ended"
                break
            if self._recorder is not None:
                if len(self._record_queue) == self._record_queue.maxlen:
                    self._record_dropped += 1
                self._record_queue.append(item)
                self._record_wake.set()
        self.close_soon(reason)

    async def _discard(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _record(self) -> None:
        recorder = self._recorder
        assert recorder is not None
        while True:
            await self._record_wake.wait()
            self._record_wake.clear()
            while self._record_queue:
                async with self._record_lock:
                    if not self._record_queue:  # the finish took what was left
                        break
                    item = self._record_queue.popleft()
                    try:
                        await self._offload(recorder.write, item)
                    except Exception:
                        log.exception("webrtc session %s: recording failed; stopped", self.id)
                        self._record_queue.clear()
                        return

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is None:
            self.channel = channel
            channel.on("message", self._on_channel_message)

    def _on_channel_message(self, data: str | bytes) -> None:
        """The data channel takes one message, the end of the session: the original API's
        mock client sends the text ``end session`` when its video is over, and waits for the
        result marked ``"final": true``; ``{"type": "end"}`` says the same in JSON."""
        if isinstance(data, str) and data.strip().lower() == END_TEXT:
            self.close_soon("client_ended")
            return
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = None
        if isinstance(message, dict) and message.get("type") == "end":
            self.close_soon("client_ended")
            return
        error = InvalidInput(
            f'the data channel takes only "{END_TEXT}" or {{"type": "end"}}; predictions go '
            "one way",
            field="type",
        )
        self._deliver(error_message(error), droppable=False)

    def _on_state(self) -> None:
        pc = self.pc
        if pc is None:
            return
        state = pc.connectionState
        log.debug("webrtc session %s: connection %s", self.id, state)
        if state == "failed":
            self.close_soon("ice_failed")
        elif state == "closed":
            self.close_soon("disconnected")

    # -- predictions -----------------------------------------------------------------------

    async def _forward_predictions(self, feed: Feed) -> None:
        while True:
            await feed.wait()
            self._pass_predictions(feed)

    def _pass_predictions(self, feed: Feed) -> None:
        for message in feed.drain():
            self._on_prediction(message.payload)

    def _on_prediction(self, prediction: dict[str, Any]) -> None:
        message: dict[str, Any] = {
            "type": "prediction",
            "final": False,
            "data": prediction["merged"],
            "model": prediction["model"],
            "frame": prediction["frame"],
            "pts": prediction["meta"].get("pts"),
            "latency_ms": round(1000.0 * prediction["latency_s"], 3),
        }
        if prediction["error"] is not None:
            message["error"] = prediction["error"]
        if prediction["disabled"]:
            message["disabled"] = prediction["disabled"]
        self._deliver(_dumps(message), droppable=True)

    def _deliver(self, text: str, *, droppable: bool) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            if droppable and channel.bufferedAmount > _CHANNEL_BUFFER_LIMIT:
                self.channel_dropped += 1
            else:
                try:
                    channel.send(text)
                except Exception as exc:  # closed under us
                    log.debug("webrtc session %s: data channel send failed: %r", self.id, exc)
        if self._send is not None:
            self._send(text, droppable)

    def detach(self) -> None:
        """Stop sending to the signaling client (it has gone)."""
        self._send = None

    # -- ending ----------------------------------------------------------------------------

    def close_soon(self, reason: str) -> None:
        """Start ending the connection (once) without waiting for it."""
        if self._ending is None:
            self._ending = asyncio.create_task(self._end(reason), name=f"webrtc-{self.id}-end")

    async def close(self, reason: str = "ended") -> SessionSummary | None:
        """End the connection and its session; returns the summary (``None`` when the session
        never started or was ended elsewhere). Safe to call more than once."""
        self.close_soon(reason)
        assert self._ending is not None
        await asyncio.shield(self._ending)
        return self.summary

    async def _end(self, reason: str) -> None:
        self.reason = reason
        self._stopping = True  # the drain goes on taking frames, and drops them
        try:
            if self.session_id is not None:
                try:
                    self.summary = await self.sessions.end(self.session_id, reason=reason)
                except SessionNotFound:
                    log.info("webrtc session %s was ended elsewhere", self.id)
                if self._predictions is not None:  # the last answers before the result
                    self._pass_predictions(self._predictions)
                    self._predictions.close()
            await self._finish_recording()
            if self.session_id is not None:
                self._send_result(reason)
                await self._flush_channel()
            log.info(
                "webrtc session %s ended (%s) after %d frames",
                self.id,
                reason,
                self.frames_received,
            )
        except Exception:
            log.exception("webrtc session %s did not end cleanly", self.id)
        finally:
            try:
                await self._release()
            finally:
                self.closed.set()
                if self._on_closed is not None:
                    self._on_closed(self)

    async def _release(self) -> None:
        """Close the peer connection and stop the tasks reading from it."""
        pc, self.pc = self.pc, None
        if pc is not None:
            await pc.close()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _flush_channel(self) -> None:
        """Give the data channel a moment to send the result before the connection closes."""
        channel = self.channel
        deadline = asyncio.get_running_loop().time() + _FLUSH_S
        while (
            channel is not None
            and channel.readyState == "open"
            and channel.bufferedAmount > 0
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.01)

    async def _finish_recording(self) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        async with self._record_lock:
            remaining = list(self._record_queue)
            self._record_queue.clear()

            def flush() -> None:
                for item in remaining:
                    recorder.write(item)
                recorder.close()

            try:
                await self._offload(flush)
            except Exception:
                log.exception("webrtc session %s: could not finish the recording", self.id)
        if self._record_dropped:
            log.warning(
                "webrtc session %s: %d frames not recorded (encoder too slow)",
                self.id,
                self._record_dropped,
            )

    def _send_result(self, reason: str) -> None:
        summary = self.summary
        message: dict[str, Any] = {
            "type": "result",
            "final": True,
            "data": summary.results if summary is not None else {},
            "session_id": self.id,
            "reason": reason,
        }
        if summary is not None:
            message["stats"] = summary.stats
            message["errors"] = summary.errors
        if self.recording is not None and self._recorder is not None and self._recorder.frames:
            message["recording"] = str(self.recording)
        if reason in ("connect_timeout", "media_timeout", "ice_failed"):
            self._error(reason)
        self._deliver(_dumps(message), droppable=False)

    def _error(self, reason: str) -> None:
        text = {
            "connect_timeout": "no video arrived within "
            f"{self.options.connect_timeout_s:g} s of the answer (ICE or DTLS did not connect)",
            "media_timeout": f"no video for {self.options.media_timeout_s:g} s",
            "ice_failed": "ICE failed: the peers cannot reach each other",
        }[reason]
        self._deliver(
            _dumps({"type": "error", "data": {"message": text, "code": 408, "error": reason}}),
            droppable=False,
        )


def error_message(exc: FramebrokerError) -> str:
    """The original API's ``error`` message for ``exc``: its text, its HTTP status as ``code``, its
    name as ``error``, and the rest of its JSON body (``field``, ``limit``, ...)."""
    body = exc.to_dict()
    data: dict[str, Any] = {"message": exc.message, "code": exc.http_status, "error": exc.code}
    data.update((k, v) for k, v in body.items() if k not in ("error", "code"))
    return _dumps({"type": "error", "data": data})
