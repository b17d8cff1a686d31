"""Benchmark of durable state (issue 3: storage/).

    python -m bench.storage_bench [--quick] [--json bench/results/storage.json]

Checkpoint put/get latency for a ~4 MB state (the size of a default memory) on the local
store and on a real S3 server (SeaweedFS `weed mini`, started here on free ports), and the
WAL append rate on the embedded Valkey (appendfsync always) from 1 and from 16 writers.
Everything runs in a temp directory and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from storage import EmbeddedValkey, LocalCheckpointStore, MetadataStore, S3CheckpointStore

STATE_BYTES = 4 * 1024 * 1024


def _percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def checkpoint_latency(store, rounds: int) -> dict:
    state = os.urandom(STATE_BYTES)
    puts, gets = [], []
    for i in range(rounds):
        key = f"bench/mem/r{i}-{time.time_ns()}.ckpt"
        start = time.perf_counter()
        store.put(key, state)
        puts.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        assert store.get(key) == state
        gets.append((time.perf_counter() - start) * 1000)
    return {"put": _percentiles(puts), "get": _percentiles(gets), "state_mb": STATE_BYTES / 1e6}


def wal_rate(store: MetadataStore, total: int, writers: int) -> float:
    name = f"bench/wal-{writers}-{time.time_ns()}"
    store.create_memory(name, {"config": {}})
    vectors = os.urandom(384 * 4)  # one MiniLM vector, float32

    def write(first: int) -> None:
        for step in range(first, total + 1, writers):
            store.wal_append(name, {"step": step, "vectors": vectors, "texts": ["an observation"]})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(1, writers + 1)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return round(total / (time.perf_counter() - start), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    rounds, appends = (5, 300) if args.quick else (20, 2000)
    # The SeaweedFS launcher lives with the test fixtures (imported late: it pulls in pytest).
    from tests.fixtures.servers import start_seaweedfs, stop_seaweedfs

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="nmem-bench-") as tmp:
        root = Path(tmp)
        results["checkpoint_local"] = checkpoint_latency(LocalCheckpointStore(root / "ckpt"), rounds)
        (root / "weed").mkdir()
        server, process, ports = start_seaweedfs(root / "weed")
        try:
            s3 = S3CheckpointStore(server.endpoint, server.bucket, access_key=server.access_key,
                                   secret_key=server.secret_key)  # fmt: skip
            results["checkpoint_s3_seaweedfs"] = checkpoint_latency(s3, rounds)
        finally:
            stop_seaweedfs(process, ports)
        with EmbeddedValkey(root / "valkey") as valkey:
            store = MetadataStore(valkey.url)
            results["wal_appends_per_s_1_writer"] = wal_rate(store, appends, 1)
            results["wal_appends_per_s_16_writers"] = wal_rate(store, appends, 16)
            store.close()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
