"""A short soak in CI (``benchmarks/soak.py`` runs the long one): sessions come and go over
seed 000, seed 003 and the seed-001 WebSocket against the real server, and afterwards the
server holds what it held before: no task, file descriptor or session left behind, memory
about flat, and every frame answered or counted as dropped."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from .server import running_server
from .soak import churn, settle

SECONDS = float(os.environ.get("FRAMEBROKER_SOAK_SECONDS", "15"))


def test_sessions_come_and_go_and_nothing_is_left_behind(tmp_path: Path) -> None:
    config = tmp_path / "fb.toml"
    config.write_text("[limits]\nsession_idle_timeout_s = 1.0\n")
    with running_server(tmp_path / "data", "--config", str(config)) as server:
        pid = server.proc.pid
        warm = asyncio.run(churn(server.url, 4, workers=4))  # caches, kernels, pools
        assert not warm.failures, warm.failures
        before = settle(pid, server.url, sessions_at_most=0)
        tally = asyncio.run(churn(server.url, SECONDS, workers=4))
        after = settle(pid, server.url, sessions_at_most=0)
    assert not tally.failures, tally.failures
    assert tally.frames == tally.answered + tally.dropped
    assert tally.sessions > 50
    assert tally.listeners > 10
    assert after.sessions == before.sessions == 0
    assert after.tasks <= before.tasks + 2, (before, after)
    assert after.fds <= before.fds + 4, (before, after)
    assert after.rss_mb - before.rss_mb < 40, (before, after)
    print(f"\nsoak {SECONDS:g} s: {tally}\nbefore {before}\nafter  {after}")
