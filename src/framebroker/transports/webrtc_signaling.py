"""The WebRTC model broker's signaling: WebSocket messages and the legacy HTTP ``POST /offer``.

WebSocket: ``/webrtc/ws`` on the main port, and ``/`` on the ``webrtc_ws`` compatibility
listener (8084). Every message is a JSON object with a ``type``.

From the client:

- ``offer`` ``{"data": {"sdp", "type": "offer"}, "models"?: [names]}``: answered with
  ``answer`` ``{"data": {"sdp", "type": "answer"}, "session_id"}``. The offer must send
  video; ``models`` may choose some of the configured models (by name, in merge order).
- ``ice-servers``: answered with ``ice-servers`` ``{"data": [{"urls", "username"?,
  "credential"?}]}``, the servers configured in ``webrtc.ice_servers``.
- ``candidate`` ``{"data": {"candidate", "sdpMid", "sdpMLineIndex"}}``: a trickled ICE
  candidate (optional: aiortc, and browsers that wait for gathering, put them in the offer);
  an empty ``candidate`` ends them.
- ``end``: end the connection now and get its ``result`` (closing the peer connection does
  the same, as the original API's clients do).

From the server:

- ``prediction``: each time a model answers (or fails on) a frame. ``data`` holds the newest
  output of every model merged in configured order (later keys win); ``model`` names the one
  that answered, ``frame`` and ``pts`` the frame, ``latency_ms`` the time from the decoded
  frame to this answer, ``final`` is false; ``error`` is there when that model failed on
  the frame (``disabled`` set when it was switched off for failing again and again),
  ``disabled`` lists the models switched off.
- ``result``: once, when the connection ends, with ``"final": true``. ``data`` is the merged
  final result (every model's ``end``), with ``session_id``, ``reason`` (``disconnected``,
  ``client_ended``, ``connect_timeout``, ``media_timeout``, ``ice_failed``,
  ``server_stopped``), ``stats`` (per model under ``stats.models``), ``errors``, and
  ``recording`` when the stream was recorded.
- ``error`` ``{"data": {"message", "code", "error", "field"?, "limit"?}}``: ``code`` is an
  HTTP status (400 a bad message or offer, 408 a connection that timed out, 409 an offer
  while one is open, 413 a message over ``webrtc.max_message_bytes``, 429 the client holds
  ``limits.max_sessions_per_client`` sessions, 503 the server is full). The socket stays
  open, except after a message over ``limits.max_ws_message_bytes``: it is closed with 1009
  right after the error.

One connection at a time per socket; after its ``result`` a new ``offer`` starts another.
Frames a camera sends over ``limits.max_fps_per_session`` reach no model; they are counted as
dropped (``stats.frames_dropped``, and in ``/metrics`` with reason ``rate_limited``).
Predictions and the result also go on the data channel when the client opened one (the
same JSON), which takes the text ``end session`` (what the original API's mock client
sends when its video is over) or ``{"type": "end"}``: the session ends at once. The socket
may close at any time after the answer, as that client does: the connection lives on until
the peer closes it, says ``end session``, or sends no video for ``media_timeout_s``.

HTTP: ``POST /offer`` and ``POST /webrtc/offer`` on the main port, ``POST /offer`` on the
``webrtc_http`` compatibility listener (8083); none with ``websocket_only``. The body is
``{"sdp", "type": "offer", "models"?}``, the reply ``{"sdp", "type": "answer", "session_id"}``.
Predictions then go on the data channel only; the result is kept in the store
(``GET /v1/sessions/{id}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiortc import RTCIceServer
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute, websocket_session
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..config import Limits, WebRTCSettings
from ..core.mailbox import Mailbox
from ..core.manager import ProcessorSpec
from ..errors import (
    CapacityExceeded,
    FramebrokerError,
    InvalidInput,
    InvalidJSON,
    PayloadTooLarge,
    SessionConflict,
)
from ..plugins import spec_name
from .context import ServerContext
from .http import client_of, install_error_handlers, json_response, parse_json, read_body
from .webrtc_peer import PeerOptions, PeerSession, Send, error_message, parse_offer
from .ws_limits import MessageLimit

__all__ = ["SignalingClient", "WebRTCTransport"]

log = logging.getLogger(__name__)

WS_PATH = "/webrtc/ws"
CONTROL_QUEUE = 256
"""Answers, errors and results kept for one signaling client."""
WS_TRANSPORT = "webrtc_ws"  # the signaling socket's label in /metrics, whichever listener
_CLIENT_TYPES = "offer, candidate, ice-servers or end"


def _ice_servers(settings: WebRTCSettings) -> tuple[RTCIceServer, ...]:
    return tuple(
        RTCIceServer(
            urls=server["urls"],
            username=server.get("username"),
            credential=server.get("credential"),
        )
        for server in settings.ice_servers
    )


class SignalingClient:
    """One signaling socket's outbox: control messages kept, predictions bounded.

    A client that reads slowly loses its oldest predictions (counted in ``dropped``), never
    slows the models; answers, errors and results are always sent, before any prediction
    still queued.
    """

    def __init__(self, ws: WebSocket, queue: int) -> None:
        self.ws = ws
        self.open = True
        self._wake = asyncio.Event()
        self.box: Mailbox[str] = Mailbox(
            queue, kept_first=True, max_kept=CONTROL_QUEUE, wake=self._wake.set
        )

    @property
    def dropped(self) -> int:
        return self.box.dropped

    def push(self, text: str, droppable: bool = False) -> None:
        if self.open:
            self.box.put(text, keep=not droppable)

    async def run(self) -> None:
        """Send queued messages until the socket closes or the task is cancelled."""
        try:
            while self.open:
                await self._wake.wait()
                self._wake.clear()
                while (text := self.box.take()) is not None:
                    await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.open = False


class WebRTCTransport:
    """Signaling endpoints and the live WebRTC connections of one server process.

    The server makes one per process; the main app and the compatibility listeners share it,
    so :meth:`stop` ends every connection, whichever port it came through.
    """

    def __init__(self, ctx: ServerContext, settings: WebRTCSettings, limits: Limits) -> None:
        self.ctx = ctx
        self.sessions = ctx.sessions
        self.settings = settings
        self.limits = limits
        self.options = PeerOptions(
            models=tuple(settings.models),
            ice_servers=_ice_servers(settings),
            prediction_queue=settings.client_queue,
            connect_timeout_s=settings.connect_timeout_s,
            media_timeout_s=settings.media_timeout_s,
            record_to=settings.record_to,
        )
        self.peers: set[PeerSession] = set()
        self._opening = 0
        self._stopping = False
        self._warm: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the configured models in the background (import, then ``warm_up``).

        The rest of the server does not wait for them; a model that cannot be loaded is
        logged here, and each offer is refused with its error.
        """
        names = [spec_name(s) for s in self.settings.models]
        self._warm = asyncio.create_task(self._warm_up(names), name="webrtc-warm-up")

    async def _warm_up(self, names: list[str]) -> None:
        try:
            await self.sessions.prepare(names)
        except FramebrokerError as exc:
            log.error("webrtc models cannot be loaded: %s", exc.message)
        except Exception:
            log.exception("webrtc models failed to warm up")

    async def stop(self) -> None:
        """End every connection (each model's ``end`` runs, results are kept)."""
        self._stopping = True
        if self._warm is not None:
            self._warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm
        peers = list(self.peers)
        await asyncio.gather(*(p.close("server_stopped") for p in peers), return_exceptions=True)

    # -- connections -----------------------------------------------------------------------

    async def open_peer(
        self,
        payload: object,
        send: Send | None = None,
        models: object = None,
        client: str | None = None,
    ) -> tuple[PeerSession, dict[str, Any]]:
        """Answer the offer in ``payload``; returns the connection and the answer's JSON.

        ``models`` (from the offer message) may choose some of the configured models, by
        name, in the order their outputs merge; ``None`` runs them all. ``client`` (the
        signaling peer's address) holds the session. Raises
        :class:`~framebroker.errors.InvalidInput` for a bad offer or an unknown model,
        :class:`~framebroker.errors.CapacityExceeded` when the server is full or stopping and
        :class:`~framebroker.errors.ClientSessionLimit` when ``client`` holds its share.
        """
        offer = parse_offer(payload)
        options = self.options
        if models is not None:
            options = dataclasses.replace(options, models=self.chosen_models(models))
        if self._stopping:
            raise CapacityExceeded("the server is stopping")
        limit = self.settings.max_connections
        if len(self.peers) + self._opening >= limit:
            raise CapacityExceeded(f"the server has {limit} WebRTC connections, its limit")
        self.sessions.check_client(client)  # before any ICE or DTLS work
        peer = PeerSession(
            self.sessions,
            self.ctx.offload,
            options,
            send=send,
            on_closed=self.peers.discard,
            client=client,
        )
        self._opening += 1
        try:
            answer = await peer.accept(offer)
        finally:
            self._opening -= 1
        self.peers.add(peer)
        return peer, {"sdp": answer.sdp, "type": answer.type, "session_id": peer.id}

    def chosen_models(self, names: object) -> tuple[ProcessorSpec, ...]:
        """The configured model specs that ``names`` picks, in its order.

        A client may choose among the server's models but never name other code: anything
        else raises :class:`~framebroker.errors.InvalidInput`.
        """
        configured = {spec_name(spec): spec for spec in self.options.models}
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)
        ):
            raise InvalidInput(
                "models: expected a non-empty list of distinct model names, got "
                f"{names!r}; this server runs {sorted(configured)}",
                field="models",
            )
        unknown = [n for n in names if n not in configured]
        if unknown:
            raise InvalidInput(
                f"models: {unknown} not among this server's models {sorted(configured)}",
                field="models",
            )
        return tuple(configured[n] for n in names)

    # -- HTTP ------------------------------------------------------------------------------

    async def http_offer(self, request: Request) -> Response:
        """``POST /offer``: the original API's legacy signaling."""
        body = await read_body(request, self.settings.max_message_bytes)
        offer = parse_json(body)
        models = offer.get("models") if isinstance(offer, dict) else None
        _, answer = await self.open_peer(offer, models=models, client=client_of(request))
        return json_response(answer)

    # -- WebSocket -------------------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        """The signaling socket: see the module's table of messages."""
        await ws.accept()
        client = SignalingClient(ws, self.settings.client_queue)
        sender = asyncio.create_task(client.run(), name="webrtc-signaling-send")
        peer: PeerSession | None = None
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    peer = await self._handle(message, client, peer)
                except FramebrokerError as exc:
                    self.ctx.telemetry.error(WS_TRANSPORT, exc.code)
                    client.push(error_message(exc))
                except Exception:
                    log.exception("webrtc signaling failed on a message")
                    client.push(error_message(FramebrokerError("internal server error")))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            client.open = False
            if peer is not None:
                # The original API's clients close the socket once they have the answer; the
                # connection lives on, and ends when the peer closes it, says "end session"
                # on the data channel, or sends no video for media_timeout_s.
                peer.detach()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await ws.close()

    async def _handle(
        self, message: Mapping[str, Any], client: SignalingClient, peer: PeerSession | None
    ) -> PeerSession | None:
        text = message.get("text")
        if text is None:
            raise InvalidInput("expected a JSON text message, got a binary one", field="message")
        limit = self.settings.max_message_bytes
        if len(text) > limit:
            raise PayloadTooLarge(
                f"message of {len(text)} characters is over the limit of {limit}", field="message"
            )
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidJSON(f"message is not valid JSON: {exc}", field="message") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise InvalidInput(
                'expected a JSON object with a string "type", e.g. {"type": "offer", ...}',
                field="type",
            )
        kind = msg["type"]
        if peer is not None and peer.closed.is_set():
            peer = None
        if kind == "ice-servers":
            client.push(orjson.dumps({"type": "ice-servers", "data": self.ice_servers()}).decode())
        elif kind == "offer":
            if peer is not None:
                raise SessionConflict(
                    f"connection {peer.id} is still open on this socket; close it first",
                    field="type",
                )
            address = client.ws.client.host if client.ws.client is not None else None
            peer, answer = await self.open_peer(
                msg.get("data"), send=client.push, models=msg.get("models"), client=address
            )
            session_id = answer.pop("session_id")
            client.push(
                orjson.dumps({"type": "answer", "data": answer, "session_id": session_id}).decode()
            )
        elif kind == "candidate":
            if peer is None:
                raise InvalidInput("send the offer before candidates", field="type")
            await peer.add_candidate(msg.get("data"))
        elif kind == "end":
            if peer is None:
                raise InvalidInput("no connection to end on this socket", field="type")
            await peer.close("client_ended")
            peer = None
        else:
            raise InvalidInput(
                f"unknown message type {kind!r}; expected {_CLIENT_TYPES}", field="type"
            )
        return peer

    def ice_servers(self) -> list[dict[str, Any]]:
        """The ICE servers a client should use, as the original API's ``ice-servers`` answer."""
        return [dict(server) for server in self.settings.ice_servers]

    # -- routes ----------------------------------------------------------------------------

    def socket_route(self, path: str) -> WebSocketRoute:
        """The signaling socket at ``path``: no message over ``limits.max_ws_message_bytes``
        reaches it."""
        telemetry = self.ctx.telemetry
        app = MessageLimit(
            websocket_session(self.websocket),
            self.limits.max_ws_message_bytes,
            error_message,
            lambda: telemetry.error(WS_TRANSPORT, "payload_too_large"),
        )
        return WebSocketRoute(path, app)

    def routes(self) -> list[BaseRoute]:
        """Main-port routes: the socket at ``/webrtc/ws`` and (unless ``websocket_only``)
        ``POST /webrtc/offer`` and ``POST /offer``."""
        routes: list[BaseRoute] = [self.socket_route(WS_PATH)]
        if not self.settings.websocket_only:
            routes += _offer_routes(self, ("/webrtc/offer", "/offer"))
        return routes

    def compat_app(self, name: str) -> FastAPI:
        """The original API's own listeners: ``webrtc_ws`` (socket at ``/``) and ``webrtc_http``
        (``POST /offer``)."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        telemetry = self.ctx.telemetry
        install_error_handlers(app, on_error=lambda code: telemetry.error(name, code))
        if name == "webrtc_ws":
            app.router.routes.append(self.socket_route("/"))
        elif name == "webrtc_http":
            app.router.routes.extend(_offer_routes(self, ("/offer",)))
        else:
            raise ValueError(f"unknown WebRTC listener {name!r}")
        return app


def _offer_routes(transport: WebRTCTransport, paths: Iterable[str]) -> list[BaseRoute]:
    return [Route(path, transport.http_offer, methods=["POST"]) for path in paths]
