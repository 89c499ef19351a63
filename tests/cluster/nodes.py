"""Nodes of a cluster inside the test process: each a real broker on a shared PostgreSQL
database, wrapped as a :class:`~framebroker.cluster.host.Cluster` on a real ``redis-server``,
relaying to the others over real HTTP on loopback. Short leases, so a takeover takes about a
second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from framebroker.cluster.host import Cluster
from framebroker.config import Settings, load_settings
from framebroker.server.app import build_host

SECRET = "a-cluster-secret-of-32-characters!"


def node_settings(
    name: str, data_dir: Path, database_url: str, redis_url: str, **cluster: Any
) -> Settings:
    return load_settings(
        data_dir=data_dir / name,
        database_url=database_url,
        node_id=name,
        max_workers=2,
        cluster={"url": redis_url, "ttl_s": 1.0, "checkpoint_every_s": 0.1, **cluster},
        analysis={"secret_key": SECRET},
    )


def make_node(settings: Settings) -> Cluster[Any]:
    host = build_host(settings)
    assert isinstance(host, Cluster)
    return host
