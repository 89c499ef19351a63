"""Build the broker, its store and the ASGI application from :class:`Settings`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import Response

from .. import __version__
from ..cluster.host import Cluster, ClusterConfig
from ..config import Settings
from ..core.manager import SessionPolicy
from ..core.store import Store
from ..detectors.runtime import InferenceRuntime
from ..errors import ConfigError
from ..plugins import ProcessorRegistry, spec_name
from ..processors.annotate import Annotator
from ..processors.bytetrack.processor import ByteTrackProcessor
from ..processors.detect import PersonDetector
from ..processors.face_gallery import FaceGallery
from ..processors.line_counter import LineCounter
from ..processors.traffic_events import TrafficEvents
from ..processors.video_window import VideoWindow
from ..runtime.broker import Broker, BrokerConfig
from ..runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..runtime.model_lanes import LaneLimits
from ..storage import PoolLimits, SQLStore, open_store
from ..transports import api_docs, box_tracking, console, frame_upload, rest_v1
from ..transports import sources as sources_api
from ..transports.auth import ApiKeyMiddleware, ApiKeys
from ..transports.box_requests import BoxReader
from ..transports.context import Telemetry
from ..transports.http import install_error_handlers, json_response
from ..transports.origins import OriginMiddleware
from ..transports.people_ws import live_routes
from ..transports.video_analysis_http import router as video_analysis_router
from .node_id import node_id
from .services import Services, SessionHost

__all__ = [
    "build_app",
    "build_broker",
    "build_compat_app",
    "build_host",
    "build_registry",
    "open_configured_store",
]

log = logging.getLogger(__name__)


def build_registry(
    settings: Settings, runtime: InferenceRuntime | None = None
) -> ProcessorRegistry:
    """Built-in processors with the server's defaults; plugins come from entry points.
    Detectors run in ``runtime`` (a new one, with ``inference_threads``, when not given)."""
    if runtime is None:
        runtime = InferenceRuntime(settings.inference_threads)
    registry = ProcessorRegistry(
        defaults={
            "bytetrack": settings.tracker.model_dump(),
            "annotate": {"quality": settings.jpeg_quality},
            "detect": {"runtime": runtime},
        }
    )
    registry.register("bytetrack", ByteTrackProcessor)
    registry.register("annotate", Annotator)
    registry.register("line_counter", LineCounter)
    registry.register("traffic_events", TrafficEvents)
    registry.register("faces", FaceGallery)
    registry.register("detect", PersonDetector)
    registry.register("video_window", VideoWindow)
    return registry


def open_configured_store(settings: Settings) -> SQLStore:
    """The store ``settings`` name (``database_url``, ``migrate``, the ``db_*`` limits)."""
    limits = settings.limits
    return open_store(
        settings.sqlalchemy_url,
        migrate=settings.migrate,
        pool=PoolLimits(limits.db_pool_size, limits.db_pool_overflow, limits.db_timeout_s),
    )


def build_broker(settings: Settings, store: Store | None = None) -> Broker:
    """The broker of one process, over ``store`` (default: the one ``settings`` name), with
    a detector runtime of its own."""
    limits = settings.limits
    return Broker(
        build_registry(settings),
        store=store if store is not None else open_configured_store(settings),
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
            lanes=LaneLimits(
                max_failures=settings.webrtc.max_model_failures,
                end_timeout_s=settings.webrtc.end_timeout_s,
            ),
            owner_id=node_id(settings),
            checkpoint_every_s=settings.cluster.checkpoint_every_s if settings.cluster.url else 0,
        ),
    )


def build_host(settings: Settings, store: Store | None = None) -> SessionHost:
    """What hosts this process's sessions: the broker, or with ``[cluster] url`` the broker
    wrapped as one node of the cluster."""
    broker = build_broker(settings, store)
    cluster = settings.cluster
    if cluster.url is None:
        return broker
    secret = settings.analysis.secret_key
    if secret is None:  # pragma: no cover - refused by check_startup
        raise ConfigError("--cluster needs SECRET_KEY (analysis.secret_key)")
    return Cluster(
        broker,
        ClusterConfig(
            url=cluster.url,
            secret=secret.get_secret_value(),
            name=cluster.name,
            ttl_s=cluster.ttl_s,
            source_ttl_s=cluster.source_ttl_s,
            host=cluster.relay_host or settings.host,
            address=cluster.address,
            relay_port=cluster.relay_port,
            relay_timeout_s=cluster.relay_timeout_s,
            ports=(("http", settings.port),),
        ),
    )


def build_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The ASGI app serving every transport on one port; its lifespan runs ``services``
    (built here, once, when not given)."""
    svc = services if services is not None else Services.build(settings)
    ctx = svc.ctx
    telemetry = ctx.telemetry

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
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
    install_error_handlers(app, on_error=lambda code: telemetry.error("http", code))
    boxes = BoxReader(settings.limits, settings.box_format, ctx.offload)
    post_frame = frame_upload.frame_handler(ctx, settings.frames, settings.limits)
    app.include_router(box_tracking.router(ctx, boxes, post_frame))
    app.include_router(rest_v1.router(ctx, boxes))
    app.include_router(console.router(ctx, settings, svc.records, svc.crops))
    app.include_router(sources_api.router(svc.feeds))
    app.mount(console.UI_PATH, console.static_files())  # the web console
    app.include_router(api_docs.router(app.title, "/openapi.json"))
    app.mount(api_docs.ASSETS_PATH, api_docs.static_files())
    app.router.routes.extend(
        live_routes(
            svc.hub,
            "/ws/live",
            max_message_bytes=settings.limits.max_ws_message_bytes,
            on_refused=lambda: telemetry.error("live_ws", "payload_too_large"),
        )
    )
    app.router.routes.extend(svc.webrtc.routes())
    app.state.analysis = svc.analysis
    uploads = settings.data_dir / "uploads"
    app.include_router(video_analysis_router(ctx, svc.analysis, settings.limits, uploads))
    app.mount("/socket.io", svc.socketio.app)
    sessions = svc.broker

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        if not svc.listening:
            return json_response({"status": "starting"}, 503)
        return json_response({"status": "ok", "sessions": sessions.session_count})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Ready for traffic: every listener bound and the broker not shutting down."""
        if not svc.listening or sessions.closing:
            return json_response({"status": "not ready"}, 503)
        return json_response({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(sessions.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    protect(app, settings, telemetry, "http")
    return app


OPEN_PATHS = ("/healthz", "/readyz", console.UI_PATH, api_docs.ASSETS_PATH)
"""Served without an API key: health checks, the console's and the docs page's static files
(no data)."""


def protect(app: Starlette, settings: Settings, telemetry: Telemetry, transport: str) -> Starlette:
    """Ask every request and socket of ``app`` for an API key when keys are configured, and
    let only the server's own pages (and the configured origins) open its WebSockets."""
    keys = ApiKeys({n: k.get_secret_value() for n, k in settings.auth.api_keys.items()})
    if keys:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=keys,
            open_paths=OPEN_PATHS,
            own_auth=("/socket.io",),
            on_refused=lambda kind: telemetry.error(
                transport if kind == "http" else f"{transport}_ws", "unauthorized"
            ),
        )
    # Added last, so it runs first: a foreign page's socket is refused before any key talk.
    app.add_middleware(
        OriginMiddleware, allowed=settings.auth.allowed_origins, own_check=("/socket.io",)
    )
    return app


def build_compat_app(name: str, services: Services) -> Starlette:
    """The original API ``name``'s own listener: its transport alone, at ``/``
    (``serve --compat``).

    It shares the main app's services and has no lifespan of its own.
    """
    settings = services.settings
    telemetry = services.ctx.telemetry
    app: Starlette
    if name == "people_ws":
        app = Starlette(
            routes=live_routes(
                services.hub,
                "/",
                max_message_bytes=settings.limits.max_ws_message_bytes,
                on_refused=lambda: telemetry.error("live_ws", "payload_too_large"),
            )
        )
    elif name == "frames":
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        install_error_handlers(app, on_error=lambda code: telemetry.error(name, code))
        handler = frame_upload.frame_handler(services.ctx, settings.frames, settings.limits)
        app.include_router(frame_upload.router(handler))
    elif name in ("webrtc_ws", "webrtc_http"):
        app = services.webrtc.compat_app(name)
    else:
        raise ValueError(f"unknown compatibility listener {name!r}")
    return protect(app, settings, telemetry, name)
