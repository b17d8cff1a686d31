"""Multi-node scenario, run in its own process by test_multinode.py (and bench/fanout_bench.py).

A Python process holds one Ray connection and the test session already has one, so this
driver starts a three-node `ray.cluster_utils.Cluster` of its own (a head and two workers,
real processes), runs a MemoryCluster against it (Redis + S3, the production shape), and
removes the worker holding the most live memories *while every memory's client keeps
writing*. Then it checks that every acknowledged observation is there: each memory's
weight_hash equals a twin's fed exactly the acknowledged writes, in order. Prints one JSON
line with what it saw, including how long the affected memories took to answer again.

    python -m tests.cluster.multinode_driver '<json: redis_url, s3 {...}, prefix, data_dir>'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

MEMORIES = 6
WRITES = 16  # per memory; the node goes after every memory has acknowledged BEFORE of them
BEFORE = 6
CONFIG = {"encoder": "hash", "memory_width": 128, "pattern_slots": 256, "value_dim": 64}


def reference_hash(texts: list[str], vectors: Any) -> str:
    import torch

    from memory import MemoryConfig, NeuralMemory

    torch.set_num_threads(1)  # the actors' arithmetic
    memory = NeuralMemory(MemoryConfig.from_dict(CONFIG))
    for i, text in enumerate(texts):
        memory.observe_vectors(vectors[i : i + 1], [text])
    return memory.weight_hash


class Writer:
    """One client of one memory: writes one at a time, keeps what was acknowledged and when."""

    def __init__(self, mc: Any, name: str) -> None:
        from memory import get_encoder

        self.mc, self.name = mc, name
        self.texts = [f"{name} observation {k} on the cluster" for k in range(WRITES)]
        self.vectors = get_encoder("hash").encode(self.texts)
        self.acked: list[int] = []  # steps the server acknowledged
        self.written: list[int] = []  # which write (index into texts) each acknowledgement was for
        self.acked_at: list[float] = []
        self.errors: list[str] = []

    async def run(self, ready: asyncio.Event, go_on: asyncio.Event) -> None:
        for k in range(WRITES):
            if k == BEFORE:
                ready.set()
                await go_on.wait()
            try:
                result = await self.mc.observe("acme", self.name, self.vectors[k : k + 1], [self.texts[k]])
            except Exception as exc:  # noqa: BLE001 - a client-visible error is what we report
                self.errors.append(f"write {k}: {type(exc).__name__}: {exc}")
                continue
            self.acked.append(result["step"])
            self.written.append(k)
            self.acked_at.append(time.monotonic())


async def scenario(address: str, args: dict, nodes: list[str], workers: list[str], remove) -> dict:
    from actors import ActorSettings
    from cluster import ClusterSettings, MemoryCluster
    from tests.fixtures.servers import S3Server, make_storage_settings

    s3 = S3Server(**args["s3"]) if args.get("s3") else None
    storage = make_storage_settings(data_dir=args["data_dir"], redis_url=args["redis_url"], s3=s3,
                                    namespace=args["prefix"])
    # reuse_idle_seconds 0: every memory gets a process of its own, placed by Ray's SPREAD
    settings = ClusterSettings(ray_address=address, namespace=args["prefix"], actor_placement="spread",
                               max_live_actors=16, reuse_idle_seconds=0.0, storage=storage,
                               actor=ActorSettings(checkpoint_every_writes=5))
    mc = MemoryCluster(settings)
    await mc.start()
    names = [f"node-mem-{i}" for i in range(MEMORIES)]
    for name in names:
        await mc.create_memory("acme", name, CONFIG)
    placement = {n: (await mc._routes().call(f"acme/{n}", "where"))["node_id"] for n in names}
    held = {node: [n for n in names if placement[n] == node] for node in nodes}
    doomed = max(workers, key=lambda node: len(held[node]))

    writers = [Writer(mc, n) for n in names]
    readies = [asyncio.Event() for _ in writers]
    go_on = asyncio.Event()
    tasks = [asyncio.create_task(w.run(r, go_on)) for w, r in zip(writers, readies)]
    await asyncio.gather(*(r.wait() for r in readies))
    go_on.set()  # clients write on while the node goes
    await asyncio.sleep(0.2)
    removed_at = time.monotonic()
    await asyncio.to_thread(remove, doomed)
    await asyncio.gather(*tasks)

    after = {}
    for w in writers:
        stats = await mc.stats("acme", w.name)
        later = [t for t in w.acked_at if t > removed_at]
        after[w.name] = {
            "acked": w.acked, "errors": w.errors, "total": stats["total_observations"], "hash": stats["weight_hash"],
            "expected": reference_hash([w.texts[k] for k in w.written], w.vectors[w.written]),
            "answered_again_s": round(later[0] - removed_at, 3) if later else None,
            "longest_pause_s": round(max(b - a for a, b in zip(w.acked_at, w.acked_at[1:])), 3),
        }
    await mc.close(stop_actors=True)
    return {"placement": placement, "removed": doomed, "affected": held[doomed], "after": after}


def main(argv: list[str]) -> int:
    import ray
    from ray.cluster_utils import Cluster

    args = json.loads(argv[0])
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                              "health_check_failure_threshold": 3}
    small = {"object_store_memory": 96 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head_node": 1}, "include_dashboard": False, **small,
        "_system_config": fast_failure_detection})
    workers = {}
    for _ in range(2):
        node = cluster.add_node(num_cpus=1, **small)
        workers[node.node_id] = node
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        head_id = ray.get_runtime_context().get_node_id()
        result = asyncio.run(scenario(cluster.address, args, [head_id, *workers], list(workers),
                                      lambda node_id: cluster.remove_node(workers[node_id])))
        result.update(head=head_id, workers=sorted(workers))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
