"""Start the deployment's storage once, in the process that runs the deployment.

`neural-memory serve` calls this before Serve starts: with no NMEM_REDIS_URL it starts the
embedded Valkey (in `open_storage`, the one place that does) and returns settings whose storage
carries that server's URL, so every gateway replica and memory actor connects to it instead of
starting its own.
"""

from __future__ import annotations

from storage import Storage, open_storage

from cluster.settings import ClusterSettings

__all__ = ["start_storage"]


def start_storage(settings: ClusterSettings) -> tuple[ClusterSettings, Storage]:
    """(settings with the resolved storage, the open Storage: close it last to stop Valkey)."""
    storage = open_storage(settings.storage)
    return settings.model_copy(update={"storage": storage.settings}), storage
