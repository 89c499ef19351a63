"""Every Redis key and channel of one cluster, named in one place.

All of them start ``fb:{<cluster>}:``. The braces are Redis Cluster's *hash tag*: only the
text between them picks the slot, so every key of one framebroker cluster lives on one shard
and the Lua scripts that touch several of them (a claim updates the entry, the index, the
owner's set and the epoch counter at once) stay atomic on a sharded Redis too. Several
framebroker clusters can share one Redis under different names.

::

    fb:{c}:session:<id>       hash   one session's entry: v, node, epoch, claimed_at, data
    fb:{c}:sessions           set    every session id in the directory (listing without SCAN)
    fb:{c}:owned:<node>       set    the ids a node holds (a dead node's orphans, at once)
    fb:{c}:node:<node>        hash   a node's lease (TTL) and record: address, ports, stats
    fb:{c}:nodes              zset   node ids, scored by when their lease last ran out
    fb:{c}:epoch              string the fencing counter: INCR for every claim and takeover
    fb:{c}:source:<name>      string a --source's lease (TTL): holder node, epoch
    fb:{c}:bus:<topic>        pub/sub channel of a droppable bus topic (frames, results)
    fb:{c}:events             stream the bus messages that must arrive (events, stats, ended)

The entry of a session has no TTL of its own: its lease is its owner's node key, renewed by
one heartbeat per node, however many sessions the node holds. Ids and names are bounded here
so a key stays small whatever a client sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_ID_CHARS", "Keys", "check_id"]

MAX_ID_CHARS = 256
"""The longest session id, node id or source name a key is made from."""

_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def check_id(value: str, what: str) -> str:
    """``value`` if it can name a key part: a non-empty string of at most
    :data:`MAX_ID_CHARS` characters; raises ``ValueError`` naming ``what`` otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        shown = repr(value)[:80]
        raise ValueError(f"{what} must be 1 to {MAX_ID_CHARS} characters, got {shown}")
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of cluster ``cluster`` (1 to 64 of ``A-Z a-z 0-9 _ . -``)."""

    cluster: str

    def __post_init__(self) -> None:
        if not isinstance(self.cluster, str) or not _CLUSTER_NAME.fullmatch(self.cluster):
            raise ValueError(
                f"a cluster name is 1 to 64 of A-Z a-z 0-9 _ . -, got {self.cluster!r}"
            )

    @property
    def prefix(self) -> str:
        return f"fb:{{{self.cluster}}}:"

    @property
    def socketio(self) -> str:
        """The pub/sub channel of python-socketio's ``AsyncRedisManager`` (seed 002's
        Socket.IO server): its emits to rooms, from every node to every node."""
        return f"{self.prefix}socketio"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{check_id(session_id, 'a session id')}"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}sessions"

    def owned(self, node: str) -> str:
        return f"{self.prefix}owned:{check_id(node, 'a node id')}"

    def node(self, node: str) -> str:
        return f"{self.prefix}node:{check_id(node, 'a node id')}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    def source(self, name: str) -> str:
        return f"{self.prefix}source:{check_id(name, 'a source name')}"

    def channel(self, topic: str) -> str:
        """The pub/sub channel of one bus topic."""
        return f"{self.prefix}bus:{topic}"

    def channel_pattern(self, prefix: str) -> str:
        """The ``PSUBSCRIBE`` pattern of the topics starting with ``prefix`` (glob characters
        in ``prefix`` escaped, so ``live/[a]/*`` matches only what it says)."""
        escaped = _GLOB_SPECIAL.sub(r"\\\1", prefix)
        return f"{self.channel(escaped)}*"

    def topic_of(self, channel: str) -> str | None:
        """The topic a channel carries, or ``None`` for a channel of another cluster."""
        bus = f"{self.prefix}bus:"
        return channel[len(bus) :] if channel.startswith(bus) else None

    @property
    def events(self) -> str:
        return f"{self.prefix}events"
