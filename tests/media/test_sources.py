"""Source strings (``media/sources.py``): what they name, the error every source raises, and the
demo clip shipped in the package."""

from __future__ import annotations

import hashlib

import pytest

from framebroker.errors import FramebrokerError, InvalidInput
from framebroker.media.container import open_source
from framebroker.media.sampling import read_frames
from framebroker.media.sources import SourceError, demo_clip, parse_source


@pytest.mark.parametrize(
    ("uri", "kind", "url", "fmt"),
    [
        ("clip.mp4", "file", "clip.mp4", None),
        ("/data/a b.mkv", "file", "/data/a b.mkv", None),
        ("file:///data/x.avi", "file", "/data/x.avi", None),
        ("rtsp://cam.local:554/stream1", "network", "rtsp://cam.local:554/stream1", None),
        ("RTMP://live/app/key", "network", "RTMP://live/app/key", None),
        ("https://example.org/live.m3u8", "network", "https://example.org/live.m3u8", None),
        ("0", "device", "/dev/video0", "v4l2"),
        ("12", "device", "/dev/video12", "v4l2"),
        ("/dev/video2", "device", "/dev/video2", "v4l2"),
    ],
)
def test_parse_source_classifies(uri: str, kind: str, url: str, fmt: str | None) -> None:
    spec = parse_source(uri)
    assert (spec.kind, spec.url, spec.format) == (kind, url, fmt)


def test_parse_source_defaults_options_and_masks_passwords() -> None:
    spec = parse_source("rtsp://admin:hunter2@10.0.0.5/h264")
    assert spec.options == {"rtsp_flags": "prefer_tcp"}
    assert "hunter2" not in spec.label
    assert spec.label == "rtsp://admin:***@10.0.0.5/h264"
    mine = parse_source("rtsp://10.0.0.5/h264", options={"rtsp_flags": "", "stimeout": "5"})
    assert mine.options == {"rtsp_flags": "", "stimeout": "5"}


@pytest.mark.parametrize(("uri", "match"), [("", "got ''"), ("ftp://x/y.mp4", "scheme 'ftp'")])
def test_parse_source_refuses(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_source(uri)


def test_source_error_is_a_client_error_naming_the_source() -> None:
    err = SourceError("x")
    assert isinstance(err, InvalidInput)
    assert isinstance(err, FramebrokerError)
    assert err.to_dict() == {"error": "x", "code": "source_error", "field": "source"}


def test_demo_clip_is_shipped_and_decodes() -> None:
    path = demo_clip()
    with open_source(str(path)) as opened:
        assert (opened.width, opened.height, opened.fps) == (640, 480, 10)
        assert opened.duration_s == pytest.approx(20.0)
        assert opened.frame_count == 200
        assert opened.stream.codec_context.name == "h264"
    frames = list(read_frames(str(path)))
    assert len(frames) == 200
    assert frames[-1][1] == pytest.approx(19.9)
    assert path.stat().st_size < 2_000_000


def test_demo_clip_notice_matches_the_clip() -> None:
    path = demo_clip()
    notice = (path.parent / "NOTICE").read_text(encoding="utf-8")
    assert "Apache-2.0 AND BSD-3-Clause" in notice
    assert "vtest.avi" in notice
    assert hashlib.sha256(path.read_bytes()).hexdigest() in notice
