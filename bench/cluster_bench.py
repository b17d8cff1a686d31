"""Cluster benchmark: what one-actor-per-memory costs (issue 4's figures).

    python -m bench.cluster_bench [--repeats 20] [--forks 3] [--out bench/results/cluster_bench.json]
    python -m bench.cluster_bench --preload-probe     # why not Ray's preload_python_modules (below)

Measures, with the default memory config (the actor never loads the text encoder):
- actor call overhead: MemoryCluster -> Ray actor -> back, a routed call that does no model
  work (`where`: the actor's node and pid; reported as `actor_call_ping`), and an observe,
  which adds the WAL append with fsync, the update and stats/history writes
- fork -> first observe: fork of a live memory (snapshot + an actor loads it) until its first
  write returns; and rehydrate: first call after hibernation. Both with the default warm spare
  (`spare_actors=1`: the supervisor binds an already started actor; measured once the spare has
  warmed up) and cold (`spare_actors=0`: a new process per start), plus back-to-back
  rehydrations that outrun the spare's refill
- where a start goes: phases inside the actor (imports, storage, checkpoint fetch/decode, WAL,
  stats), the supervisor + Ray share, an empty Ray actor's start, the state load in-process
- checkpoint latency: user checkpoint to a local directory and to S3 (SeaweedFS `weed mini`)
- USS per actor (unique memory, from /proc/<pid>/smaps_rollup), of an idle spare, live actors per GB

Starts a local Ray, an embedded Valkey and (if `weed` is installed) an S3 server, all in a
temp dir, and stops them at the end. Numbers depend on machine load; the load average is
recorded next to them.

--preload-probe starts a separate local Ray with `_system_config={"preload_python_modules":
["torch"]}` and times consecutive actor starts: only the few workers Ray prestarts at boot have
torch loaded; the pool is never refilled, so later actors pay worker start + torch again (and
every other worker, e.g. Serve's, would pay the import and its memory too).
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

from bench import write_results

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


def _median_timings(timings: list[dict]) -> dict:
    """Median milliseconds of each phase of MemoryActor.start() (see actors.Phases)."""
    names = sorted({name for t in timings for name in t}, key=lambda n: (n == "total", n))
    return {f"{name}_ms": round(1000 * statistics.median(t.get(name, 0.0) for t in timings), 1) for name in names}


def _median_phases(reports: list[dict]) -> dict:
    """Supervisor start reports: phases in the actor, the whole start as the supervisor saw it,
    and the difference (process start, class import, Ray's actor creation and calls)."""
    if not reports:
        return {}
    out = _median_timings([r["timings"] for r in reports])
    out["supervisor_start_ms"] = round(1000 * statistics.median(r["seconds"] for r in reports), 1)
    out["process_and_ray_ms"] = round(out["supervisor_start_ms"] - out.get("total_ms", 0.0), 1)
    out["n"] = len(reports)
    return out


async def _cluster(storage, namespace: str, spares: int = 1):
    from actors import ActorSettings
    from cluster import ClusterSettings, MemoryCluster

    settings = ClusterSettings(namespace=namespace, storage=storage, max_live_actors=64, spare_actors=spares,
                               actor=ActorSettings(checkpoint_every_writes=10_000, checkpoint_every_seconds=3600))
    mc = MemoryCluster(settings)
    await mc.start()
    return mc


async def _source(mc, name: str, writes: int) -> None:
    """A default memory with `writes` observations not yet checkpointed (what a fork snapshots)."""
    from memory import get_encoder

    await mc.create_memory(TENANT, name, {})
    texts = [f"source observation {i}" for i in range(writes)]
    vectors = get_encoder("hash").encode(texts)
    for i, text in enumerate(texts):
        await mc.observe(TENANT, name, vectors[i : i + 1], [text])


async def bench_calls(mc, repeats: int) -> dict:
    from memory import get_encoder

    await mc.create_memory(TENANT, "calls", {})
    qname = f"{TENANT}/calls"
    route = mc._routes()
    await route.call(qname, "where")
    texts = [f"benchmark observation number {i} about topic {i % 13}" for i in range(repeats)]
    vectors = get_encoder("hash").encode(texts)  # any 384-d unit vectors; the actor never encodes
    ping = await _timed(repeats * 5, lambda i: route.call(qname, "where"))
    observe = await _timed(repeats, lambda i: mc.observe(TENANT, "calls", vectors[i : i + 1], [texts[i]]))
    return {"actor_call_ping": _ms(ping), "observe_end_to_end": _ms(observe)}


async def _spares_warm(mc, timeout: float = 300.0) -> None:
    """Wait until the supervisor's spares are ready (the steady state between starts)."""
    deadline = time.monotonic() + timeout
    while await mc._supervisor.spares_ready.remote() < mc.settings.spare_actors:
        if time.monotonic() > deadline:
            raise TimeoutError("spare actors did not warm up")
        await asyncio.sleep(0.1)


async def bench_fork_and_rehydrate(mc, repeats: int, prefix: str, source: str = "calls") -> dict:
    """Fork of `source` -> first observe, and rehydration, each begun with the spares warm (if any)."""
    from memory import get_encoder

    vector = get_encoder("hash").encode(["first words of a fork"])
    fork, first_observe, rehydrate = [], [], []
    for i in range(repeats):
        name = f"{prefix}-{i}"
        await _spares_warm(mc)
        start = time.perf_counter()
        await mc.fork(TENANT, source, name)
        forked = time.perf_counter()
        await mc.observe(TENANT, name, vector, ["first words of a fork"])
        fork.append(time.perf_counter() - start)
        first_observe.append(time.perf_counter() - forked)
        await mc.hibernate(TENANT, name)
        await _spares_warm(mc)
        start = time.perf_counter()
        await mc.stats(TENANT, name)
        rehydrate.append(time.perf_counter() - start)
    reports = [r for r in await mc._supervisor.starts.remote() if r["qname"].startswith(f"{TENANT}/{prefix}-")]
    return {"fork_to_first_observe": _ms(fork), "first_observe_after_fork": _ms(first_observe),
            "rehydrate_first_call": _ms(rehydrate),
            "start_phases_spare": _median_phases([r for r in reports if r["spare"]]),
            "start_phases_cold": _median_phases([r for r in reports if not r["spare"]])}


async def bench_back_to_back(mc, count: int, prefix: str) -> dict:
    """`count` hibernated memories called one right after another: faster than spares refill."""
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        await mc.stats(TENANT, name)
        await mc.hibernate(TENANT, name)
    await _spares_warm(mc)
    samples = await _timed(count, lambda i: mc.stats(TENANT, names[i]))
    reports = (await mc._supervisor.starts.remote())[-count:]
    return {**_ms(samples), "served_by_spare": sum(r["spare"] for r in reports)}


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
    spec = ActorSpec(storage=mc.storage.settings)

    def load_in_process() -> dict:
        actor = MemoryActor(f"{TENANT}/calls", spec)
        timings = actor.start()["timings"]  # this process has every import already
        actor._stop.set()
        actor._storage.close()
        return timings

    loads = [await asyncio.to_thread(load_in_process) for _ in range(repeats)]
    return {"empty_ray_actor_start": _ms(await _timed(repeats, empty_actor)),
            "state_load_in_process": {**_ms([t["total"] for t in loads]),
                                      "phases": _median_timings(loads)}}


async def bench_checkpoint(mc, repeats: int, name: str) -> dict:
    await mc.create_memory(TENANT, name, {})
    samples = await _timed(repeats, lambda i: mc.checkpoint(TENANT, name, f"b{i}"))
    size = (await mc.list_checkpoints(TENANT, name))["checkpoints"][0]["size_mb"]
    return {**_ms(samples), "size_mb": size}


async def _spare_pids(mc) -> list[int]:
    import ray

    pids = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == mc.settings.namespace and entry["name"].startswith("mem:"):
            actor = ray.get_actor(entry["name"], namespace=mc.settings.namespace)
            if (await actor.identity.remote())["qname"] is None:
                pids.append((await actor.where.remote())["pid"])
    return pids


async def bench_memory(mc, count: int) -> dict:
    names = [f"uss-{i}" for i in range(count)]
    for name in names:
        await mc.create_memory(TENANT, name, {})
    route = mc._routes()
    usses = [uss_mb((await route.call(f"{TENANT}/{name}", "where"))["pid"]) for name in names]
    await _spares_warm(mc)
    spares = [uss_mb(pid) for pid in await _spare_pids(mc)]
    mean = statistics.mean(usses)
    return {"uss_per_actor_mb": round(mean, 1), "uss_min_mb": round(min(usses), 1),
            "uss_max_mb": round(max(usses), 1), "live_actors_per_gb": round(1024 / mean, 1), "actors": count,
            "uss_idle_spare_mb": round(statistics.mean(spares), 1) if spares else None}


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
        results.update(await bench_fork_and_rehydrate(mc, args.forks, "fork"))
        results["rehydrate_back_to_back"] = await bench_back_to_back(mc, args.forks, "fork")
        results.update(await bench_start_breakdown(mc, args.forks))
        results["checkpoint_local"] = await bench_checkpoint(mc, args.repeats, "ckpt-local")
        results.update(await bench_memory(mc, args.actors))
        await mc.close(stop_actors=True)
        cold = await _cluster(local, f"bench-{uuid.uuid4().hex[:6]}", spares=0)
        await _source(cold, "cold-src", args.repeats)
        results["cold_no_spares"] = await bench_fork_and_rehydrate(cold, args.forks, "cold", "cold-src")
        await cold.close(stop_actors=True)
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


def _idle_worker_usses() -> list[float]:
    """USS of this machine's idle Ray workers (process title `ray::IDLE`)."""
    usses = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::IDLE"):
                usses.append(round(uss_mb(int(proc.name)), 1))
        except OSError:
            continue
    return usses


def _probe_once(preload: list[str], starts: int) -> dict:
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             _system_config={"preload_python_modules": preload} if preload else None)

    @ray.remote(num_cpus=0)
    class TorchActor:
        def load(self) -> dict:
            began = time.perf_counter()
            import torch  # noqa: F401 - free if the worker preloaded it

            return {"pid": os.getpid(), "torch_import_s": round(time.perf_counter() - began, 3)}

    try:
        time.sleep(8)  # let the prestarted workers finish their preload
        idle = _idle_worker_usses()
        rows = []
        for _ in range(starts):
            began = time.perf_counter()
            actor = TorchActor.remote()
            row = ray.get(actor.load.remote())
            rows.append({"first_call_s": round(time.perf_counter() - began, 2), **row})
            ray.kill(actor)
            time.sleep(2)  # give Ray every chance to refill its idle pool
        return {"idle_workers_uss_mb_at_boot": idle, "idle_workers_after": len(_idle_worker_usses()),
                "actor_starts": rows}
    finally:
        ray.shutdown()


def preload_probe(starts: int = 4) -> dict:
    """Consecutive torch actor starts on a local Ray without and with preload_python_modules."""
    return {"without_preload": _probe_once([], starts), "preload_torch": _probe_once(["torch"], starts),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="samples per latency figure")
    parser.add_argument("--forks", type=int, default=3, help="fork + rehydrate rounds")
    parser.add_argument("--actors", type=int, default=4, help="actors measured for USS")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cluster_bench.json"))
    parser.add_argument("--preload-probe", action="store_true",
                        help="only measure Ray's preload_python_modules (separate Ray instance)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.preload_probe:
        print(json.dumps(preload_probe(), indent=2))
        return 0
    import ray

    load_at_start = round(os.getloadavg()[0], 2)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="nmem-bench-") as tmp:
            results = asyncio.run(run(args, Path(tmp)))
    finally:
        ray.shutdown()
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_1m_at_start": load_at_start,
                          "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}
    write_results(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
