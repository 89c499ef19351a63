"""The OpenAPI document's browsable page, ``/docs``, that renders without internet.

FastAPI's own page loads Swagger UI from a CDN, so on a machine without internet it was blank.
Here the page loads Swagger UI from the installed ``fastapi-offline`` package (its static
folder: Swagger UI's bundle and stylesheet), served under :data:`ASSETS_PATH` as the console's
files are.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "DOCS_PATH", "router", "static_files"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def router(title: str, openapi_url: str) -> APIRouter:
    """``GET /docs``: Swagger UI for the document at ``openapi_url``."""
    api = APIRouter()

    @api.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    return api


def static_files() -> StaticFiles:
    """Swagger UI's files (mount at :data:`ASSETS_PATH`)."""
    return StaticFiles(directory=_ASSETS_DIR)
