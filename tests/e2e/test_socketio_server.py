"""Seed 002 against the real `framebroker serve` process: python-socketio clients and httpx over
loopback, real local analysis services, configuration from a TOML file and the environment."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
import socketio

from framebroker.media.encode import encode_mp4

from ..transports.images import scene
from ..transports.socketio_harness import Client, connected, jpeg
from ..video_analysis.analysis_services import AnalysisServices, refused_url
from .server import running_server


def write_config(path: Path, services: AnalysisServices) -> Path:
    table = {
        "decode": services.url("/decode"),
        "slow": {"url": services.url("/slow?seconds=30"), "timeout_s": 0.5},
        "fail": {"url": services.url("/fail"), "retries": 1},
        "refused": {"url": refused_url(), "retries": 1},
    }
    lines = [
        "[framebroker.analysis]",
        "window_frames = 5",
        "max_inflight_events = 4",
        "[framebroker.analysis.services]",
        *(
            f"{name} = {json.dumps(value)}"
            for name, value in table.items()
            if isinstance(value, str)
        ),
        "[framebroker.analysis.pipelines]",
        'tracks = ["bytetrack"]',
    ]
    for name, value in table.items():
        if isinstance(value, dict):
            lines.append(f"[framebroker.analysis.services.{name}]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in value.items())
    path.write_text("\n".join(lines) + "\n")
    return path


async def session_id(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        sid: str = (await http.get("/get_session_id")).json()["session_id"]
        return sid


def test_two_sessions_a_bad_one_and_a_batch_over_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "an-e2e-secret-that-is-long-enough")
    with (
        AnalysisServices() as services,
        running_server(
            tmp_path / "data", "--config", str(write_config(tmp_path / "fb.toml", services))
        ) as server,
    ):

        async def scenario() -> None:
            async with (
                connected(server.url, f"session_id={await session_id(server.url)}") as a,
                connected(server.url, f"session_id={await session_id(server.url)}") as b,
            ):
                bad = Client()
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await bad.connect(server.url, "session_id=guessed")
                await bad.close()
                assert bad.refusal["data"]["code"] == "session_not_found"
                for i in range(5):
                    reply_a = await a.frame(scene(160, 120, seed=i))
                    reply_b = await b.frame(scene(64, 48, seed=i))
                    assert reply_a["size"] == [160, 120]
                    assert reply_b["size"] == [64, 48]
                    if i == 2:  # a bad frame from b in the middle of its window
                        err = await b.sio.call("process", b"not an image", timeout=10)
                        assert err["code"] == "unsupported_media_type"
                ra, rb = await a.next("result"), await b.next("result")
                for result, (w, h) in ((ra, (160, 120)), (rb, (64, 48))):
                    answers = result["result"]
                    assert answers["decode"] == {
                        "frames": 5,
                        "width": w,
                        "height": h,
                        "bytes": result["video_bytes"],
                        "filename": f"{result['session_id']}-0.mp4",
                    }
                    assert answers["slow"]["code"] == "service_timeout"
                    assert answers["fail"]["status"] == 500
                    assert answers["refused"]["code"] == "service_unavailable"
                    assert answers["tracks"]["frames"] == 5

            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                options = (await http.get("/options")).json()
                assert options["processes"] == ["decode", "slow", "fail", "refused", "tracks"]
                video = encode_mp4([scene(96, 64, seed=i) for i in range(8)])
                r = await http.post("/batch", files={"file": ("game.mp4", video, "video/mp4")})
                assert r.status_code == 200, r.text
                result = r.json()["result"]
                assert result["decode"]["frames"] == 8
                assert result["tracks"]["summary"]["tracker"]["frames"] == 8

        asyncio.run(scenario())
    assert server.proc.returncode == 0, server.output()


def test_a_server_stops_cleanly_with_clients_connected(tmp_path: Path) -> None:
    with AnalysisServices() as services:
        config = write_config(tmp_path / "fb.toml", services)
        with running_server(tmp_path / "data", "--config", str(config)) as server:

            async def scenario() -> None:
                client = Client()
                await client.connect(server.url, f"session_id={await session_id(server.url)}")
                await client.sio.call("process", jpeg(scene(64, 48)), timeout=10)
                server.proc.send_signal(signal.SIGINT)
                for _ in range(200):
                    if not client.sio.connected:
                        break
                    await asyncio.sleep(0.05)
                await client.close()

            asyncio.run(scenario())
            assert server.stop() == 0, server.output()


def test_a_placeholder_secret_key_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "your_secret_key")
    with pytest.raises(RuntimeError, match="placeholder"), running_server(tmp_path / "data"):
        pass
