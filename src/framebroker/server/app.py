"""Build the broker, its store and the ASGI application from :class:`Settings`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from .. import __version__
from ..config import Settings
from ..core.manager import SessionPolicy
from ..plugins import ProcessorRegistry
from ..processors.annotate import Annotator
from ..processors.bytetrack.processor import ByteTrackProcessor
from ..runtime.broker import Broker, BrokerConfig
from ..storage import open_store
from ..transports import rest_v1, seed_tracking
from ..transports.context import ServerContext
from ..transports.http import install_error_handlers, json_response

__all__ = ["build_app", "build_broker", "build_registry"]

log = logging.getLogger(__name__)


def build_registry(settings: Settings) -> ProcessorRegistry:
    """Built-in processors with the server's defaults; plugins come from entry points."""
    registry = ProcessorRegistry(
        defaults={
            "bytetrack": settings.tracker.model_dump(),
            "annotate": {"quality": settings.jpeg_quality},
        }
    )
    registry.register("bytetrack", ByteTrackProcessor)
    registry.register("annotate", Annotator)
    return registry


def build_broker(settings: Settings) -> Broker:
    limits = settings.limits
    return Broker(
        build_registry(settings),
        store=open_store(settings.sqlalchemy_url),
        config=BrokerConfig(
            max_workers=settings.max_workers,
            max_pending_frames=limits.max_pending_frames,
            bus_queue=limits.bus_queue,
            default_pipeline=tuple(settings.pipeline),
            policy=SessionPolicy(
                max_sessions=limits.max_sessions, idle_timeout_s=limits.session_idle_timeout_s
            ),
            warm_up=("bytetrack", "annotate"),
        ),
    )


def build_app(settings: Settings, broker: Broker | None = None) -> FastAPI:
    """The ASGI app serving every transport on one port; starts and stops the broker."""
    the_broker = broker if broker is not None else build_broker(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await the_broker.start()
        try:
            yield
        finally:
            await the_broker.stop()

    app = FastAPI(
        title="framebroker",
        version=__version__,
        summary="Real-time vision stream server",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.broker = the_broker
    install_error_handlers(app)
    ctx = ServerContext(broker=the_broker, settings=settings)
    app.include_router(seed_tracking.router(ctx))
    app.include_router(rest_v1.router(ctx))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return json_response({"status": "ok", "sessions": len(the_broker.manager)})

    return app
