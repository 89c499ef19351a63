"""An in-process app (real broker, real SQLite in tmp_path) behind an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from framebroker.config import Settings, load_settings
from framebroker.runtime.broker import Broker
from framebroker.server import Services, build_app

TEST_LIMITS = {"max_boxes": 100, "max_body_bytes": 2_000_000, "max_image_pixels": 1_000_000}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, limits=TEST_LIMITS)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = Services.build(settings)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def broker(services: Services) -> Broker:
    return services.broker


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://framebroker") as c:
        yield c
