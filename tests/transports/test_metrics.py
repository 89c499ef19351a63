"""``/metrics``, ``/readyz``: what Prometheus and a load balancer read."""

from __future__ import annotations

import re

import httpx
import pytest

from framebroker.server import Services


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in the exposition text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


BOXES = {"boxes": [[20, 23, 12, 24, 89, 0], [12, 34, 45, 56, 78, 1]]}


@pytest.mark.broker_only  # the broker's own counters of frames and processor times
async def test_frames_sessions_processors_and_errors_are_counted(
    client: httpx.AsyncClient, services: Services
) -> None:
    services.listening = True
    sid = {"Session-Id": "cam-1"}
    for _ in range(3):
        assert (await client.post("/", json=BOXES, headers=sid)).status_code == 200
    json_type = {"Content-Type": "application/json"}
    bad = await client.post("/", content=b"{nope", headers={**sid, **json_type})
    assert bad.status_code == 400
    assert (await client.get("/v1/sessions/no-such-session")).status_code == 404

    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert sample(text, "framebroker_frames_total", transport="rest", outcome="received") == 3
    assert sample(text, "framebroker_frames_total", transport="rest", outcome="processed") == 3
    assert sample(text, "framebroker_sessions", transport="rest") == 1
    assert sample(text, "framebroker_sessions_started_total", transport="rest") == 1
    assert sample(text, "framebroker_processor_seconds_count", processor="bytetrack") == 3
    assert sample(text, "framebroker_errors_total", transport="http", code="invalid_json") == 1
    assert sample(text, "framebroker_errors_total", transport="http", code="session_not_found") == 1
    assert sample(text, "process_resident_memory_bytes") > 0


async def test_readyz_follows_the_listeners(client: httpx.AsyncClient, services: Services) -> None:
    services.listening = False
    assert (await client.get("/readyz")).status_code == 503
    services.listening = True
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
