"""Start the deployment's storage once, in the process that runs the deployment, and save
every live memory before that process stops it.

`neural-memory serve` calls this before Serve starts: with no NMEM_REDIS_URL it starts the
embedded Valkey (in `open_storage`, the one place that does) and returns settings whose storage
carries that server's URL, so every gateway replica and memory actor connects to it instead of
starting its own.
"""

from __future__ import annotations

from storage import Storage, open_storage

from cluster.settings import ClusterSettings

__all__ = ["start_storage", "checkpoint_live_memories"]


def start_storage(settings: ClusterSettings) -> tuple[ClusterSettings, Storage]:
    """(settings with the resolved storage, the open Storage: close it last to stop Valkey)."""
    storage = open_storage(settings.storage)
    return settings.model_copy(update={"storage": storage.settings}), storage


def checkpoint_live_memories(namespace: str, timeout: float = 30.0) -> dict:
    """Graceful stop: every live memory of the deployment with a long unsaved tail writes a
    checkpoint (a short one stays in its WAL), in parallel, within `timeout` seconds in all.
    {"saved": n, "kept_as_log": n, "failed": [...]}."""
    import ray  # noqa: PLC0415 - only the serving process gets here, with Ray running

    from cluster.supervisor import SUPERVISOR_NAME  # noqa: PLC0415

    try:
        supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=namespace)
    except ValueError:  # no supervisor: no memory was ever used
        return {"saved": 0, "kept_as_log": 0, "failed": []}
    return ray.get(supervisor.checkpoint_live.remote(timeout * 0.9), timeout=timeout)
