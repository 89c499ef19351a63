"""Build the broker, its store and the ASGI application from :class:`Settings`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import Response

from .. import __version__
from ..config import Settings
from ..core.manager import SessionPolicy
from ..detectors import runtime as inference
from ..plugins import ProcessorRegistry, spec_name
from ..processors.annotate import Annotator
from ..processors.bytetrack.processor import ByteTrackProcessor
from ..processors.detect import PersonDetector
from ..processors.face_gallery import FaceGallery
from ..processors.line_counter import LineCounter
from ..processors.traffic_events import TrafficEvents
from ..runtime.analysis import VideoAnalysis
from ..runtime.broker import Broker, BrokerConfig
from ..runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..storage import open_store
from ..transports import api_docs, box_tracking, console, frame_upload, rest_v1
from ..transports.auth import ApiKeyMiddleware, ApiKeys
from ..transports.context import ServerContext
from ..transports.http import install_error_handlers, json_response
from ..transports.origins import OriginMiddleware
from ..transports.people_ws import live_routes
from ..transports.video_analysis_http import router as video_analysis_router
from ..transports.video_analysis_socketio import SocketIOTransport
from ..transports.webrtc_signaling import WebRTCTransport
from .services import Services

__all__ = ["build_app", "build_broker", "build_compat_app", "build_registry"]

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
    registry.register("line_counter", LineCounter)
    registry.register("traffic_events", TrafficEvents)
    registry.register("faces", FaceGallery)
    registry.register("detect", PersonDetector)
    return registry


def build_broker(settings: Settings) -> Broker:
    limits = settings.limits
    inference.configure(settings.inference_threads)
    return Broker(
        build_registry(settings),
        store=open_store(settings.sqlalchemy_url),
        config=BrokerConfig(
            max_workers=settings.max_workers,
            max_pending_frames=limits.max_pending_frames,
            bus_queue=limits.bus_queue,
            default_pipeline=tuple(settings.pipeline),
            policy=SessionPolicy(
                max_sessions=limits.max_sessions,
                idle_timeout_s=limits.session_idle_timeout_s,
                max_sessions_per_client=limits.max_sessions_per_client,
                max_fps_per_session=limits.max_fps_per_session,
            ),
            warm_up=("bytetrack", "annotate", *map(spec_name, settings.frames.pipeline)),
            processor_timeout_s=limits.processor_timeout_s,
            memory_sample_every=settings.processor_memory_sample_every,
            parallel_frames=settings.parallel_frames,
        ),
    )


def build_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The ASGI app serving every transport on one port; its lifespan runs ``services``."""
    svc = services if services is not None else Services.build(settings, build_broker(settings))
    the_broker = svc.broker
    ctx = ServerContext(broker=the_broker, settings=settings)
    analysis = VideoAnalysis(settings.analysis, settings.limits, the_broker)  # video analysis
    socketio_transport = SocketIOTransport(ctx, analysis)
    webrtc = WebRTCTransport.shared(the_broker, settings)  # the WebRTC model broker

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            await analysis.start()
            await webrtc.start()
            yield
        finally:
            await webrtc.stop()
            await socketio_transport.stop()
            await analysis.stop()
            await svc.stop()

    app = FastAPI(
        title="framebroker",
        version=__version__,
        summary="Real-time vision stream server",
        lifespan=lifespan,
        docs_url=None,  # served from installed files below, not from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = svc
    install_error_handlers(app, on_error=lambda code: the_broker.metrics.error("http", code))
    app.include_router(box_tracking.router(ctx))
    app.include_router(rest_v1.router(ctx))
    app.include_router(console.router(ctx, svc.records))
    app.mount(console.UI_PATH, console.static_files())  # the web console
    app.include_router(api_docs.router(app.title, "/openapi.json"))
    app.mount(api_docs.ASSETS_PATH, api_docs.static_files())
    app.router.routes.extend(
        live_routes(
            svc.hub,
            "/ws/live",
            max_message_bytes=settings.limits.max_ws_message_bytes,
            on_refused=lambda: the_broker.metrics.error("live_ws", "payload_too_large"),
        )
    )
    app.router.routes.extend(webrtc.routes())
    app.state.analysis = analysis
    app.include_router(video_analysis_router(ctx, analysis))
    app.mount("/socket.io", socketio_transport.app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        if not svc.listening:
            return json_response({"status": "starting"}, 503)
        return json_response({"status": "ok", "sessions": len(the_broker.manager)})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Ready for traffic: every listener bound and the broker not shutting down."""
        if not svc.listening or the_broker.closing:
            return json_response({"status": "not ready"}, 503)
        return json_response({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(the_broker.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    protect(app, settings, the_broker, "http")
    return app


OPEN_PATHS = ("/healthz", "/readyz", console.UI_PATH, api_docs.ASSETS_PATH)
"""Served without an API key: health checks, the console's and the docs page's static files
(no data)."""


def protect(app: Starlette, settings: Settings, broker: Broker, transport: str) -> Starlette:
    """Ask every request and socket of ``app`` for an API key when keys are configured, and
    let only the server's own pages (and the configured origins) open its WebSockets."""
    keys = ApiKeys({n: k.get_secret_value() for n, k in settings.auth.api_keys.items()})
    if keys:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=keys,
            open_paths=OPEN_PATHS,
            own_auth=("/socket.io",),
            on_refused=lambda kind: broker.metrics.error(
                transport if kind == "http" else f"{transport}_ws", "unauthorized"
            ),
        )
    # Added last, so it runs first: a foreign page's socket is refused before any key talk.
    app.add_middleware(
        OriginMiddleware, allowed=settings.auth.allowed_origins, own_check=("/socket.io",)
    )
    return app


def build_compat_app(name: str, services: Services) -> Starlette:
    """The original API ``name``'s own listener: its transport alone, at ``/`` (``serve --compat``).

    It shares the main app's services and has no lifespan of its own.
    """
    app: Starlette
    if name == "people_ws":
        app = Starlette(
            routes=live_routes(
                services.hub,
                "/",
                max_message_bytes=services.settings.limits.max_ws_message_bytes,
                on_refused=lambda: services.broker.metrics.error("live_ws", "payload_too_large"),
            )
        )
    elif name == "frames":
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        install_error_handlers(app, on_error=lambda code: services.broker.metrics.error(name, code))
        ctx = ServerContext(broker=services.broker, settings=services.settings)
        app.include_router(frame_upload.router(ctx))
    elif name in ("webrtc_ws", "webrtc_http"):
        app = WebRTCTransport.shared(services.broker, services.settings).compat_app(name)
    else:
        raise ValueError(f"unknown compatibility listener {name!r}")
    return protect(app, services.settings, services.broker, name)
