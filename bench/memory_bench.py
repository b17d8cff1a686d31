"""Benchmark of the learning memory (issue: the learning memory itself).

    python -m bench.memory_bench [--quick] [--json bench/results/memory.json]
                                 [--set chunk_size=32 ...] [--no-speed]

Speed on ONE CPU thread, default config, encoder excluded (vectors pre-computed): observe
latency p50/p99 (single item), batched items/s, infer latency. Quality with MiniLM on real
sentences (first lines of docstrings): seen-vs-unseen AUROC at 1k/5k/10k for the fused
surprise, the network alone and the pattern book alone; recall at N = 1k/5k/10k next to exact
nearest-neighbour search; retention with and without consolidation; the seed suite (with its
latency threshold, encoder included); and titans-pytorch for reference if installed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.corpus import docstring_sentences
from bench.quality import cue, observe_all, recall_vs_nearest_neighbour, retention, seen_unseen_auroc
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


def quality(config: MemoryConfig, emb: Embeddings, corpus: list[str], sizes: list[int]) -> dict:
    unseen = emb(corpus[-500:])
    out = {"auroc": {}, "recall": {}}
    for n in sizes:
        facts = corpus[:n]
        vectors = emb(facts)
        memory = NeuralMemory(config)
        observe_all(memory, facts, vectors)
        sample = np.random.default_rng(0).choice(n, min(500, n), replace=False)
        out["auroc"][n] = seen_unseen_auroc(memory, vectors[sample], unseen)
        cues = emb([cue(f) for f in facts])
        out["recall"][n] = recall_vs_nearest_neighbour(memory, facts, vectors, cues)
    set_a, later = corpus[10_000:10_100], corpus[10_100:11_100]
    args = (config, set_a, emb(set_a), later, emb(later), unseen)
    out["retention"] = {"without": retention(*args, consolidate=False),
                        "with_consolidation": retention(*args, consolidate=True)}
    return out


def seed_suite(config: MemoryConfig, emb: Embeddings, corpus: list[str]) -> dict:
    results = run_learning(config, emb) + run_retention(config, emb) + run_generalization(config, emb)
    results += run_capacity(config, emb, novel=corpus[-200:], fill=corpus[:400], include_encoder_latency=True)
    return {r.id: {"passed": r.passed(), "checks": [(c.name, c.ok, c.detail) for c in r.checks]}
            for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k/5k only, skip the seed suite")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a MemoryConfig field for every part (e.g. chunk_size=32)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed part")
    args = parser.parse_args()
    config = MemoryConfig.from_dict(_overrides(args.set))
    torch.set_num_threads(1)
    emb = Embeddings("minilm", path=Path(__file__).with_name("results") / ".embeddings-minilm.npz")
    corpus = list(docstring_sentences())
    vectors = emb(corpus[:4000])
    emb.save()
    report = {"config": config.to_dict()}
    if not args.no_speed:
        report["speed"] = speed(config, vectors, corpus[:4000])
        report["titans_pytorch"] = titans_pytorch_reference(vectors)
    report["quality"] = quality(config, emb, corpus, [1000, 5000] if args.quick else [1000, 5000, 10_000])
    emb.save()
    if not args.quick:
        report["seed_suite"] = seed_suite(config, emb, corpus)
        emb.save()
    print(json.dumps(report, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=float)


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
