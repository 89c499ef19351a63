"""A hung and a leaking processor in the real `framebroker serve`, loaded by module:attr.

The hang is timed out and answered with a 504 naming it, other sessions go on, /metrics shows
the timeout, the stuck thread and which processor grows the memory, and the server still
stops when asked although a thread never returns.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .server import running_server

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.runtime.bad_processors"
MiB = 1024 * 1024
SIDE = 8


def post(c: httpx.Client, url: str, session: str, **meta: Any) -> httpx.Response:
    frame = {"width": SIDE, "height": SIDE, **meta}
    image: tuple[str, bytes, str] = (
        "image.raw",
        bytes(SIDE * SIDE * 3),
        "application/octet-stream",
    )
    files = {
        "image": image,
        "frame": ("frame.json", json.dumps(frame).encode(), "application/json"),
    }
    return c.post(f"{url}/", files=files, headers={"Session-Id": session})


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if wanted else name
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


def test_a_hung_processor_is_timed_out_and_a_leaking_one_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    config = tmp_path / "framebroker.toml"
    config.write_text("processor_memory_sample_every = 1\n[limits]\nprocessor_timeout_s = 0.5\n")
    released = tmp_path / "released"
    never = tmp_path / "never-released"
    args = ["--config", str(config)]
    for name in ("Hang", "Leak", "Noop"):
        args += ["--processor", f"{MODULE}:{name}"]
    with running_server(tmp_path / "data", *args) as server, httpx.Client(timeout=30) as c:
        r = post(c, server.url, "stuck", hang=str(released))
        assert r.status_code == 504, r.text
        body = r.json()
        assert body["code"] == "processor_timeout"
        assert (body["processor"], body["session_id"], body["timeout_s"]) == ("hang", "stuck", 0.5)

        r = post(c, server.url, "stuck")
        assert r.status_code == 504, r.text
        assert "is blocked" in r.json()["error"]

        for i in range(6):
            r = post(c, server.url, "fine")
            assert r.status_code == 200, r.text
            assert r.json()["kept_mib"] == 2 * (i + 1)

        text = c.get(f"{server.url}/metrics").text
        assert metric(text, "framebroker_processor_timeouts_total", processor="hang") == 1
        assert metric(text, "framebroker_stuck_threads") == 1
        leaked = metric(text, "framebroker_processor_memory_growth_bytes", processor="leak")
        clean = metric(text, "framebroker_processor_memory_growth_bytes", processor="noop")
        assert 0.75 * 12 * MiB <= leaked <= 1.5 * 12 * MiB, leaked / MiB
        assert abs(clean) < MiB, clean / MiB
        assert metric(text, "framebroker_errors_total", code="processor_timeout", transport="http")

        # Let the call return: the session takes frames again and the thread is back.
        released.touch()
        deadline = time.monotonic() + 20
        while (r := post(c, server.url, "stuck")).status_code == 504:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        assert metric(c.get(f"{server.url}/metrics").text, "framebroker_stuck_threads") == 0

        # One that never returns does not keep the server from stopping.
        r = post(c, server.url, "stuck-for-good", hang=str(never))
        assert r.status_code == 504, r.text
        assert server.stop(signal.SIGINT, timeout=15) == 0
    log = server.output()
    assert "processor hang has run for over 0.5 s" in log
    assert "exiting without 1 worker thread(s) stuck in a processor" in log
    assert "Traceback" not in log, log
