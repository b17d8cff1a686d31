"""One Ray actor per memory: `MemoryActor` owns a NeuralMemory, its WAL and its checkpoints.

    from actors import MemoryActor, ActorSpec, actor_name
    handle = ray.remote(MemoryActor).options(name=actor_name("acme/notes"), ...).remote("acme/notes", spec)

The control plane (cluster/) creates and supervises these; nothing here starts Ray.
"""

from actors.durability import AUTO_PREFIX, Checkpoints, is_auto
from actors.memory_actor import MemoryActor
from actors.spec import ACTOR_PREFIX, ActorSpec, actor_name, normalize_config

__all__ = [
    "MemoryActor",
    "ActorSpec",
    "actor_name",
    "ACTOR_PREFIX",
    "AUTO_PREFIX",
    "Checkpoints",
    "is_auto",
    "normalize_config",
]
