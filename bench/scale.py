"""One memory grown to 1k / 10k / 100k real facts (`bench.facts`): does it forget, and what does
it cost? Part of `python -m bench.memory_bench`.

At each size, in the process that grew it (cached MiniLM vectors, batches of 64):
- recall@1 of the oldest 1,000 facts and of a uniform 1,000 (a fixed sample of the facts
  observed so far), each cued by its reworded cue: `infer`'s top pattern is the fact. Next to
  it, on the same cues: exact cosine nearest-neighbour search over every fact observed so far,
  and the network alone (its recalled content decoded over every fact observed so far);
- seen-vs-unseen AUROC of the surprise for the same two sets of facts against 1,000 facts
  never observed: fused, network alone, episodic store alone.
Then the state goes to a fresh process (`child`), which loads it and measures what one live
memory costs: unique RAM (USS, torch included, no encoder), observe and infer p50/p99 on one
torch thread, and the bytes a content-addressed checkpoint store writes after 200 more
observations (parts whose sha256 was not in the previous checkpoint) next to the full state.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.facts import FACTS, SAMPLE, UNSEEN, Vectors, load, uniform_sample
from bench.quality import auroc, surprise_scores
from memory import MemoryConfig, NeuralMemory

NEGATIVES = np.arange(FACTS, FACTS + SAMPLE)  # never observed: the unseen side of the AUROC
FRESH = np.arange(FACTS + SAMPLE, FACTS + UNSEEN)  # observed only by the child process
BATCH = 64


def uss_mb() -> float:
    """Unique set size of this process (private pages: what exiting it would free), MB."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Private_"):
            fields[name] = int(value.split()[0])
    return sum(fields.values()) / 1024


def _ms(samples) -> dict:
    return {"p50_ms": float(np.percentile(samples, 50)), "p99_ms": float(np.percentile(samples, 99))}


def exact_nn_top1(cue_vectors: np.ndarray, fact_vectors: np.ndarray) -> np.ndarray:
    """Index of the most similar fact for each cue (exact float32 cosine, in blocks)."""
    best = np.full(len(cue_vectors), -1)
    best_sim = np.full(len(cue_vectors), -np.inf, dtype=np.float32)
    for start in range(0, len(fact_vectors), 20_000):
        sims = cue_vectors @ fact_vectors[start : start + 20_000].T
        top = sims.argmax(1)
        better = sims[np.arange(len(top)), top] > best_sim
        best[better], best_sim[better] = start + top[better], sims[np.arange(len(top)), top][better]
    return best


def evaluate(memory: NeuralMemory, vectors: Vectors, facts, n: int) -> dict:
    observed = vectors.facts(np.arange(n))
    contents = memory.net.values(torch.from_numpy(observed).to(memory.net.dtype))
    unseen = vectors.facts(NEGATIVES)
    out = {}
    for name, ids in (("oldest", np.arange(min(SAMPLE, n))), ("uniform", uniform_sample(n))):
        cue_vectors = vectors.cues(ids)
        top = [memory.infer_vector(v, top_k=1)["attention_weights"][0]["pattern"] for v in cue_vectors]
        with torch.no_grad():
            recalled = memory.net.recall(memory._keys(cue_vectors))
        seen = vectors.facts(ids)
        fused_seen, net_seen = surprise_scores(memory, seen)
        fused_unseen, net_unseen = surprise_scores(memory, unseen)
        episodic = lambda vs: [memory._episodic_surprise(memory.nearest(k)[1]) for k in memory._keys(vs)]
        out[name] = {
            "recall_at_1": float(np.mean([t == facts[i] for t, i in zip(top, ids)])),
            "exact_nn_recall_at_1": float(np.mean(exact_nn_top1(cue_vectors, observed) == ids)),
            "network_recall_at_1": float(np.mean((recalled @ contents.T).argmax(1).numpy() == ids)),
            "auroc_fused": auroc(fused_seen, fused_unseen),
            "auroc_network": auroc(net_seen, net_unseen),
            "auroc_episodic": auroc(episodic(seen), episodic(unseen)),
        }
    return out


def measure_live(blob: bytes, vectors: Vectors) -> dict:
    """Run `child` in a fresh process on this state; its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "state.nmem").write_bytes(blob)
        np.savez(Path(tmp) / "probe.npz", fresh=vectors.facts(FRESH), cues=vectors.cues(np.arange(SAMPLE)))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-m", "bench.scale", tmp], capture_output=True, text=True,
                              env=env, check=False)
        if done.returncode:
            raise RuntimeError(f"bench.scale child failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def child(folder: str) -> dict:
    """In a fresh process: load the state, measure RAM, speed and checkpoint bytes."""
    torch.set_num_threads(1)
    bare = NeuralMemory(MemoryConfig())  # imports done, nothing learned: the process floor
    bare.observe_vectors(np.eye(1, 384, dtype=np.float32), ["warm-up"])
    floor = uss_mb()
    del bare
    probe = np.load(Path(folder) / "probe.npz")
    fresh, cues = probe["fresh"], probe["cues"]
    memory = NeuralMemory.from_bytes((Path(folder) / "state.nmem").read_bytes())
    gc.collect()
    loaded = uss_mb()
    before = {hashlib.sha256(b).hexdigest(): len(b) for b in memory.state_parts().values()}
    observe = []
    for i in range(len(fresh)):
        start = time.perf_counter()
        memory.observe_vectors(fresh[i : i + 1], [f"fresh fact {i}"])
        observe.append((time.perf_counter() - start) * 1000)
        if i == 199:  # the actor's auto-checkpoint cadence (NMEM_CHECKPOINT_EVERY_WRITES)
            parts = memory.state_parts()
            written = sum(len(b) for b in parts.values() if hashlib.sha256(b).hexdigest() not in before)
            full = sum(len(b) for b in parts.values())
            largest_parts = sorted(((len(b), name) for name, b in parts.items()), reverse=True)[:3]
    infer = []
    for cue in cues[:500]:
        start = time.perf_counter()
        memory.infer_vector(cue)
        infer.append((time.perf_counter() - start) * 1000)
    return {"uss_mb": loaded, "uss_process_floor_mb": floor, "uss_memory_mb": loaded - floor,
            "uss_after_1000_more_mb": uss_mb(), "observe": _ms(observe), "infer": _ms(infer),
            "checkpoint_written_mb": written / 1e6, "full_state_mb": full / 1e6,
            "checkpoint_share": written / full, "parts": len(parts),
            "largest_parts": [[name, size / 1e6] for size, name in largest_parts],
            "observations": memory.step}


def grow(config: MemoryConfig, sizes: list[int], live: bool = True) -> dict:
    vectors, (facts, _) = Vectors(), load()
    sizes = [n for n in sizes if n <= vectors.observable]
    memory, report, done, busy = NeuralMemory(config), {}, 0, 0.0
    for n in sizes:
        chunk = vectors.facts(np.arange(done, n))
        start = time.perf_counter()
        for at in range(0, n - done, BATCH):
            end = min(at + BATCH, n - done)
            memory.observe_vectors(chunk[at:end], list(facts[done + at : done + end]))
        busy += time.perf_counter() - start
        done = n
        started = time.perf_counter()
        row = {"observations": n, "batched_items_per_s_so_far": n / busy, **evaluate(memory, vectors, facts, n),
               "stats": memory.stats()}
        row["evaluate_s"] = time.perf_counter() - started
        if live:
            row["live"] = measure_live(memory.to_bytes(), vectors)
        report[str(n)] = row
        print(json.dumps({"scale": n, **{k: row[k] for k in ("oldest", "uniform")}}, default=float),
              file=sys.stderr, flush=True)
    return report


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))
