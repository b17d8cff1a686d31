"""What a MemoryActor needs to know besides its memory's name: one small, picklable object.

The control plane builds an `ActorSpec` once (with the *resolved* storage settings: the URL of
an already-running Valkey and an absolute data directory) and hands it to every actor it starts,
so actors on any node open the same stores without starting servers of their own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from storage import StorageSettings

__all__ = ["ActorSpec", "new_actor_name", "ACTOR_PREFIX", "normalize_config"]

# Named actors of one deployment share a Ray namespace; this prefix keeps memory actors apart
# from the supervisor (and anything else) living there.
ACTOR_PREFIX = "mem:"


def new_actor_name() -> str:
    """A fresh Ray actor name for a memory actor process.

    Opaque, not the memory's name: Ray cannot rename an actor, and a warm spare is created
    before anyone knows which memory it will serve. The actor's `identity()` says which it
    serves; the supervisor keeps the memory -> actor table.
    """
    return f"{ACTOR_PREFIX}{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class ActorSpec:
    # StorageSettings fields, already resolved (redis_url set, data_dir absolute).
    storage: dict[str, Any] = field(default_factory=dict)
    # Auto-checkpoint after this many writes since the last checkpoint...
    checkpoint_every_writes: int = 200
    # ...or once this many seconds have passed with unsaved writes.
    checkpoint_every_seconds: float = 60.0
    # Auto-checkpoints kept per memory: the newest is what recovery loads, the one before it
    # is the fallback if the newest is corrupt (the WAL is kept back to it).
    keep_auto_checkpoints: int = 2
    # torch threads per actor: many actors share few cores, so one each avoids oversubscription.
    torch_threads: int = 1
    # Request ids remembered (with their results) so a retried write is never applied twice.
    remembered_requests: int = 4096

    def storage_settings(self) -> StorageSettings:
        return StorageSettings(**self.storage)


def normalize_config(config: dict | None) -> dict:
    """The full MemoryConfig dict for a (possibly partial) user config; InvalidInput if bad."""
    from errors import InvalidInput  # noqa: PLC0415
    from memory import MemoryConfig  # noqa: PLC0415 - torch loads only where a memory is built

    if config is not None and not isinstance(config, dict):
        raise InvalidInput(f"memory config must be an object of settings, got {type(config).__name__}")
    return MemoryConfig.from_dict(config).to_dict()
