"""An in-process app (real broker, real SQLite in tmp_path) behind an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from framebroker.config import Settings, load_settings
from framebroker.runtime.broker import Broker
from framebroker.server import build_app, build_broker

TEST_LIMITS = {"max_boxes": 100, "max_body_bytes": 2_000_000, "max_image_pixels": 1_000_000}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, limits=TEST_LIMITS)


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    b = build_broker(settings)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def client(settings: Settings, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings, broker)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://framebroker") as c:
        yield c
