"""Run the server: uvicorn on the configured host and port, TLS when asked."""

from __future__ import annotations

import logging

import uvicorn

from ..config import Settings
from .app import build_app

__all__ = ["serve"]

log = logging.getLogger("framebroker")


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    ssl = settings.ssl
    return uvicorn.Config(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.ssl_certfile) if ssl and settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if ssl and settings.ssl_keyfile else None,
        log_level=settings.log_level,
        lifespan="on",
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
    )


async def serve(settings: Settings) -> None:
    """Serve until interrupted; the broker ends every session on the way out."""
    config = uvicorn_config(settings)
    server = uvicorn.Server(config)
    scheme = "https" if settings.ssl else "http"
    log.info(
        "framebroker listening on %s://%s:%d (API docs at /docs)",
        scheme,
        settings.host,
        settings.port,
    )
    await server.serve()
