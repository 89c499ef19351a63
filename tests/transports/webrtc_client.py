"""A real aiortc client peer for the WebRTC tests: a synthetic camera and the seed's signaling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import websockets
from aiortc import (
    MediaStreamError,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)

COLOUR = (40, 160, 220)  # BGR; flat colours survive VP8 within a few levels


class ColourTrack(VideoStreamTrack):
    """A camera showing one flat BGR colour at 30 fps; remembers when each pts was sent.

    ``stall_after``: stop delivering frames after this many (the peer stays connected).
    """

    def __init__(
        self,
        colour: tuple[int, int, int] = COLOUR,
        size: tuple[int, int] = (160, 120),
        stall_after: int | None = None,
    ) -> None:
        super().__init__()
        self.image = np.empty((size[1], size[0], 3), np.uint8)
        self.image[:] = colour
        self.stall_after = stall_after
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            while self.readyState == "live":
                await asyncio.sleep(0.05)
            raise MediaStreamError
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.image, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        self.sent[pts] = time.monotonic()
        return frame


@dataclass(eq=False)
class ClientPeer:
    """A peer connection with a camera track and, optionally, a data channel."""

    pc: RTCPeerConnection
    track: ColourTrack
    channel: RTCDataChannel | None
    channel_messages: list[dict[str, Any]] = field(default_factory=list)

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        desc = self.pc.localDescription
        return {"sdp": desc.sdp, "type": desc.type}

    async def accept(self, answer: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )

    async def close(self) -> None:
        await self.pc.close()


def client_peer(
    track: ColourTrack | None = None, *, data_channel: bool = True, video: bool = True
) -> ClientPeer:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    cam = track or ColourTrack()
    if video:
        pc.addTrack(cam)
    channel = pc.createDataChannel("predictions") if data_channel else None
    peer = ClientPeer(pc, cam, channel)
    if channel is not None:

        @channel.on("message")
        def on_message(text: str) -> None:
            peer.channel_messages.append(json.loads(text))

    return peer


@contextlib.asynccontextmanager
async def peer_and_socket(
    url: str, **kwargs: Any
) -> AsyncIterator[tuple[ClientPeer, websockets.ClientConnection]]:
    peer = client_peer(**kwargs)
    try:
        async with websockets.connect(url) as ws:
            yield peer, ws
    finally:
        await peer.close()


async def recv_json(ws: websockets.ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def recv_type(
    ws: websockets.ClientConnection, kind: str, timeout: float = 10.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The next message of ``kind``, and every message received before it."""
    before: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg, before
        before.append(msg)


async def negotiate(peer: ClientPeer, ws: websockets.ClientConnection) -> dict[str, Any]:
    """Offer over the socket, apply the answer; returns the answer message."""
    await ws.send(json.dumps({"type": "offer", "data": await peer.offer()}))
    answer, before = await recv_type(ws, "answer")
    assert not before, before
    await peer.accept(answer["data"])
    return answer


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)
