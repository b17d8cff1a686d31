"""Cluster benchmark: what one-actor-per-memory costs (issue 4's figures).

    python -m bench.cluster_bench [--repeats 20] [--out bench/results/cluster_bench.json]

Measures, with the default memory config (384-d, width 1024, 4096 pattern slots; the actor
never loads the text encoder):
- actor call overhead: MemoryCluster -> Ray actor -> back, a no-op `ping` (and an observe,
  which adds the WAL append with fsync, the update and stats/history writes)
- fork -> first observe: fork of a live memory (snapshot + new actor) until its first write returns
- rehydrate: first call after hibernation (actor start + checkpoint load), split into an
  empty Ray actor's start and the state load alone (MemoryActor.start() in this process)
- checkpoint latency: user checkpoint to a local directory and to S3 (SeaweedFS `weed mini`)
- USS per actor (unique memory, from /proc/<pid>/smaps_rollup) and live actors per GB

Starts a local Ray, an embedded Valkey and (if `weed` is installed) an S3 server, all in a
temp dir, and stops them at the end. Numbers depend on machine load; the load average is
recorded next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

TENANT = "bench"


def _ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2), "n": len(ordered)}


async def _timed(repeats: int, make: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        await make(i)
        samples.append(time.perf_counter() - start)
    return samples


def uss_mb(pid: int) -> float:
    """Unique set size of a process: memory no other process shares (what killing it frees)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024


async def _cluster(storage, namespace: str):
    from cluster import ClusterSettings, MemoryCluster

    settings = ClusterSettings(namespace=namespace, storage=storage, max_live_actors=64,
                               checkpoint_every_writes=10_000, checkpoint_every_seconds=3600)
    mc = MemoryCluster(settings)
    await mc.start()
    return mc


async def bench_calls(mc, repeats: int) -> dict:
    from memory import get_encoder

    await mc.create_memory(TENANT, "calls", {})
    qname = f"{TENANT}/calls"
    route = mc._routes()
    await route.call(qname, "ping")
    texts = [f"benchmark observation number {i} about topic {i % 13}" for i in range(repeats)]
    vectors = get_encoder("hash").encode(texts)  # any 384-d unit vectors; the actor never encodes
    ping = await _timed(repeats * 5, lambda i: route.call(qname, "ping"))
    observe = await _timed(repeats, lambda i: mc.observe(TENANT, "calls", vectors[i : i + 1], [texts[i]]))
    return {"actor_call_ping": _ms(ping), "observe_end_to_end": _ms(observe)}


async def bench_fork_and_rehydrate(mc, repeats: int) -> dict:
    from memory import get_encoder

    vector = get_encoder("hash").encode(["first words of a fork"])
    fork, rehydrate = [], []
    for i in range(repeats):
        start = time.perf_counter()
        await mc.fork(TENANT, "calls", f"fork-{i}")
        await mc.observe(TENANT, f"fork-{i}", vector, ["first words of a fork"])
        fork.append(time.perf_counter() - start)
        await mc.hibernate(TENANT, f"fork-{i}")
        start = time.perf_counter()
        await mc.stats(TENANT, f"fork-{i}")
        rehydrate.append(time.perf_counter() - start)
    return {"fork_to_first_observe": _ms(fork), "rehydrate_first_call": _ms(rehydrate)}


async def bench_start_breakdown(mc, repeats: int) -> dict:
    """Where rehydration time goes: an empty Ray actor's start vs loading the state in-process."""
    import ray

    from actors import ActorSpec, MemoryActor

    @ray.remote(num_cpus=0)
    class Empty:
        def ping(self) -> bool:
            return True

    async def empty_actor(_i: int) -> None:
        actor = Empty.remote()
        await actor.ping.remote()
        ray.kill(actor)

    await mc.hibernate(TENANT, "calls")
    spec = ActorSpec(storage=mc.storage.settings.model_dump())

    def load_in_process() -> float:
        actor = MemoryActor(f"{TENANT}/calls", spec)
        start = time.perf_counter()
        actor.start()
        elapsed = time.perf_counter() - start
        actor._stop.set()
        actor._storage.close()
        return elapsed

    loads = [await asyncio.to_thread(load_in_process) for _ in range(repeats)]
    return {"empty_ray_actor_start": _ms(await _timed(repeats, empty_actor)), "state_load_in_process": _ms(loads)}


async def bench_checkpoint(mc, repeats: int, name: str) -> dict:
    await mc.create_memory(TENANT, name, {})
    samples = await _timed(repeats, lambda i: mc.checkpoint(TENANT, name, f"b{i}"))
    size = (await mc.list_checkpoints(TENANT, name))[0]["size_mb"]
    return {**_ms(samples), "size_mb": size}


async def bench_memory(mc, count: int) -> dict:
    import ray

    names = [f"uss-{i}" for i in range(count)]
    for name in names:
        await mc.create_memory(TENANT, name, {})
    usses = []
    for name in names:
        actor = ray.get_actor(f"mem:{TENANT}/{name}", namespace=mc.settings.namespace)
        usses.append(uss_mb((await actor.where.remote())["pid"]))
    mean = statistics.mean(usses)
    return {"uss_per_actor_mb": round(mean, 1), "uss_min_mb": round(min(usses), 1),
            "uss_max_mb": round(max(usses), 1), "live_actors_per_gb": round(1024 / mean, 1), "actors": count}


def _start_s3(root: Path):
    """A SeaweedFS S3 server (the test suite's helper); (None, None) if it cannot start."""
    from tests.fixtures.servers import start_seaweedfs, stop_seaweedfs

    root.mkdir(parents=True, exist_ok=True)
    try:
        server, process, ports = start_seaweedfs(root)
    except BaseException as exc:  # noqa: BLE001 - pytest.skip when weed is missing: local figures only
        print(f"S3 server not started ({exc!r}); skipping the S3 checkpoint figure")
        return None, None
    return server, lambda: stop_seaweedfs(process, ports)


async def run(args: argparse.Namespace, root: Path) -> dict:
    from storage import EmbeddedValkey
    from tests.fixtures.servers import make_storage_settings

    valkey = EmbeddedValkey(root / "valkey")
    url = valkey.start()
    s3, stop_s3 = _start_s3(root / "weed")
    results: dict[str, Any] = {}
    try:
        local = make_storage_settings(data_dir=root / "local", redis_url=url, namespace="bl")
        mc = await _cluster(local, f"bench-{uuid.uuid4().hex[:6]}")
        results.update(await bench_calls(mc, args.repeats))
        results.update(await bench_fork_and_rehydrate(mc, args.forks))
        results.update(await bench_start_breakdown(mc, args.forks))
        results["checkpoint_local"] = await bench_checkpoint(mc, args.repeats, "ckpt-local")
        results.update(await bench_memory(mc, args.actors))
        await mc.close(stop_actors=True)
        if s3 is not None:
            remote = make_storage_settings(data_dir=root / "s3", redis_url=url, s3=s3, namespace="bs")
            mc = await _cluster(remote, f"bench-{uuid.uuid4().hex[:6]}")
            results["checkpoint_s3"] = await bench_checkpoint(mc, args.repeats, "ckpt-s3")
            await mc.close(stop_actors=True)
    finally:
        if stop_s3 is not None:
            stop_s3()
        valkey.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="samples per latency figure")
    parser.add_argument("--forks", type=int, default=3, help="fork + rehydrate rounds")
    parser.add_argument("--actors", type=int, default=4, help="actors measured for USS")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cluster_bench.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="nmem-bench-") as tmp:
            results = asyncio.run(run(args, Path(tmp)))
    finally:
        ray.shutdown()
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
