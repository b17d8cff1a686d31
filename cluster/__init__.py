"""Control plane: memories as Ray actors, with fork, hibernation and recovery.

    from cluster import MemoryCluster, ClusterSettings
    cluster = MemoryCluster(ClusterSettings())
    await cluster.start()
    await cluster.create_memory("acme", "notes", {"encoder": "hash"})

Live actors are tracked by one supervisor actor per Ray namespace (cluster/supervisor.py),
shared by every gateway replica; it keeps warm spare actors (cluster/spares.py) so forks and
rehydrations skip the process start-up.
"""

from cluster.cluster import ExportedState, MemoryCluster
from cluster.names import check_memory_name, check_tenant, check_user_tag, qualify
from cluster.settings import ClusterSettings
from cluster.storage import checkpoint_live_memories, start_storage

__all__ = ["MemoryCluster", "ExportedState", "ClusterSettings", "start_storage", "checkpoint_live_memories",
           "check_memory_name", "check_tenant",
           "check_user_tag", "qualify"]
