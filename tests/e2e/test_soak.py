"""A short soak in CI (``benchmarks/soak.py`` runs the long one): sessions come and go over
every transport (seed 000, seed 003, the seed-001 WebSocket, seed-002 Socket.IO and seed-004
WebRTC) against the real server, and afterwards the server holds what it held before: no
task, file descriptor or session left behind, memory about flat, and every frame answered or
counted as dropped, by the clients and in ``/metrics`` alike.

To stay short, the task count is read without waiting out Engine.IO's ping interval (25 s):
each Socket.IO connection closed within it may still hold one sleeping task, and is allowed
for (:meth:`~tests.e2e.soak.Tally.lingering`). The long run waits and allows none."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from .server import running_server
from .soak import Footprint, churn, mismatches, server_config, server_env, settle

SECONDS = float(os.environ.get("FRAMEBROKER_SOAK_SECONDS", "10"))
TASKS = 4
"""Tasks the server may hold after the soak beyond those it held idle, besides the lingering
ones: Engine.IO's first connection starts two that live as long as the server; two of slack."""
FDS = 6
"""File descriptors past the warmed-up count: the store's connection pool may open another
connection or two (two files each) under load. A leak of one per session would be hundreds."""


def test_sessions_come_and_go_and_nothing_is_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in server_env().items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "fb.toml"
    config.write_text(server_config(idle_timeout_s=1.0))
    with running_server(tmp_path / "data", "--config", str(config)) as server:
        pid = server.proc.pid
        idle = Footprint.of(pid, server.url)
        warm = asyncio.run(churn(server.url, 3, workers=4))  # caches, kernels, pools, codecs
        assert not warm.failures, warm.failures
        before = settle(pid, server.url, sessions_at_most=0)
        tally = asyncio.run(churn(server.url, SECONDS, workers=4))
        after = settle(pid, server.url, sessions_at_most=0)
        now = time.monotonic()
        lingering = warm.lingering(now) + tally.lingering(now)
    print(f"\nsoak {SECONDS:g} s: {tally}\nidle {idle}\nbefore {before}\nafter  {after}")
    assert not tally.failures, tally.failures
    assert not mismatches(tally, before, after), mismatches(tally, before, after)
    for transport, count in tally.by.items():
        assert count.sessions >= (2 if transport == "webrtc" else 5), (transport, count)
        assert count.answered > 0, (transport, count)
    assert tally.sessions > 50
    assert tally.listeners > 10
    assert after.sessions == before.sessions == 0
    assert after.tasks <= idle.tasks + TASKS + lingering, (idle, after, lingering)
    assert after.fds <= before.fds + FDS, (before, after)
    assert after.rss_mb - before.rss_mb < 40, (before, after)
