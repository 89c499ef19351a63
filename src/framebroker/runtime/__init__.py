"""Async orchestration of the core: lanes, worker pool, housekeeping."""

from __future__ import annotations

from .broker import Broker, BrokerConfig

__all__ = ["Broker", "BrokerConfig"]
