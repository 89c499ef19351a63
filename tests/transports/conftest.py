"""An in-process app (real broker, real SQLite in tmp_path) behind an httpx client.

Every transport test runs twice: against the broker, and against the in-memory fake of the
``Sessions`` interface (``tests/fake_sessions.py``), the way httpx's tests run against its
``MockTransport``. What passes on both depends on nothing but the interface. A test about
the broker's own machinery (its store, its watchdog, its worker pool, its scheduling) is
marked ``broker_only`` and runs against the broker alone; so are modules that test a parser
with no session behind it (see ``pytest_collection_modifyitems``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from framebroker.config import Settings, load_settings
from framebroker.core.manager import SessionPolicy
from framebroker.runtime.broker import Broker
from framebroker.server import Services, build_app, build_registry

from ..fake_sessions import FakeSessions

TEST_LIMITS = {"max_boxes": 100, "max_body_bytes": 2_000_000, "max_image_pixels": 1_000_000}


NO_SESSIONS = frozenset(
    {"test_multipart", "test_parser_properties", "test_openapi_fuzz", "test_path_safety"}
)
"""Modules whose tests drive a parser or a schema, never a session: run once."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        fake = callspec is not None and callspec.params.get("seam") == "fake"
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        broker_only = item.get_closest_marker("broker_only") is not None
        uses_broker = "broker" in getattr(item, "fixturenames", ())
        if fake and (broker_only or uses_broker or module in NO_SESSIONS):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def fake_sessions(settings: Settings) -> FakeSessions:
    limits = settings.limits
    return FakeSessions(
        build_registry(settings),
        default_pipeline=settings.pipeline,
        policy=SessionPolicy(
            max_sessions=limits.max_sessions,
            idle_timeout_s=limits.session_idle_timeout_s,
            max_sessions_per_client=limits.max_sessions_per_client,
            max_fps_per_session=limits.max_fps_per_session,
        ),
        warm_up=("bytetrack", "annotate"),
    )


@pytest.fixture(autouse=True, params=["broker", "fake"])
def seam(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which side of the ``Sessions`` seam the servers of this test are built on."""
    if request.param == "fake":
        build = Services.build.__func__  # type: ignore[attr-defined]

        def with_fake(cls: type[Services], settings: Settings, sessions: object = None) -> Services:
            return build(cls, settings, sessions or fake_sessions(settings))  # type: ignore[no-any-return]

        monkeypatch.setattr(Services, "build", classmethod(with_fake))
    return str(request.param)


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
