"""Small helpers shared by the actor and cluster tests."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

# Small memories keep actors light and observes fast; "hash" means no model download.
SMALL = {"encoder": "hash", "memory_width": 128, "pattern_slots": 256, "value_dim": 64}


def encode(texts: list[str]) -> np.ndarray:
    """Vectors as the gateway would send them (the hash encoder, no model load)."""
    from memory import get_encoder

    return get_encoder("hash").encode(texts)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, every: float = 0.1) -> bool:
    """Poll `predicate` until true or `timeout` (a bound for slow machines, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def named_memory_actors(namespace: str) -> list[str]:
    """Memory actors alive in `namespace`, straight from Ray (independent of the supervisor)."""
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace and a["name"].startswith("mem:")]


def kill_actor(namespace: str, qname: str) -> None:
    """`ray.kill` a memory's actor (no restart) and wait until it is really gone.

    ray.kill is asynchronous: without the wait, the next call could still reach the old actor.
    """
    import ray

    name = f"mem:{qname}"
    ray.kill(ray.get_actor(name, namespace=namespace))

    def gone() -> bool:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        return False

    assert wait_until(gone, timeout=60, every=0.02), f"actor {name} still alive after ray.kill"
