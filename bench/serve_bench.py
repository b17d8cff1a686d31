"""Gateway benchmark over real HTTP (issue 5's figures), MiniLM encoder, auth on.

    python -m bench.serve_bench [--requests 300] [--seconds 15] [--out bench/results/serve_bench.json]
    python -m bench.serve_bench --url http://127.0.0.1:8000 --api-key KEY   # an existing server

Measures:
- REST `POST /v1/memories/{m}/observe`: p50 / p99 latency, one client, one request at a time
- REST observe throughput with 8 concurrent clients: on 8 memories (one each) and on 1 memory
- REST infer and surprise p50
- MCP `tools/call observe` (official client, streamable HTTP): p50 / p99

Without --url it starts everything itself in a temp dir: local Ray, an embedded Valkey, Serve
on a free port with `serve.app:build_app`, and tears it all down at the end. Texts are real
sentences (bench/data/docstrings.txt), each observed once. The load average is recorded next
to the numbers: on a shared 2-core machine it moves them a lot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from bench.corpus import docstring_sentences
from serve.demo import wait_healthy

CLIENTS = 8
NAMESPACE = "nmem-serve-bench"


async def _no_settle() -> None:
    """Against --url nothing is known about background work; measure right away."""


async def spares_settled(timeout: float = 120.0) -> None:
    """Wait until the supervisor's warm spare is ready again (local mode). Creating memories
    binds spares and a replacement then warms in the background (~3 CPU-seconds); measuring
    during that would time the warm-up, not the gateway."""
    import ray

    from cluster import ClusterSettings
    from cluster.supervisor import SUPERVISOR_NAME

    wanted = ClusterSettings().spare_actors
    supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
    deadline = time.monotonic() + timeout
    while await supervisor.spares_ready.remote() < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.25)


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))] * 1000, 2)

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2), "n": len(ordered)}


class Texts:
    """Distinct sentences, never repeated within a run."""

    def __init__(self) -> None:
        self._all = docstring_sentences()
        self._next = 0

    def take(self) -> str:
        text = self._all[self._next % len(self._all)]
        self._next += 1
        return text


async def _create(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/v1/memories", json={"name": name})
    response.raise_for_status()


async def _timed_calls(client: httpx.AsyncClient, n: int, path: str, body_of) -> list[float]:
    """`n` sequential POSTs (GETs when `body_of` is None)."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        if body_of is None:
            response = await client.get(path)
        else:
            response = await client.post(path, json=body_of())
        samples.append(time.perf_counter() - start)
        response.raise_for_status()
    return samples


async def rest_latency(client: httpx.AsyncClient, texts: Texts, n: int, settle) -> dict:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await _create(client, name)
    await _timed_calls(client, 20, f"/v1/memories/{name}/observe", lambda: {"context": texts.take()})
    await settle()
    observe = await _timed_calls(client, n, f"/v1/memories/{name}/observe",
                                 lambda: {"context": texts.take()})
    infer = await _timed_calls(client, max(50, n // 3), f"/v1/memories/{name}/infer",
                               lambda: {"prompt": texts.take()})
    surprise = await _timed_calls(client, max(50, n // 3), f"/v1/memories/{name}/surprise",
                                  lambda: {"input": texts.take()})
    # Floors that explain the rest: the Serve proxy + gateway alone, and + one actor read.
    healthz = await _timed_calls(client, 100, "/healthz", None)
    stats = await _timed_calls(client, 100, f"/v1/memories/{name}/stats", None)
    return {"observe": _stats(observe), "infer": _stats(infer), "surprise": _stats(surprise),
            "healthz": _stats(healthz), "stats": _stats(stats)}


async def rest_throughput(client: httpx.AsyncClient, texts: Texts, seconds: float,
                          memories: int, settle) -> dict:
    names = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(memories)]
    await asyncio.gather(*(_create(client, n) for n in names))
    for name in names:  # warm: actor live, first-call costs paid
        await _timed_calls(client, 3, f"/v1/memories/{name}/observe", lambda: {"context": texts.take()})
    await settle()
    done: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        path = f"/v1/memories/{names[i % memories]}/observe"
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await client.post(path, json={"context": texts.take()})
            if response.status_code == 200:
                done.append(time.perf_counter() - start)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    elapsed = time.perf_counter() - start
    return {"clients": CLIENTS, "memories": memories, "seconds": round(elapsed, 1),
            "observations_per_s": round(len(done) / elapsed, 1), "errors": errors,
            "latency": _stats(done)}


async def mcp_latency(url: str, key: str | None, texts: Texts, n: int, settle=_no_settle) -> dict:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    name = f"bench-{uuid.uuid4().hex[:8]}"
    samples = []
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp:
            await mcp.call_tool("create_memory", {"memory": name})
            for i in range(n + 20):
                if i == 20:
                    await settle()
                start = time.perf_counter()
                result = await mcp.call_tool("observe", {"context": texts.take(), "memory": name})
                if i >= 20:  # the first 20 are warm-up
                    samples.append(time.perf_counter() - start)
                if result.is_error:
                    raise RuntimeError(result.content[0].text)
    return {"observe": _stats(samples)}


async def run_all(url: str, key: str | None, n: int, seconds: float, settle=_no_settle) -> dict:
    texts = Texts()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as c:
        results = {"rest": await rest_latency(c, texts, n, settle)}
        results["rest_throughput_8_memories"] = await rest_throughput(c, texts, seconds, CLIENTS, settle)
        results["rest_throughput_1_memory"] = await rest_throughput(c, texts, seconds, 1, settle)
    results["mcp"] = await mcp_latency(url, key, texts, n, settle)
    return results


async def encoder_latency(n: int) -> dict:
    """The Encoder deployment alone, through its DeploymentHandle (local mode only)."""
    from ray import serve

    handle = serve.get_deployment_handle("Encoder", app_name="neural-memory")
    texts = Texts()
    for _ in range(10):
        await handle.encode.remote("minilm", texts.take())
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await handle.encode.remote("minilm", texts.take())
        samples.append(time.perf_counter() - start)
    return _stats(samples)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(encode_in: str = "gateway", cluster: dict | None = None,
                 namespace: str = NAMESPACE) -> Iterator[tuple[str, str, dict]]:
    """Ray + Serve + the app on a free port, embedded storage in a temp dir; yields (url, key,
    the storage settings every replica and actor uses). `cluster`: ClusterSettings overrides."""
    import ray
    from ray import serve

    from serve.app import build_app
    from storage import EmbeddedValkey

    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="nmem-serve-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        redis_url = valkey.start()
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING")
            port = _free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            storage = {"redis_url": redis_url, "data_dir": tmp, "s3_endpoint": None}
            app = build_app({"host": "127.0.0.1", "port": port, "api_keys": f"{key}:bench",
                             "encode_in": encode_in,
                             "encoder_threads": int(os.environ.get("NMEM_ENCODER_THREADS", "0")),
                             "cluster": {"namespace": namespace, "storage": storage, **(cluster or {})}})
            serve.run(app, name="neural-memory", route_prefix="/", blocking=False)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, timeout=300)
            yield url, key, storage
        finally:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
            valkey.stop()


def _report(results: dict) -> str:
    rest, mcp = results["rest"], results["mcp"]
    t8, t1 = results["rest_throughput_8_memories"], results["rest_throughput_1_memory"]
    rows = [
        ("REST observe p50 / p99", f"{rest['observe']['p50_ms']} / {rest['observe']['p99_ms']} ms",
         "≤ 25 / ≤ 60 ms"),
        ("REST observe, 8 clients, 8 memories", f"{t8['observations_per_s']} obs/s", "≥ 300/s"),
        ("REST observe, 8 clients, 1 memory", f"{t1['observations_per_s']} obs/s", "-"),
        ("REST infer p50", f"{rest['infer']['p50_ms']} ms", "-"),
        ("REST surprise p50", f"{rest['surprise']['p50_ms']} ms", "-"),
        ("floor: GET /healthz p50 (proxy + gateway)", f"{rest['healthz']['p50_ms']} ms", "-"),
        ("floor: GET stats p50 (+ one actor call)", f"{rest['stats']['p50_ms']} ms", "-"),
        ("MCP tools/call observe p50 / p99",
         f"{mcp['observe']['p50_ms']} / {mcp['observe']['p99_ms']} ms", "≤ 30 ms (p50)"),
    ]
    if "encoder_handle_minilm" in results:
        rows.append(("floor: Encoder handle, 1 text p50",
                     f"{results['encoder_handle_minilm']['p50_ms']} ms", "-"))
    lines = ["| measure | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="benchmark a running gateway instead of starting one")
    parser.add_argument("--api-key", default=os.environ.get("NMEM_API_KEY"))
    parser.add_argument("--requests", type=int, default=300, help="sequential calls per measure")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each throughput run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_bench.json"))
    parser.add_argument("--encode-in", choices=["gateway", "deployment"], default="gateway",
                        help="where the local server encodes text (NMEM_ENCODE_IN)")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="nice level of the bench's Ray workers (Ray's default is 15, which "
                             "on a shared machine lets any other process starve them)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # read by the local Ray we start

    load_before = os.getloadavg()
    if args.url:
        results = asyncio.run(run_all(args.url.rstrip("/"), args.api_key, args.requests, args.seconds))
    else:
        with local_server(args.encode_in) as (url, key, _storage):
            results = asyncio.run(run_all(url, key, args.requests, args.seconds, spares_settled))
            if args.encode_in == "deployment":
                results["encoder_handle_minilm"] = asyncio.run(encoder_latency(100))
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                          "encoder": "minilm", "auth": True,
                          "encode_in": None if args.url else args.encode_in,
                          "ray_worker_niceness": None if args.url else args.worker_niceness}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(_report(results))
    print(f"\nload average before/after: {results['machine']['loadavg_before']} / "
          f"{results['machine']['loadavg_after']}; full results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
