"""Gateway benchmark over real HTTP (issue 13's targets), each figure beside the floor it is
measured against in the same run, with the CPU each process role spends per request.

    python -m bench.serve_bench [--seconds 10] [--requests 200] [--out bench/results/serve_bench.json]

Starts everything itself in a temp dir (local Ray, an embedded Valkey, Serve on a free port with
`serve.app:build_app`, auth on) and tears it down at the end. Texts are real sentences
(bench/data/docstrings.txt). Phases, in order:

- floors: `GET /healthz` (Serve proxy + gateway) and `GET .../stats` (+ one actor call), 8 clients;
- single-text observe, 8 clients on 8 memories: `hash` encoder (no model cost: our overhead) and
  MiniLM, each with the CPU breakdown per request;
- the encoder in this process on the same texts (1 thread one at a time; both cores in batches),
  and an in-process encode + observe of one text (1 thread): the floors of the MiniLM figures;
- one client: REST observe p50 and MCP observe p50 (MiniLM);
- batch import through REST: the import command's own runner (`ImportRun`: batches of 256, two in
  flight, each naming the one before it) into one memory, MiniLM and hash; hash also one batch at
  a time (`--in-flight 1`), the effect of keeping two in flight in the same run.

On a shared 2-core machine the figures move a lot: compare within one run (the ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import httpx

from bench import write_results
from bench.corpus import docstring_sentences
from bench.procstat import cpu_by_role, per_request_ms
from bench.local_server import local_ingress, local_server, wait_for_spares
from serve.settings import INGRESS_MODES
from neural_memory.importing import DEFAULT_BATCH as IMPORT_BATCH
from neural_memory.importing import DEFAULT_IN_FLIGHT

CLIENTS = 8
# Issue 13's single-text targets, as ratios to their floors (the rows and the ceilings read them).
HASH_VS_HEALTHZ = 0.8  # hash observe, 8 clients, against /healthz
MINILM_VS_ENCODER = 0.7  # MiniLM observe, 8 clients, against the batched encoder
P50_VS_IN_PROCESS = 1.3  # REST observe p50, one client, against in-process encode + observe
BATCH = 64  # the encoder floor's batches
NAMESPACE = "nmem-serve-bench"


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))] * 1000, 2)

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2), "n": len(ordered)}


class Texts:
    """Real sentences, in order (cycled if a run needs more than there are)."""

    def __init__(self) -> None:
        self._all = docstring_sentences()
        self._next = 0

    def take(self, n: int | None = None) -> str | list[str]:
        out = [self._all[(self._next + i) % len(self._all)] for i in range(n or 1)]
        self._next += len(out)
        return out if n else out[0]


async def _create(client: httpx.AsyncClient, encoder: str) -> str:
    name = f"bench-{encoder}-{uuid.uuid4().hex[:8]}"
    config = {"encoder": encoder} if encoder != "minilm" else None
    response = await client.post("/v1/memories", json={"name": name, "config": config})
    response.raise_for_status()
    return name


async def spares_settled() -> None:
    """Creating memories binds spares and the replacements warm in the background: wait them out."""
    from cluster import ClusterSettings

    await wait_for_spares(NAMESPACE, ClusterSettings().spare_actors, timeout=120.0)
    await asyncio.sleep(1.0)


Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def throughput(client: httpx.AsyncClient, call: Call, seconds: float, clients: int = CLIENTS,
                     items_per_call: int = 1) -> dict:
    """`clients` loops of `call` for `seconds`: calls/s, items/s, latency and CPU per item."""
    done: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await call(client, i)
            if response.status_code == 200:
                done.append(time.perf_counter() - start)
            else:
                errors.append(response.text[:200])

    cpu_before, start = cpu_by_role(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed, cpu_after = time.perf_counter() - start, cpu_by_role()
    items = len(done) * items_per_call
    return {"clients": clients, "seconds": round(elapsed, 1), "calls_per_s": round(len(done) / elapsed, 1),
            "items_per_s": round(items / elapsed, 1), "errors": len(errors), "first_error": errors[:1],
            "latency": _stats(done) if done else None,
            "cpu_ms_per_item": per_request_ms(cpu_before, cpu_after, items)}


async def sequential(n: int, call: Callable[[], Awaitable[object]]) -> dict:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return _stats(samples)


def _observe(names: list[str], texts: Texts, batch: int | None = None) -> Call:
    async def call(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"contexts": texts.take(batch)} if batch else {"context": texts.take()}
        return await client.post(f"/v1/memories/{names[i % len(names)]}/observe", json=body)
    return call


def _wal_entry(step: int, vector: bytes, text: str) -> dict:
    """One single-text WAL entry, as the actor logs it (for the append floors)."""
    return {"step": step, "vectors": vector, "texts": [text], "domain": None, "options": {"request_id": str(step)}}


def durable_append_floor(redis_url: str, n: int) -> dict:
    """One WAL append of one text's vector to the same embedded Valkey (fsync before it answers):
    what durability costs a single write on this disk, before any of our code."""
    import numpy as np

    from storage import MetadataStore

    store = MetadataStore(redis_url, prefix="floor")
    store.create_memory("bench/floor", {"config": {}})
    vector = np.zeros(384, dtype="<f4").tobytes()
    samples = []
    for step in range(1, n + 1):
        start = time.perf_counter()
        store.wal_append("bench/floor", _wal_entry(step, vector, "x"))
        samples.append(time.perf_counter() - start)
    store.close()
    return _stats(samples)


def write_work_floor(redis_url: str, texts: Texts, n: int) -> dict:
    """CPU ms of the work one single-text observe must do wherever it is served, in this process
    on one thread with no transport: encode with `hash`, learn, the sha256 `weight_hash` the
    answer carries (the REST contract), one durable WAL append (this process's CPU and the
    Valkey's). `cores × 1000 / (this + a request's transport CPU)` is then the most writes/s any
    server could answer on this machine: the ceiling the issue's ratios are read against."""
    import numpy as np
    import torch

    from memory import MemoryConfig, NeuralMemory, get_encoder
    from storage import MetadataStore

    torch.set_num_threads(1)
    encoder, memory = get_encoder("hash"), NeuralMemory(MemoryConfig(encoder="hash"))
    store = MetadataStore(redis_url, prefix="work-floor")
    store.create_memory("bench/work-floor", {"config": {}})
    sample = texts.take(n + 64)
    memory.observe_vectors(encoder.encode(sample[:64]), sample[:64])  # warm, and a store to search
    spent = {"encode_hash": 0.0, "learn": 0.0, "weight_hash": 0.0, "wal_append": 0.0}
    valkey_before = cpu_by_role().get("valkey", 0.0)
    for step, text in enumerate(sample[64:], start=1):
        t0 = time.thread_time()
        vectors = encoder.encode([text])
        t1 = time.thread_time()
        memory.observe_vectors(vectors, [text])
        t2 = time.thread_time()
        _ = memory.weight_hash
        t3 = time.thread_time()
        store.wal_append("bench/work-floor", _wal_entry(step, np.asarray(vectors, "<f4").tobytes(), text))
        t4 = time.thread_time()
        for part, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[part] += seconds
    spent["wal_append"] += cpu_by_role().get("valkey", 0.0) - valkey_before
    store.close()
    per_write = {part: round(seconds * 1000 / n, 3) for part, seconds in spent.items()}
    per_write["total"] = round(sum(per_write.values()), 3)
    return {"cpu_ms_per_write": per_write, "n": n, "threads": 1}


def in_process_floors(texts: Texts, n: int) -> dict:
    """The encoder alone and encode + observe of one text, in this process, on the same texts."""
    import numpy as np
    import torch

    from memory import MemoryConfig, NeuralMemory, get_encoder

    encoder = get_encoder("minilm")
    sample = texts.take(max(n, BATCH * 4))
    torch.set_num_threads(1)
    encoder.encode(sample[:8])  # warm
    single, cpu_start = [], time.process_time()  # process: the runtime's own threads count too
    for text in sample[:n]:
        start = time.perf_counter()
        encoder.encode([text])
        single.append(time.perf_counter() - start)
    single_cpu_ms = (time.process_time() - cpu_start) * 1000 / n
    memory = NeuralMemory(MemoryConfig())
    memory.observe_vectors(encoder.encode(sample[:64]), sample[:64])
    both = []
    for text in sample[64 : 64 + n]:
        start = time.perf_counter()
        memory.observe_vectors(encoder.encode([text]), [text])
        both.append(time.perf_counter() - start)
    torch.set_num_threads(os.cpu_count() or 2)
    start = time.perf_counter()
    for at in range(0, len(sample) - BATCH + 1, BATCH):
        encoder.encode(sample[at : at + BATCH])
    batched = (len(sample) // BATCH * BATCH) / (time.perf_counter() - start)
    torch.set_num_threads(1)
    return {"encode_one_text_1_thread": _stats(single), "encode_one_text_cpu_ms": round(single_cpu_ms, 3),
            "encode_and_observe_one_text_1_thread": _stats(both),
            "encode_batched_sentences_per_s": round(batched, 1), "batch": BATCH,
            "threads_batched": os.cpu_count(), "encoder_vectors_finite": bool(np.isfinite(
                encoder.encode(sample[:2])).all())}


def import_run(url: str, key: str, name: str, texts: list[str], in_flight: int) -> dict:
    """`texts` learned through the import command's runner (a JSONL file, the command's batch
    size), timed end to end, with the CPU each process role spent per item."""
    import json
    import tempfile
    from pathlib import Path
    from unittest import mock

    from neural_memory import Client
    from neural_memory.importing import ImportOptions, ImportRun, plan_import

    with tempfile.TemporaryDirectory(prefix="nmem-bench-import-") as tmp, \
            mock.patch.dict(os.environ, {"NMEM_IMPORT_JOURNAL_DIR": tmp}):  # the journal, then gone
        source = Path(tmp) / "items.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        plan = plan_import([source], ImportOptions(), memory=name)
        with Client(url, api_key=key, timeout=300) as client:
            cpu_before, start = cpu_by_role(), time.perf_counter()
            ImportRun(client, name, plan, in_flight=in_flight).run()
            elapsed, cpu_after = time.perf_counter() - start, cpu_by_role()
    return {"items": len(texts), "batches": len(plan.batches), "batch": IMPORT_BATCH, "in_flight": in_flight,
            "seconds": round(elapsed, 1), "items_per_s": round(len(texts) / elapsed, 1), "errors": 0,
            "cpu_ms_per_item": per_request_ms(cpu_before, cpu_after, len(texts))}


async def mcp_observe_latency(url: str, key: str, name: str, texts: Texts, n: int) -> dict:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp:
            async def call() -> None:
                result = await mcp.call_tool("observe", {"context": texts.take(), "memory": name})
                if result.is_error:
                    raise RuntimeError(result.content[0].text)
            await sequential(10, call)
            return await sequential(n, call)


async def run_all(url: str, key: str, redis_url: str, n: int, seconds: float) -> dict:
    texts = Texts()
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    out: dict = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as c:
        hashed = [await _create(c, "hash") for _ in range(CLIENTS)]
        minilm = [await _create(c, "minilm") for _ in range(CLIENTS)]
        for name in hashed + minilm:  # warm: actors live, first-call costs paid
            (await c.post(f"/v1/memories/{name}/observe", json={"context": texts.take()})).raise_for_status()
        await spares_settled()
        out["healthz_8_clients"] = await throughput(c, lambda cl, i: cl.get("/healthz"), seconds)
        out["stats_8_clients"] = await throughput(
            c, lambda cl, i: cl.get(f"/v1/memories/{hashed[i]}/stats"), seconds)
        out["observe_hash_8_clients"] = await throughput(c, _observe(hashed, texts), seconds)
        out["observe_minilm_8_clients"] = await throughput(c, _observe(minilm, texts), seconds)
        out["in_process"] = await asyncio.to_thread(in_process_floors, texts, n)
        out["in_process"]["durable_wal_append_1_text"] = await asyncio.to_thread(durable_append_floor, redis_url, n)
        out["in_process"]["write_work"] = await asyncio.to_thread(write_work_floor, redis_url, texts, n)
        out["stats_1_client"] = await sequential(n, lambda: c.get(f"/v1/memories/{hashed[0]}/stats"))
        one = minilm[0]
        out["rest_observe_1_client"] = await sequential(
            n, lambda: c.post(f"/v1/memories/{one}/observe", json={"context": texts.take()}))
        out["mcp_observe_1_client"] = await mcp_observe_latency(url, key, one, texts, n)
    # sized for ~10 s each on this machine; a run is whole batches of the command's size
    for phase, memory, batches, in_flight in (("import_minilm", minilm[1], 12, DEFAULT_IN_FLIGHT),
                                              ("import_hash", hashed[1], 48, DEFAULT_IN_FLIGHT),
                                              ("import_hash_one_at_a_time", hashed[2], 48, 1)):
        out[phase] = await asyncio.to_thread(import_run, url, key, memory, texts.take(batches * IMPORT_BATCH),
                                             in_flight)
    return out


def figures(r: dict) -> list[tuple[str, str, str, str]]:
    """(figure, measured, floor it is compared with, target) rows."""
    health = r["healthz_8_clients"]["calls_per_s"]
    floors = r["in_process"]
    encoder_batched = floors["encode_batched_sentences_per_s"]
    one_in_process = floors["encode_and_observe_one_text_1_thread"]["p50_ms"]
    hash8, mini8 = r["observe_hash_8_clients"]["items_per_s"], r["observe_minilm_8_clients"]["items_per_s"]
    rest_p50, mcp_p50 = r["rest_observe_1_client"]["p50_ms"], r["mcp_observe_1_client"]["p50_ms"]
    imp_mini, imp_hash = r["import_minilm"]["items_per_s"], r["import_hash"]["items_per_s"]
    ratio = lambda a, b: f"{a / b:.2f}×" if b else "-"  # noqa: E731
    return [
        ("observe, hash encoder, 8 clients", f"{hash8} obs/s", f"/healthz {health}/s ({ratio(hash8, health)})",
         f"≥ {HASH_VS_HEALTHZ}× /healthz"),
        ("observe, MiniLM, 8 clients", f"{mini8} obs/s",
         f"encoder batched in-process {encoder_batched}/s ({ratio(mini8, encoder_batched)})", f"≥ {MINILM_VS_ENCODER}× encoder"),
        ("REST observe p50, 1 client (MiniLM)", f"{rest_p50} ms",
         f"in-process encode + observe {one_in_process} ms ({ratio(rest_p50, one_in_process)}); "
         f"+ one durable WAL append {floors['durable_wal_append_1_text']['p50_ms']} ms", f"≤ {P50_VS_IN_PROCESS}×"),
        (f"batch import through REST (MiniLM, `neural-memory import`: batches of {IMPORT_BATCH}, "
         f"{DEFAULT_IN_FLIGHT} in flight)", f"{imp_mini} items/s",
         f"encoder batched {encoder_batched}/s ({ratio(imp_mini, encoder_batched)})", "≥ 0.8× encoder"),
        ("batch import through REST (hash, the same)", f"{imp_hash} items/s",
         f"one batch at a time: {r['import_hash_one_at_a_time']['items_per_s']} items/s", "≥ 2,000 items/s"),
        ("MCP observe p50 vs REST p50", f"{mcp_p50} ms", f"REST {rest_p50} ms ({ratio(mcp_p50, rest_p50)})",
         "≤ 1.1×"),
        ("moonshot: observations/s with MiniLM (best of the paths above)", f"{max(mini8, imp_mini)} /s", "-",
         "> 100/s"),
        ("floor: GET stats, 8 clients (proxy + gateway + one actor call)",
         f"{r['stats_8_clients']['calls_per_s']}/s", f"/healthz {health}/s", "-"),
        *ceilings(r),
    ]


def ceilings(r: dict) -> list[tuple[str, str, str, str]]:
    """The most each single-text figure could reach on this machine, from floors of the same run:
    writes/s ≤ cores × 1000 / (CPU ms of the write's own work + CPU ms of one request's transport:
    `/healthz`'s, or `GET stats`' with its actor call; the bench client's share included, as it
    shares the cores), and a p50 ≥ the in-process work + the write's durable append + one
    client's `GET stats` round trip."""
    cores, work = os.cpu_count() or 1, r["in_process"]["write_work"]["cpu_ms_per_write"]
    floors = r["in_process"]
    minilm_work = work["total"] - work["encode_hash"] + floors["encode_one_text_cpu_ms"]
    health_cpu = r["healthz_8_clients"]["cpu_ms_per_item"]["total"]
    stats_cpu = r["stats_8_clients"]["cpu_ms_per_item"]["total"]
    rows = []
    for label, phase, own, target in (
            ("hash", "observe_hash_8_clients", work["total"], HASH_VS_HEALTHZ * r["healthz_8_clients"]["calls_per_s"]),
            ("MiniLM", "observe_minilm_8_clients", minilm_work,
             MINILM_VS_ENCODER * floors["encode_batched_sentences_per_s"])):
        bare, with_call = cores * 1000 / (own + health_cpu), cores * 1000 / (own + stats_cpu)
        measured = r[phase]["items_per_s"]
        rows.append((f"ceiling: observe, {label}, 8 clients ({cores} cores ÷ CPU per write: its own work "
                     f"{own:.2f} ms + /healthz's {health_cpu} ms, or + GET stats' {stats_cpu} ms)",
                     f"{bare:.0f}/s, or {with_call:.0f}/s with the actor call",
                     f"measured {measured}/s = {measured / with_call:.2f}× the second",
                     f"target {target:.0f}/s = {target / bare:.2f}× the first"))
    one = floors["encode_and_observe_one_text_1_thread"]["p50_ms"]
    latency = (one + work["weight_hash"] + floors["durable_wal_append_1_text"]["p50_ms"]
               + r["stats_1_client"]["p50_ms"])
    rest_p50 = r["rest_observe_1_client"]["p50_ms"]
    rows.append(("ceiling: REST observe p50, 1 client (in-process encode + observe + weight hash + durable "
                 "append, + one GET stats round trip)", f"{latency:.2f} ms",
                 f"measured {rest_p50} ms = {rest_p50 / latency:.2f}× it",
                 f"target {P50_VS_IN_PROCESS * one:.2f} ms = {P50_VS_IN_PROCESS * one / latency:.2f}× it"))
    return rows


def report(r: dict) -> str:
    lines = ["| figure | measured | floor (same run) | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in figures(r)]
    lines += ["", "CPU ms per item, by process role:", ""]
    for phase in ("healthz_8_clients", "stats_8_clients", "observe_hash_8_clients", "observe_minilm_8_clients",
                  "import_minilm", "import_hash", "import_hash_one_at_a_time"):
        parts = ", ".join(f"{role} {ms}" for role, ms in r[phase]["cpu_ms_per_item"].items())
        lines.append(f"- {phase}: {parts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential calls per latency figure")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    parser.add_argument("--encoder-threads", type=int, default=0,
                        help="NMEM_ENCODER_THREADS of the gateway (0: the default)")
    parser.add_argument("--ingress", choices=INGRESS_MODES, default="auto",
                        help="how HTTP reaches the gateway, as `neural-memory serve --ingress`")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_bench.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 lets anything starve it
    load_before = os.getloadavg()
    gateway = {"encoder_threads": args.encoder_threads, "preload_encoders": "minilm,hash",
               "rate_limit_per_second": 0}  # throughput is measured, not the limit
    # all 16 memories stay live: the request path is measured, not one memory handing its
    # process to another
    cluster = {"reuse_idle_seconds": 0}
    with local_server(tenant="bench", namespace=NAMESPACE, gateway=gateway, cluster=cluster,
                      ingress=args.ingress) as (url, key, storage):
        results = asyncio.run(run_all(url, key, storage["redis_url"], args.requests, args.seconds))
    results["figures"] = [dict(zip(("figure", "measured", "floor", "target"), row)) for row in figures(results)]
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                          "encoder_threads": args.encoder_threads,
                          "ingress": local_ingress(args.ingress)}
    write_results(args.out, results)
    print(report(results))
    print(f"\nload average before/after: {results['machine']['loadavg_before']} / "
          f"{results['machine']['loadavg_after']}; full results in {args.out}")
    failed = {phase: figure["first_error"] for phase, figure in results.items()
              if isinstance(figure, dict) and figure.get("errors")}
    for phase, first in failed.items():  # a figure with refused requests measures the refusals
        print(f"INVALID: {phase} had {results[phase]['errors']} failed requests, e.g. {first[:1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
