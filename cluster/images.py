"""Memory images, control-plane side: a memory's checkpoint out as bytes, and back in as a new memory.

The checkpoint payload is opaque here: export hands out the bytes the existing checkpoint path
stored (a user tag, or a fresh auto-checkpoint of the live state, exactly what a fork copies);
import registers a new memory with the same record fields as create/fork and seeds its first
auto-checkpoint with the bytes, as a fork does, then checks that the loaded weights hash to
what the image promised. The file format around the bytes is serve/'s business.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors import Checkpoints, normalize_config
from errors import CheckpointCorrupt, IncompatibleState, InvalidInput, MemoryExists

from cluster.names import check_user_tag, qualify

if TYPE_CHECKING:
    from cluster.cluster import MemoryCluster

__all__ = ["ExportedState", "export_state", "import_state"]


@dataclass(frozen=True)
class ExportedState:
    config: dict
    weight_hash: str
    step: int
    data: bytes  # the checkpoint, as stored


async def export_state(cluster: MemoryCluster, tenant: str, name: str,
                       tag: str | None = None) -> ExportedState:
    """The checkpoint `tag` of memory `name`, or (no tag) a snapshot of its live state."""
    qname = qualify(tenant, name)
    record = await cluster._meta("get_memory", qname)
    if tag is not None:
        info = await cluster._meta("get_checkpoint", qname, check_user_tag(tag))
    else:
        info = await cluster._routes().call(qname, "snapshot")
    data = await asyncio.to_thread(cluster.storage.checkpoints.get, info["object_key"], info.get("sha256"))
    return ExportedState(record["config"], info["weight_hash"], int(info["step"]), data)


def _server_config(config: dict) -> dict:
    """The image's config as this server would run it; refuses what it cannot load."""
    try:
        return normalize_config(config)
    except InvalidInput as exc:
        raise IncompatibleState(f"this server cannot run the image's memory: {exc}") from None


async def import_state(cluster: MemoryCluster, tenant: str, name: str, state: ExportedState) -> dict:
    """Create memory `name` holding `state`; its weight hash must come out as the image said."""
    qname = qualify(tenant, name)
    full = _server_config(state.config)
    if await cluster._exists(qname):
        raise MemoryExists(f"memory {name} already exists; import the image under another name")
    record = {"tenant": tenant, "name": qname, "config": full, "encoder": full["encoder"],
              "parent": None, "source_tag": None,
              "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    await cluster._meta("create_memory", qname, record)
    try:
        await asyncio.to_thread(Checkpoints(cluster.storage, qname).save_auto, state.data,
                                step=state.step, weight_hash=state.weight_hash)
        await cluster._routes().ensure(qname, check_registry=False)
        stats = await cluster._routes().call(qname, "stats")
        if stats["weight_hash"] != state.weight_hash:
            raise IncompatibleState(f"the imported weights hash to {stats['weight_hash'][:12]} "
                                    f"here, not {state.weight_hash[:12]} as the image says")
    except CheckpointCorrupt as exc:  # the actor could not load the bytes
        await cluster._discard(qname)
        raise IncompatibleState(f"this server cannot load the image's checkpoint: {exc}") from None
    except BaseException:
        await cluster._discard(qname)
        raise
    return {"name": name, "weight_hash": stats["weight_hash"],
            "weight_parameters": stats["weight_parameters"], "step": int(stats["step"])}
