"""Seed 004 end to end: `framebroker serve` in its own process, real aiortc peers, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
import websockets

from ..tools.clips import picture, write_clip
from ..transports.webrtc_client import ColourTrack, client_peer, negotiate, recv_type, wait_for
from .server import RunningServer, compat_flags, free_port, running_server

ROOT = Path(__file__).resolve().parents[2]
MODELS = "tests.e2e.webrtc_models"


class NumberedTrack(ColourTrack):
    """A camera whose frame ``i`` shows ``i`` in binary (see ``tests.tools.clips``)."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(picture(len(self.sent) % 256), format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        self.sent[pts] = time.monotonic()
        return frame


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningServer, int]]:
    # The server imports the test models by module:attr, as it would a user's models.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    config = tmp_path / "framebroker.toml"
    config.write_text("[webrtc]\nmedia_timeout_s = 2.0\nconnect_timeout_s = 10.0\n")
    ws_port = free_port()
    with running_server(
        tmp_path / "data",
        "--config",
        str(config),
        "--model",
        f"{MODELS}:FrameNumber",
        "--model",
        f"{MODELS}:Slow",
        "--record-to",
        str(tmp_path / "rec"),
        *compat_flags(webrtc_ws=ws_port),
    ) as running:
        yield running, ws_port


def stored(server: RunningServer, session_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while True:
        r = httpx.get(f"{server.url}/v1/sessions/{session_id}", timeout=5)
        if r.status_code == 200 and r.json()["state"] == "ended":
            return dict(r.json())
        if time.monotonic() > deadline:
            raise AssertionError(f"session not ended in time: {r.status_code} {r.text}")
        time.sleep(0.1)


def test_a_camera_over_webrtc_gets_predictions_and_a_persisted_final_result(
    server: tuple[RunningServer, int], tmp_path: Path
) -> None:
    running, ws_port = server

    async def scenario() -> tuple[
        dict[str, object], list[dict[str, object]], list[dict[str, object]]
    ]:
        peer = client_peer(NumberedTrack(size=(320, 240)))
        try:
            async with websockets.connect(f"ws://127.0.0.1:{ws_port}/") as ws:  # seed's 8084
                answer = await negotiate(peer, ws)
                predictions = []
                while len(predictions) < 60:
                    msg, _ = await recv_type(ws, "prediction", timeout=20)
                    predictions.append(msg)
                await wait_for(lambda: len(peer.channel_messages) >= 10)
                await peer.close()  # disconnecting ends the session
                result, _ = await recv_type(ws, "result", timeout=20)
                assert result["session_id"] == answer["session_id"]
                return result, predictions, peer.channel_messages
        finally:
            await peer.close()

    result, predictions, on_channel = asyncio.run(scenario())

    numbers = [p["data"]["drawn_index"] for p in predictions if p["model"] == "frame_number"]
    frames = [p["frame"] for p in predictions if p["model"] == "frame_number"]
    # The pictures arrive intact: what the model read is what the camera drew.
    assert numbers == [f % 256 for f in frames]
    assert len(numbers) >= 40
    # The slow model (0.3 s a frame) took only the newest frames and stalled nobody.
    slow = [p for p in predictions if p["model"] == "slow"]
    assert 1 <= len(slow) < len(numbers) / 4
    assert predictions[-1]["data"]["model"] == "slow"  # merged in --model order
    assert all(m["type"] == "prediction" for m in on_channel)

    data = result["data"]
    assert isinstance(data, dict)
    assert data["frames_seen"] >= 40
    assert data["slow_total"] >= 1
    models = result["stats"]["models"]  # type: ignore[index]
    assert models["slow"]["frames_skipped"] > models["slow"]["frames_run"]
    assert models["frame_number"]["frames_skipped"] <= 3

    record = stored(running, str(result["session_id"]))
    summary = record["summary"]
    assert isinstance(summary, dict)
    assert summary["results"] == data
    assert summary["reason"] == "disconnected"
    assert summary["pipeline"] == ["frame_number", "slow"]
    recording = Path(str(result["recording"]))
    assert recording.parent == tmp_path / "rec"
    with av.open(str(recording)) as container:
        assert (
            container.streams.video[0].frames >= 40
            or sum(1 for _ in container.decode(video=0)) >= 40
        )


def test_the_stream_tool_and_a_peer_that_vanishes(
    server: tuple[RunningServer, int], tmp_path: Path
) -> None:
    running, _ = server
    clip = write_clip(tmp_path / "clip.mp4", seconds=2, fps=10)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "framebroker",
            "stream",
            str(clip),
            f"{running.url}/offer",
            "--use-http",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["type"] == "answer"
    assert lines[-1]["type"] == "result"
    assert lines[-1]["reason"] == "client_ended"
    drawn = [
        m["data"]["drawn_index"]
        for m in lines
        if m["type"] == "prediction" and m["model"] == "frame_number"
    ]
    assert drawn == sorted(drawn)
    assert drawn[-1] >= 15
    assert stored(running, lines[0]["session_id"])["state"] == "ended"

    # A client killed mid-stream says nothing: the server notices the silence and ends it.
    vanishing = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "framebroker",
            "stream",
            str(clip),
            f"{running.url}/offer",
            "--use-http",
            "--loop",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert vanishing.stdout is not None
        first = json.loads(vanishing.stdout.readline())
        assert first["type"] == "answer"
        assert json.loads(vanishing.stdout.readline())["type"] == "prediction"
    finally:
        vanishing.send_signal(signal.SIGKILL)
        vanishing.wait(10)
        if vanishing.stdout is not None:
            vanishing.stdout.close()
    record = stored(running, first["session_id"])
    summary = record["summary"]
    assert isinstance(summary, dict)
    assert summary["reason"] in ("media_timeout", "ice_failed", "disconnected")
    assert summary["results"]["frames_seen"] >= 1
    # The server is fine afterwards.
    assert httpx.get(f"{running.url}/healthz", timeout=5).json()["status"] == "ok"


def test_the_seed_mock_models_stay_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's two deliberately slow models (0.2 s and 0.5 s a frame) on a 30 fps camera:
    both answer, each on the newest frame it can keep up with, and the stream never waits."""
    models = ROOT / "examples" / "models"
    assert (models / "mock_model_1.py").is_file(), "examples/models is part of the repository"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(models), str(ROOT)]))
    clip = write_clip(tmp_path / "clip.mp4", seconds=4, fps=30)
    ws_port = free_port()
    with running_server(
        tmp_path / "data",
        "--model",
        "mock_model_1:MockModel1",
        "--model",
        "mock_model_2:MockModel2",
        *compat_flags(webrtc_ws=ws_port),
    ):
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "framebroker", "stream", str(clip), f"ws://127.0.0.1:{ws_port}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    predictions = [m for m in lines if m["type"] == "prediction"]
    assert {"brightness", "motion"} <= set(predictions[-1]["data"])
    result = lines[-1]
    assert result["type"] == "result"
    assert result["data"]["brightness_frames"] >= 8
    assert result["data"]["motion_frames"] >= 3
    models_stats = result["stats"]["models"]
    assert models_stats["mock_model_2"]["frames_skipped"] > 60  # 120 frames, 0.5 s each
    assert result["stats"]["frames_in"] >= 110  # the track was drained all along
    assert took < 4 + 10  # the 4 s clip streamed in real time, plus start-up and the end
