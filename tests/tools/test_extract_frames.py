"""``framebroker extract-frames`` against a real HTTP server on loopback (tests/tools/frame_server).

The clips show their own frame number and a blue, green and red block (tests/tools/clips),
so each test can tell which frame arrived, at what size, in which channel order.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trustme
from numpy.typing import NDArray

from framebroker.cli import main
from framebroker.client.poster import FramePoster, multipart_envelope
from framebroker.media.sources import SourceError
from framebroker.tools import extract_frames
from framebroker.tools.extract_frames import (
    parse_start_time,
    relative_timestamp_str,
    timestamp_str,
)

from ..e2e.server import running_server
from .clips import SWATCHES, index_of, swatches, write_clip
from .frame_server import FrameServer, Received, echo

CREATED = "2019-05-03T03:52:29.000000Z"
CREATED_EPOCH = 1556855549.0
FULL_HD_BYTES = 1920 * 1080 * 3


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 10 fps (frames 0 to 29), recorded 2019-05-03 03:52:29 UTC."""
    return write_clip(tmp_path_factory.mktemp("clips") / "game.mp4", creation_time=CREATED)


@pytest.fixture(scope="module")
def undated_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same frames with no creation time in the container."""
    return write_clip(tmp_path_factory.mktemp("clips") / "undated.mp4")


def extract(*args: str | Path) -> int:
    return main(["extract-frames", *(str(a) for a in args)])


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_raw_bgr_full_hd_over_one_connection(
    clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "-r", "2") == 0
    frames = server.frames
    assert [f["frame_no"] for f in frames] == [0, 5, 10, 15, 20, 25]
    assert [f["relative_timestamp"] for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert server.connections == 1
    assert {r.connection for r in server.received} == {1}
    for received in server.received:
        image_part = received.parts["image"]
        assert len(image_part.content) == FULL_HD_BYTES
        assert image_part.headers["content-type"] == "application/octet-stream"
        assert 'filename="image.raw"' in image_part.headers["content-disposition"]
        assert received.parts["frame"].headers["content-type"] == "application/json"
        image = received.image()
        assert image.shape == (1080, 1920, 3)
        assert index_of(image) == received.frame["frame_no"]
        # Blue, green, red from left to right: BGR bytes in BGR order.
        for seen, drawn in zip(swatches(image), SWATCHES, strict=True):
            assert max(abs(s - d) for s, d in zip(seen, drawn, strict=True)) < 40, (seen, drawn)
    summary = one_line(capsys.readouterr().err)
    assert "sent 6 frames" in summary
    assert "over 1 connection," in summary
    assert "0 refused" in summary


def test_frame_fields_follow_the_seed(clip: Path) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "-r", "2", "-s", "1", "-q") == 0
    first, second = server.frames[:2]
    assert list(first) == [
        "timestamp",
        "timestamp_str",
        "relative_timestamp_str",
        "relative_timestamp",
        "frame_no",
        "source",
    ]
    # The container's creation time is the start of the clock.
    assert first["timestamp"] == CREATED_EPOCH + 1.0
    assert first["timestamp_str"] == "2019/05/03 03:52:30.00"
    assert first["relative_timestamp_str"] == "00:00:01.00"
    assert second["timestamp_str"] == "2019/05/03 03:52:30.50"
    assert second["relative_timestamp_str"] == "00:00:01.50"
    assert second["relative_timestamp"] == 1.5


def test_the_source_object_describes_file_and_extraction(clip: Path) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "-r", "2.5", "-s", "0.4", "--size", "640x360", "-q") == 0
        assert extract(clip, server.url, "-r", "2.5", "-s", "0.4", "--size", "640x360", "-q") == 0
    sources = [f["source"] for f in server.frames]
    per_run = len(sources) // 2
    first = sources[0]
    assert all(s == first for s in sources[:per_run])
    assert sources[per_run]["run"] != first["run"]  # a replay is a new session
    assert first == first | {
        "file": str(clip),
        "name": "game.mp4",
        "kind": "file",
        "video_fps": 10.0,
        "video_frames": 30,
        "duration": 3.0,
        "original_shape": [240, 320, 3],
        "extract_fps": 2.5,
        "seek": 0.4,
        "realtime": False,
        "width": 640,
        "height": 360,
        "creation_time": "2019-05-03T03:52:29+00:00",
        "start_timestamp": CREATED_EPOCH,
    }
    assert first["tool"].startswith("framebroker extract-frames ")


def test_size_and_every_frame(clip: Path) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "--fps", "all", "--size", "640x360", "-q") == 0
    assert [f["frame_no"] for f in server.frames] == list(range(30))
    for received in server.received:
        assert len(received.parts["image"].content) == 640 * 360 * 3
        assert index_of(received.image()) == received.frame["frame_no"]


def test_seek_samples_from_the_seek_time(clip: Path) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "--seek", "1.2", "--fps", "2", "-q") == 0
    assert [f["frame_no"] for f in server.frames] == [12, 17, 22, 27]
    assert [f["relative_timestamp"] for f in server.frames] == [1.2, 1.7, 2.2, 2.7]
    assert [index_of(r.image()) for r in server.received] == [12, 17, 22, 27]


def test_without_a_creation_time_the_clock_starts_now(undated_clip: Path) -> None:
    before = time.time()
    with FrameServer() as server:
        assert extract(undated_clip, server.url, "-r", "1", "-q") == 0
    after = time.time()
    frames = server.frames
    start = frames[0]["source"]["start_timestamp"]
    assert before <= start <= after
    assert frames[0]["source"]["creation_time"] is None
    assert [f["timestamp"] - start for f in frames] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "when", ["1556855549.3732016", "2019-05-03T03:52:29.3732016Z", "2019-05-03 03:52:29.3732016"]
)
def test_a_given_start_time(clip: Path, when: str) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "-r", "1", "--start-time", when, "-q") == 0
    first = server.frames[0]
    assert first["timestamp"] == pytest.approx(1556855549.3732016, abs=1e-6)
    assert first["timestamp_str"] == "2019/05/03 03:52:29.37"
    assert server.frames[1]["timestamp_str"] == "2019/05/03 03:52:30.37"


def test_timestamp_strings() -> None:
    assert timestamp_str(1556855549.3732016) == "2019/05/03 03:52:29.37"
    assert timestamp_str(1556855549.999) == "2019/05/03 03:52:30.00"  # carries into seconds
    assert relative_timestamp_str(0) == "00:00:00.00"
    assert relative_timestamp_str(59.996) == "00:01:00.00"
    assert relative_timestamp_str(3725.5) == "01:02:05.50"
    assert relative_timestamp_str(360000.25) == "100:00:00.25"
    with pytest.raises(ValueError, match="non-negative"):
        relative_timestamp_str(-1)
    assert parse_start_time("now") == "now"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_start_time("yesterday")


def test_refused_frame_stops_with_status_and_body(
    clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse_frame_10(received: Received) -> tuple[int, bytes]:
        if received.frame["frame_no"] == 10:
            return 500, b'{"error": "hud reader crashed"}'
        return echo(received)

    with FrameServer(refuse_frame_10) as server:
        assert extract(clip, server.url, "-r", "2") == 1
    assert [f["frame_no"] for f in server.frames] == [0, 5, 10]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (
        "framebroker: frame 10 at 00:00:01.00: HTTP 500 Internal Server Error: "
        '{"error": "hud reader crashed"}'
    )
    assert "sent 2 frames" in err[1]
    assert "1 refused" in err[1]


def test_keep_going_counts_refusals_and_saves_good_replies(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse_odd_seconds(received: Received) -> tuple[int, bytes]:
        if received.frame["frame_no"] in (10, 20):
            return 422, b"not today"
        return echo(received)

    out = tmp_path / "replies.jsonl"
    with FrameServer(refuse_odd_seconds) as server:
        status = extract(clip, server.url, "-r", "2", "--keep-going", "--out", out)
    assert status == 1
    assert len(server.received) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": HTTP ")[1] for line in err[:2]] == [
        "422 Unprocessable Entity: not today"
    ] * 2
    assert "sent 4 frames" in err[2]
    assert "2 refused" in err[2]
    assert f"replies in {out}" in err[2]
    replies = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_no"] for r in replies] == [0, 5, 15, 25]
    sent = {f["frame_no"]: f for f in server.frames}
    for reply in replies:
        assert reply == sent[reply["frame_no"]] | {"seen": {"image_bytes": FULL_HD_BYTES}}


def test_out_dash_writes_replies_to_stdout(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "-r", "1", "--size", "64x36", "--out", "-", "-q") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["frame_no"] for r in lines] == [0, 10, 20]


def test_a_reply_that_is_not_a_json_object_is_refused(
    clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FrameServer(lambda r: (200, b"[1, 2]")) as server:
        assert extract(clip, server.url, "-r", "1", "--size", "64x36", "-q") == 1
    assert len(server.received) == 1
    assert "reply is JSON list, not an object" in one_line(capsys.readouterr().err)


def test_realtime_posts_on_the_video_clock(clip: Path) -> None:
    with FrameServer() as server:
        started = time.monotonic()
        assert extract(clip, server.url, "-s", "1.5", "-r", "2", "--realtime", "-q") == 0
        elapsed = time.monotonic() - started
    arrivals = [r.at for r in server.received]
    assert [f["relative_timestamp"] for f in server.frames] == [1.5, 2.0, 2.5]
    # 1 s of video between the first and the last frame; generous slack for a busy machine.
    assert 0.9 <= arrivals[-1] - arrivals[0] <= 5
    assert elapsed < 15


def test_headers_are_added_to_every_request(clip: Path) -> None:
    with FrameServer() as server:
        status = extract(
            clip, server.url + "frames?game=x", "-r", "1", "--size", "64x36", "-q",
            "-H", "Session-Id: game-1", "--header", "X-Plugin:hud",
        )  # fmt: skip
    assert status == 0
    assert {r.path for r in server.received} == {"/frames?game=x"}
    assert {r.headers["Session-Id"] for r in server.received} == {"game-1"}
    assert {r.headers["X-Plugin"] for r in server.received} == {"hud"}


def test_the_body_is_standard_multipart(clip: Path) -> None:
    """The stdlib's own MIME parser reads the same two parts the hand parser found."""
    with FrameServer() as server:
        assert extract(clip, server.url, "-r", "1", "--size", "32x18", "-q") == 0
    received = server.received[0]
    head = f"Content-Type: {received.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        head + received.raw_body
    )
    assert message.is_multipart()
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert set(parts) == {"frame", "image"}
    frame = parts["frame"].get_payload(decode=True)
    assert isinstance(frame, bytes)
    assert json.loads(frame) == received.frame
    assert parts["image"].get_payload(decode=True) == received.parts["image"].content
    assert len(received.parts["image"].content) == 32 * 18 * 3


def test_a_server_closing_each_connection_gets_a_new_one(clip: Path) -> None:
    with FrameServer(keep_alive=False) as server:
        assert extract(clip, server.url, "-r", "1", "--size", "64x36", "-q") == 0
    assert len(server.received) == 3
    assert server.connections == 3


def test_an_idle_connection_the_server_dropped_is_reopened(clip: Path) -> None:
    # Small frames: each one arrives in one read, well within the server's idle timeout.
    with FrameServer(idle_timeout=0.3) as server:
        status = extract(clip, server.url, "-s", "1", "-r", "1", "--size", "64x36", "--realtime")
    assert status == 0
    assert [f["frame_no"] for f in server.frames] == [10, 20]
    assert server.connections == 2


def test_https_destination(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = trustme.CA()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    with FrameServer(tls=tls) as server:
        assert extract(clip, server.url, "-r", "1", "--size", "64x36", "-q") == 2
        assert "certificate is not trusted" in one_line(capsys.readouterr().err)
        assert extract(clip, server.url, "-r", "1", "--size", "64x36", "--cafile", cafile) == 0
        assert "sent 3 frames" in one_line(capsys.readouterr().err)
        assert extract(clip, server.url, "-r", "1", "--size", "64x36", "-k", "-q") == 0
    assert len(server.received) == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        ("missing.mp4", "http://127.0.0.1:{port}/", "source 'missing.mp4': no such file"),
        ("{clip}", "http://127.0.0.1:{port}/", "cannot connect to http://127.0.0.1:{port}/: "
         "connection refused"),
        ("{clip}", "ftp://127.0.0.1/", "expected a URL starting http:// or https://"),
        ("{clip}", "localhost:5000", "expected a URL starting http:// or https://"),
        ("{clip}", "http://127.0.0.1:port/", "the port is not a number"),
        ("{notvideo}", "http://127.0.0.1:{port}/", "not a video file FFmpeg can read"),
    ],
)  # fmt: skip
def test_unusable_source_or_destination_is_one_line_and_status_2(
    clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
    destination: str,
    message: str,
) -> None:
    notvideo = tmp_path / "notes.txt"
    notvideo.write_text("not a video")
    port = free_port()
    fill = {"clip": clip, "notvideo": notvideo, "port": port}
    assert extract(source.format(**fill), destination.format(**fill)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("framebroker: ")
    assert message.format(**fill) in line


def test_seek_past_the_end_is_status_2(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "--seek", "5") == 2
    assert "cannot start at 5 s, the video is 3 s long" in one_line(capsys.readouterr().err)
    assert server.received == []


def test_a_reserved_header_is_refused(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert extract(clip, "http://127.0.0.1:9/", "-H", "Content-Type: text/plain") == 2
    assert "is set by the frames client itself" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--fps", "0", "expected a positive number of frames per second or 'all'"),
        ("--seek", "-1", "expected a number of seconds, 0 or more"),
        ("--size", "1920", "expected WIDTHxHEIGHT"),
        ("--header", "Session-Id", "expected NAME:VALUE"),
    ],
)
def test_bad_flags_are_usage_errors(
    clip: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        extract(clip, "http://127.0.0.1:9/", f"{flag}={value}")
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_as_a_command(clip: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBROKER_")}
    command = [sys.executable, "-m", "framebroker", "extract-frames"]
    with FrameServer() as server:
        done = subprocess.run(
            [*command, str(clip), server.url, "-r", "0.5", "--out", "-"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["frame_no"] for line in done.stdout.splitlines()] == [0, 20]
    assert "sent 2 frames" in one_line(done.stderr)
    assert server.connections == 1

    missing = subprocess.run(
        [*command, str(tmp_path / "nope.mkv"), "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert missing.returncode == 2
    assert "no such file" in one_line(missing.stderr)


def failing_after(count: int, error: BaseException) -> object:
    """A stand-in for ``read_frames`` whose frames run out in ``error`` after ``count``."""

    def read_frames(uri: str, **kwargs: object) -> Iterator[tuple[NDArray[np.uint8], float, int]]:
        def frames() -> Iterator[tuple[NDArray[np.uint8], float, int]]:
            for i in range(count):
                yield np.zeros((36, 64, 3), np.uint8), i / 10, i
            raise error

        return frames()

    return read_frames


def test_a_source_failing_midway_is_status_2_after_the_frames_it_gave(
    clip: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = SourceError("source 'game.mp4': 100 packets in a row could not be decoded")
    monkeypatch.setattr(extract_frames, "read_frames", failing_after(2, broken))
    with FrameServer() as server:
        assert extract(clip, server.url, "--size", "64x36") == 2
    assert [f["frame_no"] for f in server.frames] == [0, 1]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"framebroker: {broken.message}"
    assert "sent 2 frames" in err[1]


def test_interrupted_is_status_130_with_a_summary(
    clip: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(extract_frames, "read_frames", failing_after(3, KeyboardInterrupt()))
    with FrameServer() as server:
        assert extract(clip, server.url, "--size", "64x36") == 130
    assert len(server.received) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "framebroker: interrupted"
    assert "sent 3 frames" in err[1]


def test_the_multipart_envelope() -> None:
    prefix, trailer = multipart_envelope(b"b0und", b'{"frame_no": 1}')
    assert prefix == (
        b'--b0und\r\nContent-Disposition: form-data; name="frame"; filename="frame.json"\r\n'
        b'Content-Type: application/json\r\n\r\n{"frame_no": 1}\r\n'
        b'--b0und\r\nContent-Disposition: form-data; name="image"; filename="image.raw"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    assert trailer == b"\r\n--b0und--\r\n"
    with pytest.raises(ValueError, match="occurs in the frame JSON"):
        multipart_envelope(b"b0und", b'{"x": "b0und"}')
    with pytest.raises(ValueError, match="1 to 70 ASCII characters"):
        multipart_envelope(b"x" * 71, b"{}")


def test_the_poster_sends_an_image_without_copying_it_into_a_body() -> None:
    """An encoded image goes as well as an array; arrays need not be contiguous."""
    image = np.arange(36 * 64 * 3, dtype=np.uint8).reshape(36, 64, 3)
    with FrameServer() as server, FramePoster(server.url) as poster:
        frame = {"source": {"width": 32, "height": 36}}
        reply = poster.post(json.dumps(frame).encode(), image[:, ::2])
        assert reply.ok
        reply = poster.post(b"{}", b"\x89PNG\r\n\x1a\n...", image_type="image/png")
        assert reply.ok
    strided, png = server.received
    assert strided.parts["image"].content == image[:, ::2].tobytes()
    assert png.parts["image"].content == b"\x89PNG\r\n\x1a\n..."
    assert png.parts["image"].headers["content-type"] == "image/png"
    assert server.connections == 1


def test_out_that_cannot_be_written_is_status_2(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FrameServer() as server:
        assert extract(clip, server.url, "--out", tmp_path) == 2
    assert f"cannot write replies to {str(tmp_path)!r}" in one_line(capsys.readouterr().err)
    assert server.received == []


def test_into_framebroker_serve(clip: Path, tmp_path: Path) -> None:
    """The real server: every frame echoed, all in one session, in order."""
    out = tmp_path / "replies.jsonl"
    with running_server(tmp_path / "data") as server:
        status = extract(clip, server.url + "/", "-r", "2", "-s", "1", "--out", out, "-q")
    assert status == 0
    replies = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_no"] for r in replies] == [10, 15, 20, 25]
    assert [r["timestamp_str"] for r in replies][:2] == [
        "2019/05/03 03:52:30.00",
        "2019/05/03 03:52:30.50",
    ]
    reports = [r["framebroker"] for r in replies]
    assert len({r["session_id"] for r in reports}) == 1
    assert [r["frame_index"] for r in reports] == [0, 1, 2, 3]
