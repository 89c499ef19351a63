"""The cluster's foundation on Redis (issue 15): the session directory with node leases and
fencing epochs, the bus across processes and machines, and source leases.

``serve --cluster`` makes a node of it (:class:`~.host.Cluster`, the ``Sessions`` of one
node); ``docs/cluster.md`` gives the key layout, the failure behaviour and how a node uses
these parts.
"""

from .bus import RedisBus, is_reliable
from .connection import connect
from .directory import Directory, Entry, Lease, NodeInfo, new_node_id
from .keys import Keys
from .sources import SourceHolder, SourceKeeper, SourceLease

__all__ = [
    "Directory",
    "Entry",
    "Keys",
    "Lease",
    "NodeInfo",
    "RedisBus",
    "SourceHolder",
    "SourceKeeper",
    "SourceLease",
    "connect",
    "is_reliable",
    "new_node_id",
]
