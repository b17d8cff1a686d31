"""Small helpers shared by the actor and cluster tests."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import numpy as np

# Small memories keep actors light and observes fast; "hash" means no model download.
SMALL = {"encoder": "hash", "memory_width": 128, "pattern_slots": 256, "value_dim": 64}


def encode(texts: list[str]) -> np.ndarray:
    """Vectors as the gateway would send them (the hash encoder, no model load)."""
    from memory import get_encoder

    return get_encoder("hash").encode(texts)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Actors run torch with one thread; a reference memory must use the same arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference_hash(texts: list[str], vectors, config: dict | None = None) -> str:
    """weight_hash of a fresh memory fed `texts` one by one in this process (never a Ray actor)."""
    from memory import MemoryConfig, NeuralMemory

    with torch_threads(1):
        memory = NeuralMemory(MemoryConfig.from_dict(config or SMALL))
        for i, text in enumerate(texts):
            memory.observe_vectors(vectors[i : i + 1], [text])
        return memory.weight_hash


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, every: float = 0.1) -> bool:
    """Poll `predicate` until true or `timeout` (a bound for slow machines, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def memory_actors(namespace: str) -> dict[str, tuple[str, object]]:
    """Actor processes of `namespace` asked directly (independent of the supervisor):
    {Ray actor name: (qname or None for a spare, handle)}."""
    import ray

    found = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != namespace or not entry["name"].startswith("mem:"):
            continue
        try:
            handle = ray.get_actor(entry["name"], namespace=namespace)
            found[entry["name"]] = (ray.get(handle.identity.remote(), timeout=60)["qname"], handle)
        except (ValueError, ray.exceptions.RayError):
            continue  # died (or is dying) since listed
    return found


def named_memory_actors(namespace: str) -> list[str]:
    """Memories with a live actor in `namespace`, straight from Ray (spares not included)."""
    return sorted(qname for qname, _ in memory_actors(namespace).values() if qname is not None)


def spare_actors(namespace: str) -> list[str]:
    """Ray names of the unbound (spare) memory actors of `namespace`."""
    return [name for name, (qname, _) in memory_actors(namespace).items() if qname is None]


def kill_actor(namespace: str, qname: str) -> None:
    """`ray.kill` a memory's actor (no restart) and wait until its process has exited.

    ray.kill is asynchronous, and Ray frees the actor's name before its process is gone: a call
    sent in between still runs in the old process. (The log fences off what it would write,
    see MetadataStore.take_ownership; tests that change the log behind an actor's back wait.)
    """
    import ray

    (name,) = [name for name, (served, _) in memory_actors(namespace).items() if served == qname]
    handle = ray.get_actor(name, namespace=namespace)
    pid = ray.get(handle.where.remote(), timeout=60)["pid"]
    ray.kill(handle)

    def gone() -> bool:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return process_exited(pid)
        return False

    assert wait_until(gone, timeout=60, every=0.02), f"actor {name} of {qname} still alive after ray.kill"


def process_exited(pid: int) -> bool:
    """Whether process `pid` (on this machine) has exited: gone, or a zombie not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # the latter: it exited between open and read
        return True
