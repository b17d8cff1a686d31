"""Multi-node scenario, run in its own process by test_multinode.py.

A Python process holds one Ray connection and the test session already has one, so this
driver starts a two-node `ray.cluster_utils.Cluster` of its own, runs a MemoryCluster against
its address (Redis + S3, the production shape), removes the worker node and checks that no
acknowledged observation is lost. Prints one JSON line with what it saw.

    python -m tests.cluster.multinode_driver '<json: redis_url, s3 {...}, prefix, data_dir>'
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

MEMORIES = 6
FIRST, SECOND = 8, 4  # observations per memory before / after the node is removed


def reference_hash(config: dict, texts: list[str], vectors: Any) -> str:
    import torch

    from memory import MemoryConfig, NeuralMemory

    torch.set_num_threads(1)  # the actors' arithmetic
    memory = NeuralMemory(MemoryConfig.from_dict(config))
    for i, text in enumerate(texts):
        memory.observe_vectors(vectors[i : i + 1], [text])
    return memory.weight_hash


async def scenario(address: str, args: dict, remove_worker) -> dict:
    from actors import ActorSettings
    from cluster import ClusterSettings, MemoryCluster
    from memory import get_encoder
    from tests.fixtures.servers import S3Server, make_storage_settings

    s3 = S3Server(**args["s3"]) if args.get("s3") else None
    storage = make_storage_settings(data_dir=args["data_dir"], redis_url=args["redis_url"], s3=s3,
                                    namespace=args["prefix"])
    settings = ClusterSettings(ray_address=address, namespace=args["prefix"], actor_placement="spread",
                               max_live_actors=16, storage=storage,
                               actor=ActorSettings(checkpoint_every_writes=5))
    mc = MemoryCluster(settings)
    await mc.start()
    config = {"encoder": "hash", "memory_width": 128, "pattern_slots": 256, "value_dim": 64}
    encoder = get_encoder("hash")
    names = [f"node-mem-{i}" for i in range(MEMORIES)]
    texts = {n: [f"{n} observation {k} on the cluster" for k in range(FIRST + SECOND)] for n in names}
    vectors = {n: encoder.encode(texts[n]) for n in names}
    acked: dict[str, list[int]] = {n: [] for n in names}

    async def feed(name: str, ks: range) -> None:
        for k in ks:
            result = await mc.observe("acme", name, vectors[name][k : k + 1], [texts[name][k]])
            acked[name].append(result["step"])

    for name in names:
        await mc.create_memory("acme", name, config)
    await asyncio.gather(*(feed(n, range(FIRST)) for n in names))
    placement = {}
    for name in names:
        placement[name] = (await mc._routes().call(f"acme/{name}", "where"))["node_id"]

    remove_worker()
    await asyncio.gather(*(feed(n, range(FIRST, FIRST + SECOND)) for n in names))
    after = {}
    for name in names:
        stats = await mc.stats("acme", name)
        after[name] = {"total": stats["total_observations"], "hash": stats["weight_hash"],
                       "expected": reference_hash(config, texts[name], vectors[name]), "acked": acked[name]}
    await mc.close(stop_actors=True)
    return {"placement": placement, "after": after}


def main(argv: list[str]) -> int:
    import ray
    from ray.cluster_utils import Cluster

    args = json.loads(argv[0])
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                              "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head_node": 1}, "include_dashboard": False,
        "object_store_memory": 128 * 1024 * 1024, "_system_config": fast_failure_detection})
    worker = cluster.add_node(num_cpus=1, resources={"worker_node": 1}, object_store_memory=128 * 1024 * 1024)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        head_id = ray.get_runtime_context().get_node_id()
        worker_id = worker.node_id
        result = asyncio.run(scenario(cluster.address, args, lambda: cluster.remove_node(worker)))
        result.update(head=head_id, worker=worker_id)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
