"""Benchmark of the learning memory (issues: the learning memory; a memory that does not forget).

    python -m bench.facts embed          # once: MiniLM vectors of the corpus (15-40 min)
    python -m bench.memory_bench [--quick] [--json bench/results/memory.json]
                                 [--set chunk_size=32 ...] [--no-speed] [--sizes 1000,10000]

Everything on ONE torch thread, default config, encoder excluded (cached vectors):
- scale (`bench.scale`): one memory grown to 1k / 10k / 100k real facts (PyPI summaries with
  reworded cues, `bench.facts`): recall@1 of the oldest and of a uniform 1,000 next to exact
  nearest-neighbour search and the network alone on the same cues; seen-vs-unseen AUROC
  (fused, network, episodic); per size, in a fresh process: unique RAM, observe / infer p50,
  and checkpoint bytes after 200 more observations next to the full state;
- speed of a young memory (2,000 items): observe p50/p99, batched items/s, infer;
- the store's search next to HNSW graphs of three libraries, same data (`bench.index_libraries`);
- retention with and without consolidation; the seed suite (its latency check includes
  MiniLM); titans-pytorch, the peer, in the same run.
How the cues are made, and why: see `bench.facts`.
"""

from __future__ import annotations

import os

# One thread everywhere (set before numpy loads its BLAS), as in a memory actor (Ray starts
# its workers with OMP_NUM_THREADS=1).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - after the thread settings above
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import index_libraries, scale
from bench.corpus import docstring_sentences
from bench.facts import FACTS, Vectors, load, uniform_sample
from bench.quality import observe_all, retention
from bench.seed_suite import (Embeddings, run_capacity, run_generalization, run_learning,
                              run_retention)
from memory import MemoryConfig, NeuralMemory

def _ms(samples):
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def speed(config: MemoryConfig, vectors: np.ndarray, texts: list[str]) -> dict:
    memory, observe = NeuralMemory(config), []
    for i in range(2000):
        start = time.perf_counter()
        memory.observe_vectors(vectors[i : i + 1], texts[i : i + 1])
        observe.append((time.perf_counter() - start) * 1000)
    infer = []
    for i in range(500):
        start = time.perf_counter()
        memory.infer_vector(vectors[i])
        infer.append((time.perf_counter() - start) * 1000)
    batched = NeuralMemory(config)
    start = time.perf_counter()
    observe_all(batched, texts[:4000], vectors[:4000], batch=256)
    rate = 4000 / (time.perf_counter() - start)
    start = time.perf_counter()
    blob = batched.to_bytes()
    encode_ms = (time.perf_counter() - start) * 1000
    return {"observe_p50_ms": _ms(observe)[0], "observe_p99_ms": _ms(observe)[1],
            "batched_items_per_s": rate, "infer_p50_ms": _ms(infer)[0], "infer_p99_ms": _ms(infer)[1],
            "state_mb_after_4k": len(blob) / 1e6, "to_bytes_ms_after_4k": encode_ms}


def titans_pytorch_reference(vectors: np.ndarray) -> dict | None:
    try:
        from titans_pytorch import NeuralMemory as TitansPytorch
    except ImportError:
        return None
    mem = TitansPytorch(dim=384, chunk_size=1)
    x = torch.from_numpy(vectors[:200]).float()
    state, start = None, time.perf_counter()
    for i in range(200):
        _, state = mem(x[None, i : i + 1], state=state)
    streamed = 200 / (time.perf_counter() - start)
    mem = TitansPytorch(dim=384, chunk_size=64)
    start = time.perf_counter()
    mem(torch.from_numpy(vectors[:2048]).float()[None])
    return {"streamed_items_per_s": streamed, "batched_items_per_s": 2048 / (time.perf_counter() - start)}


def consolidation_retention(config: MemoryConfig, vectors: Vectors, facts) -> dict:
    """Learn A (100 facts), then 10x as much other data; A's recall with and without consolidate()."""
    ids = np.arange(FACTS - 1100, FACTS)
    a, later = ids[:100], ids[100:]
    unseen = vectors.facts(scale.NEGATIVES[:500])
    args = (config, [facts[i] for i in a], vectors.facts(a), [facts[i] for i in later], vectors.facts(later), unseen)
    return {"without": retention(*args, consolidate=False), "with_consolidation": retention(*args, consolidate=True)}


def index_comparison(vectors: Vectors, size: int) -> dict:
    return index_libraries.compare(vectors.facts(np.arange(size)), vectors.cues(uniform_sample(size)))


def seed_suite(config: MemoryConfig, emb: Embeddings, corpus: list[str]) -> dict:
    results = run_learning(config, emb) + run_retention(config, emb) + run_generalization(config, emb)
    results += run_capacity(config, emb, novel=corpus[-200:], fill=corpus[:400], include_encoder_latency=True)
    return {r.id: {"passed": r.passed(), "checks": [(c.name, c.ok, c.detail) for c in r.checks]}
            for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k only, skip the seed suite")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a MemoryConfig field for every part (e.g. chunk_size=32)")
    parser.add_argument("--sizes", help="comma-separated scale sizes (default 1000,10000,100000)")
    parser.add_argument("--no-speed", action="store_true", help="skip the young-memory speed part")
    args = parser.parse_args()
    config = MemoryConfig.from_dict(_overrides(args.set))
    torch.set_num_threads(1)
    started = time.perf_counter()
    vectors, (facts, _) = Vectors(), load()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else \
        ([1000, 10_000] if args.quick else [1000, 10_000, 100_000])
    report = {"config": config.to_dict(), "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}}
    if not args.no_speed:
        report["speed"] = speed(config, vectors.facts(np.arange(4000)), list(facts[:4000]))
        report["titans_pytorch"] = titans_pytorch_reference(vectors.facts(np.arange(2048)))
    _progress(report, started)
    report["scale"] = scale.grow(config, sizes)
    _progress(report, started)
    report["index_libraries"] = index_comparison(vectors, max(sizes))
    report["retention"] = consolidation_retention(config, vectors, facts)
    if not args.quick:
        emb = Embeddings("minilm", path=Path(__file__).with_name("results") / ".embeddings-minilm.npz")
        report["seed_suite"] = seed_suite(config, emb, list(docstring_sentences()))
        emb.save()
    report["wall_s"] = time.perf_counter() - started
    report["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=float)


def _progress(report: dict, started: float) -> None:
    print(f"[{time.perf_counter() - started:.0f}s] done: {', '.join(report)}", file=sys.stderr, flush=True)


def _overrides(pairs: list[str]) -> dict:
    """FIELD=VALUE strings -> a dict, each value typed like the field's default."""
    defaults, out = MemoryConfig().to_dict(), {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or field not in defaults:
            raise SystemExit(f"--set wants FIELD=VALUE with a MemoryConfig field, got {pair!r}")
        kind = type(defaults[field]) if defaults[field] is not None else float
        out[field] = value if kind is str else kind(value)
    return out


if __name__ == "__main__":
    main()
