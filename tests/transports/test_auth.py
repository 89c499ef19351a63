"""API keys: the checks themselves, and the HTTP side through the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from framebroker.config import Settings, load_settings
from framebroker.server import Services, build_app
from framebroker.server.serve import warn_if_open
from framebroker.transports.auth import ApiKeys, is_loopback

KEY = "k" * 24
OTHER = "o" * 24


def test_keys_match_by_value_and_say_whose() -> None:
    keys = ApiKeys({"ci": KEY, "camera": OTHER})
    assert keys.check(KEY) == "ci"
    assert keys.check(OTHER.encode()) == "camera"
    assert keys.check(KEY[:-1]) is None
    assert keys.check(KEY + "x") is None
    assert keys.check("") is None
    assert keys.check(None) is None
    assert not ApiKeys({})
    assert ApiKeys({}).check(KEY) is None


def test_keys_come_from_a_bearer_token_or_x_api_key() -> None:
    keys = ApiKeys({"ci": KEY})
    assert keys.from_headers([(b"authorization", f"Bearer {KEY}".encode())]) == "ci"
    assert keys.from_headers([(b"Authorization", f"bearer  {KEY}".encode())]) == "ci"
    assert keys.from_headers([(b"x-api-key", KEY.encode())]) == "ci"
    assert keys.from_headers([(b"authorization", f"Basic {KEY}".encode())]) is None
    assert keys.from_headers([(b"accept", b"*/*")]) is None


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.4")
    assert not is_loopback("example.org")


def test_short_or_nameless_keys_are_refused_at_start(tmp_path: Path) -> None:
    from framebroker.errors import ConfigError

    with pytest.raises(ConfigError, match="shorter than 16"):
        load_settings(data_dir=tmp_path, auth={"api_keys": {"ci": "short"}})


def test_a_public_address_without_keys_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert warn_if_open(load_settings(data_dir=tmp_path, host="0.0.0.0"))
    assert "without API keys" in caplog.text
    assert not warn_if_open(load_settings(data_dir=tmp_path))
    keyed = load_settings(data_dir=tmp_path, host="0.0.0.0", auth={"api_keys": {"ci": KEY}})
    assert not warn_if_open(keyed)


@pytest.fixture
def keyed_settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, auth={"api_keys": {"ci": KEY}})


@pytest.fixture
async def keyed(keyed_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    svc = Services.build(keyed_settings)
    await svc.start()
    svc.listening = True
    app = build_app(keyed_settings, svc)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://framebroker"
    ) as client:
        yield client
    await svc.stop()


BOXES = {"boxes": [[20, 23, 12, 24, 89, 0]]}


async def test_every_http_route_wants_a_key(keyed: httpx.AsyncClient) -> None:
    for method, path in (("POST", "/"), ("GET", "/"), ("GET", "/v1/sessions"),
                         ("GET", "/metrics"), ("GET", "/v1/faces"), ("POST", "/offer"),
                         ("GET", "/get_session_id")):  # fmt: skip
        r = await keyed.request(method, path, json=BOXES)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    wrong = await keyed.post("/", json=BOXES, headers={"Authorization": f"Bearer {OTHER}"})
    assert wrong.status_code == 401


async def test_a_good_key_passes_as_bearer_or_header(keyed: httpx.AsyncClient) -> None:
    bearer = {"Authorization": f"Bearer {KEY}", "Session-Id": "cam"}
    assert (await keyed.post("/", json=BOXES, headers=bearer)).status_code == 200
    header = {"X-API-Key": KEY, "Session-Id": "cam"}
    r = await keyed.post("/", json=BOXES, headers=header)
    assert r.status_code == 200
    assert r.json()["tracked_boxes"]
    metrics = await keyed.get("/metrics", headers=header)
    assert 'framebroker_errors_total{code="unauthorized",transport="http"}' not in metrics.text


async def test_health_checks_and_the_console_files_stay_open(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/healthz")).status_code == 200
    assert (await keyed.get("/readyz")).status_code == 200
    assert (await keyed.get("/ui/")).status_code == 200
    assert (await keyed.get("/v1/console")).status_code == 401


async def test_refusals_are_counted(keyed: httpx.AsyncClient) -> None:
    for _ in range(3):
        await keyed.get("/v1/sessions")
    text = (await keyed.get("/metrics", headers={"X-API-Key": KEY})).text
    assert 'framebroker_errors_total{code="unauthorized",transport="http"} 3.0' in text
