"""What a transport is handed when the server assembles it."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..runtime.broker import Broker

__all__ = ["ServerContext"]


@dataclass(frozen=True, slots=True)
class ServerContext:
    broker: Broker
    settings: Settings
