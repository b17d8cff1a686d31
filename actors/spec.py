"""What a MemoryActor needs to know besides its memory's name: one small, picklable object.

The control plane builds an `ActorSpec` once (its `ActorSettings` plus the *resolved* storage
settings: the URL of an already-running Valkey and an absolute data directory) and hands it to
every actor it starts, so actors on any node open the same stores without starting servers of
their own, and no actor reads the environment.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from storage import StorageSettings

from actors.settings import ActorSettings

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
    storage: StorageSettings  # resolved (redis_url set, data_dir absolute)
    settings: ActorSettings = field(default_factory=ActorSettings)


def normalize_config(config: dict | None) -> dict:
    """The full MemoryConfig dict for a (possibly partial) user config; InvalidInput if bad."""
    from errors import InvalidInput  # noqa: PLC0415
    from memory import MemoryConfig  # noqa: PLC0415 - torch loads only where a memory is built

    if config is not None and not isinstance(config, dict):
        raise InvalidInput(f"memory config must be an object of settings, got {type(config).__name__}")
    return MemoryConfig.from_dict(config).to_dict()
