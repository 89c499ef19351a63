"""Assembles the ASGI app and its listeners from the settings; the one place that knows every
transport."""

from __future__ import annotations

from .app import build_app, build_broker, build_compat_app, build_registry
from .services import Services

__all__ = ["Services", "build_app", "build_broker", "build_compat_app", "build_registry"]
