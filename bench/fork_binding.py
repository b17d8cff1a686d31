"""What one per-user fork costs its actor process, in this process (no Ray, no HTTP).

    python -m bench.fork_binding [--base 5000] [--forks 30] [--out bench/results/fork_binding.json]

The memory actor's share of a fork cycle in bench/fanout_bench.py, without the Serve and Ray
hops around it, so it can be compared between two versions of the code in alternating runs on
this machine (whose speed drifts by up to ~2x between runs). A base memory of --base
observations (hash encoder, batches of 256) is tagged `v1` in an embedded Valkey + local
checkpoints; then each fork: register it, copy the tag's manifest as its first checkpoint (what
the gateway does), bind one warm MemoryActor process to it (load), one observe, one infer,
release (what an eviction does). The first 5 forks warm the process's caches and are not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench import write_results

WARMUP = 5


def run(base_size: int, forks: int) -> dict:
    import torch

    from actors import ActorSettings, ActorSpec, Checkpoints, MemoryActor, normalize_config
    from memory import get_encoder
    from storage import EmbeddedValkey, StorageSettings, open_storage

    torch.set_num_threads(1)  # as in an actor process
    encode = get_encoder("hash").encode
    config = normalize_config({"encoder": "hash"})
    with tempfile.TemporaryDirectory(prefix="nmem-fork-binding-") as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        settings = StorageSettings(redis_url=valkey.start(), data_dir=tmp, s3_endpoint=None)
        try:
            storage = open_storage(settings)
            spec = ActorSpec(storage=settings, settings=ActorSettings())

            def register(qname: str, parent: str | None = None) -> None:
                storage.metadata.create_memory(qname, {"tenant": "bench", "name": qname, "config": config,
                                                       "encoder": "hash", "parent": parent, "source_tag": None})

            register("bench/base")
            base = MemoryActor("bench/base", spec)
            base.start()
            texts = [f"fact {i}: topic {i % 97} relates to item {i * 7 % 1013}" for i in range(base_size)]
            for at in range(0, base_size, 256):
                base.observe(uuid.uuid4().hex, encode(texts[at : at + 256]), texts[at : at + 256])
            base.checkpoint("v1")
            tag = Checkpoints(storage, "bench/base").get("v1")
            actor = MemoryActor(None, spec)
            actor.warm()
            samples = []
            for i in range(WARMUP + forks):
                qname, fact = f"bench/user-{i}", f"user {i} prefers tea"
                began = time.perf_counter()
                register(qname, "bench/base")
                Checkpoints(storage, qname).copy_auto(tag)
                actor.start(qname)
                actor.call(qname, "observe", uuid.uuid4().hex, encode([fact]), [fact])
                actor.call(qname, "infer", encode(["what does the user prefer?"])[0], 5)
                actor.release()
                if i >= WARMUP:
                    samples.append(time.perf_counter() - began)
            base._stop.set()
            storage.close()
        finally:
            valkey.stop()
    ordered = sorted(samples)
    return {"base_observations": base_size, "forks_timed": forks,
            "ms_per_fork": {"mean": round(statistics.fmean(ordered) * 1000, 1),
                            "p50": round(ordered[len(ordered) // 2] * 1000, 1)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=5000)
    parser.add_argument("--forks", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fork_binding.json"))
    args = parser.parse_args(argv)
    result = run(args.base, args.forks)
    write_results(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
