"""The cluster's foundation on Redis (issue 15): the session directory with node leases and
fencing epochs, the bus across processes and machines, and source leases.

Nothing in the server uses it yet; ``docs/cluster.md`` gives the key layout, the failure
behaviour and how a ``Cluster`` implementing ``Sessions`` will use these parts.
"""

from .bus import RedisBus, is_reliable
from .connection import connect
from .directory import Directory, Entry, Lease, NodeInfo, new_node_id
from .keys import Keys
from .sources import SourceHolder, SourceLease

__all__ = [
    "Directory",
    "Entry",
    "Keys",
    "Lease",
    "NodeInfo",
    "RedisBus",
    "SourceHolder",
    "SourceLease",
    "connect",
    "is_reliable",
    "new_node_id",
]
