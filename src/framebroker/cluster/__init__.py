"""The cluster's foundation on Redis: the session directory, the cross-process bus and
source leases (issue 15). Nothing in the server uses it yet; ``docs/cluster.md`` says how
the cluster layer will.
"""
