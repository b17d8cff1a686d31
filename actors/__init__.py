"""One Ray actor per memory: `MemoryActor` owns a NeuralMemory, its WAL and its checkpoints.

    from actors import MemoryActor, ActorSpec, new_actor_name
    handle = ray.remote(MemoryActor).options(name=new_actor_name(), ...).remote("acme/notes", spec)
    ray.get(handle.start.remote())     # or: .remote(None, spec), warm(), later start("acme/notes")

The control plane (cluster/) creates and supervises these; nothing here starts Ray.
"""

from actors.code_id import CODE_ID
from actors.durability import AUTO_PREFIX, Checkpoints, blob_to_parts, is_auto, parts_to_blob
from actors.memory_actor import MemoryActor, out_of_order
from actors.settings import ActorSettings
from actors.spec import ACTOR_PREFIX, ActorSpec, new_actor_name, normalize_config

__all__ = [
    "MemoryActor",
    "ActorSpec",
    "ActorSettings",
    "new_actor_name",
    "ACTOR_PREFIX",
    "AUTO_PREFIX",
    "Checkpoints",
    "is_auto",
    "blob_to_parts",
    "parts_to_blob",
    "normalize_config",
    "CODE_ID",
    "out_of_order",
]
