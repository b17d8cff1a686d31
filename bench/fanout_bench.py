"""Fan-out benchmark: one memory per user at platform scale (issue 14's figures).

    python -m bench.fanout_bench [--forks 1000] [--clients 16] [--client aiohttp|httpx] [--base 5000]
                                 [--live-cap 16] [--rehydrate 200] [--only fanout|node-loss]
                                 [--out bench/results/fanout.json]

Measures, over real HTTP against a local server started here (Ray + Serve + an embedded Valkey
+ local checkpoints in a temp dir, auth on, the `hash` encoder so the figures are the
platform's, not MiniLM's):
- base: a memory of --base observations (distinct synthetic sentences, observed in batches of
  256), checkpointed as tag `v1`, then hibernated (its own checkpoint and history archive are
  written before the burst is measured)
- fan-out: --forks forks of base@v1 made by --clients concurrent REST clients, each fork then
  observing one fact and answering one infer: total seconds, forks/s, fork latency and first
  answer (fork sent -> infer answered) p50/p99; checkpoint bytes added (the checkpoint
  directory) against one base checkpoint, and what Redis grew by (registry, WAL tails, history); peak memory of the node (PSS summed over every
  process this bench started, sampled each second) against the live-actor cap; how many
  starts bound a recycled process instead of starting one; CPU per fork cycle by process, and
  the floor it sets on first-answer latency (clients x CPU per fork / cores, Little's law for
  clients that wait for each answer)
- rehydrate: once every fork has hibernated, --rehydrate random forks are touched (one infer
  each): half by one client (the wake-up's own latency), half by all clients at once (under
  load): p50/p99
- node loss: the three-node scenario of tests/cluster/multinode_driver.py (its own Ray
  cluster; checkpoints on SeaweedFS S3): how long until every affected memory answers again,
  the longest pause a client saw, acknowledged writes lost

The machine's load average is recorded next to the figures: on a shared 2-core machine it
moves them a lot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import httpx

from bench import write_results
from bench.local_server import local_ingress, local_server, wait_for_spares
from serve.settings import INGRESS_MODES

TENANT = "bench"  # the tenant of the server's one API key
NAMESPACE = "nmem-fanout-bench"
REPO = Path(__file__).resolve().parents[1]


# The load generator shares the 2 cores with the server, so the clients use the cheapest
# maintained async HTTP client: aiohttp (a dependency of ray[serve]) spent 0.6 ms of CPU per
# request here, httpx 2.3 ms. `--client httpx` measures with the other one.
CLIENT_KINDS = ("aiohttp", "httpx")


class HttpError(Exception):
    """A refused request: its status and the start of its body."""


class LoadClient:
    """`await post(path, body)` -> the JSON answer (HttpError if not 2xx), over one keep-alive
    session of either library."""

    def __init__(self, url: str, key: str, kind: str) -> None:
        self._url, self._headers, self._kind = url, {"Authorization": f"Bearer {key}"}, kind

    async def __aenter__(self) -> "LoadClient":
        if self._kind == "aiohttp":
            import aiohttp

            self._session = aiohttp.ClientSession(self._url, headers=self._headers,
                                                  timeout=aiohttp.ClientTimeout(total=600))
            self._errors = aiohttp.ClientError  # a dropped connection is counted, not fatal
        else:
            self._session = httpx.AsyncClient(base_url=self._url, headers=self._headers, timeout=600)
            self._errors = httpx.HTTPError
        return self

    async def __aexit__(self, *exc: object) -> None:
        await (self._session.close() if self._kind == "aiohttp" else self._session.aclose())

    async def post(self, path: str, body: dict) -> dict:
        try:
            if self._kind == "aiohttp":
                async with self._session.post(path, json=body) as reply:
                    status, text = reply.status, await reply.text()
            else:
                reply = await self._session.post(path, json=body)
                status, text = reply.status_code, reply.text
        except (OSError, asyncio.TimeoutError, self._errors) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= status < 300:
            raise HttpError(f"{status} {text[:300]}")
        return json.loads(text)


def _pct(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))], 3)

    return {"p50_s": at(0.5), "p90_s": at(0.9), "p99_s": at(0.99), "max_s": round(ordered[-1], 3),
            "mean_s": round(statistics.fmean(ordered), 3), "n": len(ordered)}


def sentences(n: int, seed: int) -> list[str]:
    """Distinct sentences of random words (the hash encoder tells them apart)."""
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(50_000)}" for _ in range(12)) for _ in range(n)]


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def redis_bytes(url: str) -> int:
    """Memory the metadata server uses (registry, WAL tails, history, stats)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


class NodeMemory:
    """Samples the PSS of this process and every descendant (Ray's GCS, raylet, workers, the
    Valkey) once a second; `peak_mb` is the largest sum seen."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NodeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            pids = _descendants(os.getpid())
            total = sum(_pss_kb(pid) for pid in pids) / 1024
            if total > self.peak_mb:
                self.peak_mb, self.peak_processes = round(total, 1), len(pids)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this process and its descendants, by what each process is."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        role = _role(pid, cmd)
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def _role(pid: int, cmd: str) -> str:
    if pid == os.getpid():
        return "bench clients + driver"
    name = cmd.split("/")[-1]
    for role in ("MemoryActor", "Supervisor", "ServeReplica", "ProxyActor", "ServeController", "raylet",
                 "gcs_server", "valkey", "haproxy"):
        if role in name or role in cmd:
            return role
    return "other (Ray agents, idle workers)"


def cpu_delta(before: dict[str, float], after: dict[str, float], per: int) -> dict[str, float]:
    """CPU milliseconds per unit of work (`per` forks), by role, largest first."""
    diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return {k: round(v * 1000 / per, 1) for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v > 0}


def closed_loop_floor(fanout: dict, clients: int) -> dict:
    """The first-answer latency this machine allows at the measured CPU cost of one fork cycle.
    The clients wait for each answer before the next fork (a closed loop), so by Little's law
    the mean latency is clients / throughput, and throughput is at most cores / CPU per fork:
    below this mean, only less CPU per fork (or more cores) goes."""
    cpu_ms = sum(fanout["cpu_ms_per_fork_by_process"].values())
    cores = os.cpu_count() or 1
    mean_s = clients * cpu_ms / 1000 / cores
    return {"cpu_ms_per_fork": round(cpu_ms, 1), "cores": cores, "first_answer_mean_floor_s": round(mean_s, 3),
            "first_answer_mean_vs_floor": round(fanout["first_answer"]["mean_s"] / mean_s, 2),
            "cpu_ms_per_fork_for_p50_target_0.5s": round(0.5 * cores * 1000 / clients, 1)}


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "0")
            parents[int(entry.name)] = int(ppid)
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return sorted(found)


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def build_base(url: str, key: str, count: int) -> dict:
    """The base memory over REST (batches of 256 texts per observe), tagged v1; its size."""
    texts = sentences(count, seed=1)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
        (await http.post("/v1/memories", json={"name": "base", "config": {"encoder": "hash"}})).raise_for_status()
        for i in range(0, count, 256):
            reply = await http.post("/v1/memories/base/observe", json={"contexts": texts[i:i + 256]})
            reply.raise_for_status()
        saved = (await http.post("/v1/memories/base/checkpoints", json={"tag": "v1"})).json()
    return {"observations": count, "checkpoint_mb": saved["size_mb"]}


async def fan_out(url: str, key: str, forks: int, clients: int, kind: str) -> tuple[dict, list[str]]:
    names = [f"user-{i:05d}" for i in range(forks)]
    facts = sentences(forks, seed=2)
    queue: asyncio.Queue = asyncio.Queue()
    for item in zip(names, facts):
        queue.put_nowait(item)
    fork_s, first_answer_s, errors = [], [], []

    async def client() -> None:
        async with LoadClient(url, key, kind) as http:
            while not queue.empty():
                name, fact = queue.get_nowait()
                began = time.perf_counter()
                try:
                    await http.post("/v1/memories/base/fork", {"new_name": name, "source_tag": "v1"})
                    fork_s.append(time.perf_counter() - began)
                    await http.post(f"/v1/memories/{name}/observe", {"context": fact})
                    answer = await http.post(f"/v1/memories/{name}/infer", {"prompt": fact, "top_k": 1})
                    first_answer_s.append(time.perf_counter() - began)
                    if fact not in answer["response"]:
                        errors.append(f"{name}: recalled {answer['response'][:60]!r}")
                except HttpError as exc:
                    errors.append(f"{name}: {exc}")

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    total = time.perf_counter() - began
    return {"forks": forks, "clients": clients, "client_library": kind, "seconds": round(total, 2),
            "forks_per_s": round(forks / total, 2), "fork": _pct(fork_s),
            "first_answer": _pct(first_answer_s), "errors": errors[:20], "error_count": len(errors)}, names


async def rehydrate(url: str, key: str, names: list[str], touches: int, clients: int, seed: int,
                    kind: str) -> dict:
    """Hibernate every live memory, then touch random forks (one infer each) with `clients`
    concurrent clients; each touch wakes one."""
    await hibernate_all()
    picked = random.Random(seed).sample(names, min(touches, len(names)))
    queue: asyncio.Queue = asyncio.Queue()
    for name in picked:
        queue.put_nowait(name)
    samples, errors = [], []

    async def client() -> None:
        async with LoadClient(url, key, kind) as http:
            while not queue.empty():
                name = queue.get_nowait()
                began = time.perf_counter()
                try:
                    await http.post(f"/v1/memories/{name}/infer", {"prompt": "what do you know?"})
                except HttpError as exc:
                    errors.append(f"{name}: {exc}")
                    continue
                samples.append(time.perf_counter() - began)

    await asyncio.gather(*(client() for _ in range(clients)))
    return {"touched": len(picked), "clients": clients, "latency": _pct(samples), "errors": errors[:20]}


async def hibernate_all() -> None:
    import ray

    from cluster.supervisor import SUPERVISOR_NAME

    supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
    for qname in await supervisor.live.remote():
        await supervisor.hibernate.remote(qname)


async def starts_report() -> dict:
    import ray

    from cluster.supervisor import SUPERVISOR_NAME

    supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
    return await supervisor.processes.remote()


def run_fanout(args: argparse.Namespace) -> dict:
    cluster = {"max_live_actors": args.live_cap, "spare_actors": args.warm, "spare_actors_max": args.spares_max,
               "idle_seconds": 3600.0, "max_memories_per_tenant": args.forks + 10}
    with local_server(tenant=TENANT, namespace=NAMESPACE, gateway={"preload_encoders": "hash"},
                      cluster=cluster, ingress=args.ingress) as (url, key, storage):
        checkpoints = Path(storage["data_dir"]) / "checkpoints"
        base = asyncio.run(build_base(url, key, args.base))
        # The base at rest before the burst: its hibernation checkpoint (and the history archive
        # that comes with it, ~1.6 KB per observation) is the base's own, not the forks'.
        asyncio.run(hibernate_all())
        asyncio.run(wait_for_spares(NAMESPACE, args.warm, timeout=600.0))
        before, redis_before = dir_bytes(checkpoints), redis_bytes(storage["redis_url"])
        with NodeMemory() as node:
            started_before = asyncio.run(starts_report())["started"]
            cpu_before = cpu_by_role()
            fanout, names = asyncio.run(fan_out(url, key, args.forks, args.clients, args.client))
            fanout["cpu_ms_per_fork_by_process"] = cpu_delta(cpu_before, cpu_by_role(), args.forks)
            fanout["floor"] = closed_loop_floor(fanout, args.clients)
            fanout["storage_added_mb"] = round((dir_bytes(checkpoints) - before) / 1e6, 2)
            fanout["storage_added_vs_base_checkpoint"] = round(fanout["storage_added_mb"] / base["checkpoint_mb"], 3)
            fanout["redis_added_mb"] = round((redis_bytes(storage["redis_url"]) - redis_before) / 1e6, 2)
            fanout["processes"] = asyncio.run(starts_report())
            fanout["processes"]["started_during_burst"] = fanout["processes"]["started"] - started_before
            print(json.dumps({"fanout": fanout}, indent=1), flush=True)
            # One client at a time: the wake-up itself; then all clients at once: under load.
            wake = {"one_client": asyncio.run(rehydrate(url, key, names, args.rehydrate // 2, 1, 3, args.client)),
                    "all_clients": asyncio.run(rehydrate(url, key, names, args.rehydrate // 2, args.clients, 4,
                                                         args.client))
                    } if args.rehydrate >= 2 else None  # --rehydrate 0: fan-out figures only
        memory = {"peak_pss_mb": node.peak_mb, "processes_at_peak": node.peak_processes,
                  "live_cap": args.live_cap, "processes_beyond_cap": args.spares_max}
    return {"base": base, "fanout": fanout, "rehydrate": wake, "node_memory": memory}


def run_node_loss() -> dict:
    """tests/cluster/multinode_driver.py in its own process, against weed S3 + a Valkey here."""
    from storage import EmbeddedValkey
    from tests.fixtures.servers import start_seaweedfs, stop_seaweedfs

    with tempfile.TemporaryDirectory(prefix="nmem-node-loss-") as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        (Path(tmp) / "weed").mkdir()
        server, process, ports = start_seaweedfs(Path(tmp) / "weed")
        try:
            args = {"redis_url": valkey.start(), "s3": asdict(server), "prefix": f"nl{uuid.uuid4().hex[:8]}",
                    "data_dir": str(Path(tmp) / "nmem")}
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            proc = subprocess.run([sys.executable, "-m", "tests.cluster.multinode_driver", json.dumps(args)],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        finally:
            stop_seaweedfs(process, ports)
            valkey.stop()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"failed": proc.stderr[-2000:]}
    seen = json.loads(lines[-1][len("RESULT "):])
    after, affected = seen["after"], seen["affected"]
    lost = sum(max(0, len(s["acked"]) - s["total"]) + (s["hash"] != s["expected"]) for s in after.values())
    return {"nodes": 3, "memories": len(after), "affected": len(affected),
            "every_affected_answered_again_s": max(after[n]["answered_again_s"] or float("inf") for n in affected),
            "longest_client_pause_s": max(s["longest_pause_s"] for s in after.values()),
            "client_errors": sum(len(s["errors"]) for s in after.values()),
            "acknowledged_writes_lost": lost}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--forks", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client", choices=CLIENT_KINDS, default=CLIENT_KINDS[0],
                        help="the load generator's HTTP library (see CLIENT_KINDS)")
    parser.add_argument("--base", type=int, default=5000, help="observations of the base memory")
    parser.add_argument("--live-cap", type=int, default=16, help="NMEM_MAX_LIVE_ACTORS of the server")
    parser.add_argument("--spares-max", type=int, default=2,
                        help="NMEM_SPARE_ACTORS_MAX of the server: processes allowed beyond the live cap")
    parser.add_argument("--warm", type=int, default=16,
                        help="NMEM_SPARE_ACTORS of the server: warm processes ready before the burst")
    parser.add_argument("--rehydrate", type=int, default=200, help="random forks touched after hibernation")
    parser.add_argument("--only", choices=["fanout", "node-loss"])
    parser.add_argument("--ingress", choices=INGRESS_MODES, default="auto",
                        help="how HTTP reaches the gateway, as `neural-memory serve --ingress`")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fanout.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()
    results: dict = {}
    if args.only in (None, "fanout"):
        results.update(run_fanout(args))
    if args.only in (None, "node-loss"):
        results["node_loss"] = run_node_loss()
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()], "encoder": "hash",
                          "ingress": local_ingress(args.ingress),
                          "command": " ".join(["python -m bench.fanout_bench", *(argv or sys.argv[1:])])}
    write_results(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
