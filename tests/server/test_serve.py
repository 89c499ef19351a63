"""What ``serve`` tells a user at start-up and in ``--help``: each API by what it does."""

from __future__ import annotations

import pytest

from framebroker.cli import build_parser, main, settings_from_args
from framebroker.server.serve import startup_lines

APIS = (
    "tracking API",
    "live people counter",
    "frame server for plugins",
    "video analysis over Socket.IO",
    "WebRTC model broker",
)


def test_the_start_up_log_names_each_api_and_the_page_to_open() -> None:
    args = build_parser().parse_args(["demo", "--port", "8123"])
    lines = startup_lines(settings_from_args(args))
    text = "\n".join(lines)
    for api in APIS:
        assert api in text
    assert "seed" not in text
    assert lines[-1] == (
        "open http://127.0.0.1:8123/ui/live.html?source=demo to watch the people counter"
    )
    plain = startup_lines(settings_from_args(build_parser().parse_args(["serve"])))
    assert plain[-1] == "open http://127.0.0.1:8000/ui/ for the web console"


def test_help_names_each_api(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for api in APIS:
        assert api in text
    assert "seed" not in text
