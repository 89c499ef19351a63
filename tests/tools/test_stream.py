"""`framebroker stream`: the seed's mock client, against an in-process server."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from framebroker.cli import main
from framebroker.tools.stream import StreamError, StreamOptions, run, stream

from ..transports.test_webrtc_signaling import server, settings_with
from .clips import write_clip


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4", seconds=2, fps=10)


def lines_of(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("use_http", [False, True])
async def test_streams_a_file_prints_predictions_and_the_result(
    tmp_path: Path, clip: Path, use_http: bool
) -> None:
    async with server(settings_with(tmp_path), "webrtc_http", "webrtc_ws") as (services, hosts):
        _, http_host, ws_host = hosts
        url = f"http://{http_host}" if use_http else f"ws://{ws_host}"  # the seed's two ports
        out = io.StringIO()
        result = await stream(StreamOptions(str(clip), url, use_http=use_http), out)
        assert services.broker.store is not None
        record = await services.broker.run_blocking(
            services.broker.store.get_session, result["session_id"]
        )
    lines = lines_of(out)
    assert lines[0] == {"type": "answer", "session_id": result["session_id"]}
    assert lines[-1] == result
    predictions = [m for m in lines if m["type"] == "prediction"]
    assert len(predictions) >= 20  # two models, most of the 20 frames
    assert {m["model"] for m in predictions} == {"colour", "later"}
    assert result["reason"] == "client_ended"
    assert result["data"]["colour_frames"] >= 10
    assert record is not None
    assert record["state"] == "ended"


async def test_loop_plays_the_file_again(tmp_path: Path, clip: Path) -> None:
    async with server(settings_with(tmp_path)) as (_, hosts):
        out = io.StringIO()
        options = StreamOptions(str(clip), f"ws://{hosts[0]}/webrtc/ws", loop=True)
        task = asyncio.create_task(stream(options, out))
        try:
            for _ in range(300):
                frames = [m.get("frame", -1) for m in lines_of(out) if m["type"] == "prediction"]
                if frames and max(frames) >= 25:  # past the clip's 20 frames
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the clip did not play past its end")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_connection_errors_are_one_line_and_non_zero(tmp_path: Path, clip: Path) -> None:
    from ..e2e.server import free_port

    port = free_port()
    cases = [
        (
            StreamOptions(str(clip), f"ws://127.0.0.1:{port}/webrtc/ws", timeout_s=5),
            "cannot connect",
        ),
        (StreamOptions(str(clip), f"http://127.0.0.1:{port}", use_http=True), "cannot post"),
        (StreamOptions(str(clip), "ftp://example.org/"), "expected a ws://"),
        (StreamOptions(str(clip), f"http://127.0.0.1:{port}/offer"), "add --use-http"),
        (StreamOptions(str(clip), "ws://h/", use_http=True), "expected an http://"),
        (StreamOptions(str(tmp_path / "missing.mp4"), "ws://127.0.0.1:1/"), "no such file"),
    ]
    for options, message in cases:
        with pytest.raises(StreamError, match=message) as caught:
            await stream(options, io.StringIO())
        assert caught.value.status == 2


async def test_an_offer_the_server_refuses_is_reported(tmp_path: Path, clip: Path) -> None:
    async with server(settings_with(tmp_path, max_connections=1)) as (_, hosts):
        url = f"ws://{hosts[0]}/webrtc/ws"
        first = asyncio.create_task(stream(StreamOptions(str(clip), url), io.StringIO()))
        try:
            await asyncio.sleep(0.5)
            with pytest.raises(StreamError, match=r"refused the offer.*\(503\)") as caught:
                await stream(StreamOptions(str(clip), url, use_http=False), io.StringIO())
            assert caught.value.status == 2
            with pytest.raises(StreamError, match=r"refused the offer.*\(503\)"):
                await stream(
                    StreamOptions(str(clip), f"http://{hosts[0]}/offer", use_http=True),
                    io.StringIO(),
                )
        finally:
            await first


def test_run_and_the_command_line_report_failures_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = io.StringIO()
    status = run(StreamOptions(str(tmp_path / "nope.mp4"), "ws://127.0.0.1:1/"), err=err)
    assert status == 2
    assert err.getvalue().count("\n") == 1
    assert err.getvalue().startswith("framebroker stream: ")

    assert main(["stream", str(tmp_path / "nope.mp4"), "ws://127.0.0.1:1/"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().endswith("no such file")
    assert captured.out == ""
