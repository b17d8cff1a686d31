"""Cost of forgetting one observation exactly (issue 17).

    python -m bench.forget_bench [--sizes 10000 100000] [--json bench/results/forget.json]

For each size, a memory with the default config and the `hash` encoder (no model: the cost is
the memory's, not the encoder's) learns that many distinct facts in batches of 64 (as an
import sends them), with one private text X written on its own at a given position; then
one exact forget of X runs to its end. Measured in the same run, on the same memory:
- the job: wall time (start to done), entries replayed, bytes written (new checkpoint, new
  log segments), objects deleted;
- the peer: learning the whole stream from scratch (what "rebuild without X" costs done
  naively: the same work as the memory's first life), and one auto-checkpoint write (the
  floor of any rewrite of the state);
- that X reads as new afterwards: its surprise against never-seen texts.
It runs a MemoryActor in this process on an embedded Valkey and local checkpoints in a temp
directory (actor settings: the defaults), with one torch thread, like a real actor.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import torch

from actors import ActorSettings, ActorSpec, MemoryActor, normalize_config
from memory import get_encoder
from storage import StorageSettings, open_storage

CONFIG = {"encoder": "hash"}
BATCH = 64
X = "Erin's bank PIN is 4071 and her card ends in 9921"
NEVER_SEEN = [f"a sentence never observed, number {i}, about lighthouses" for i in range(20)]


def facts(n: int) -> list[str]:
    return [f"fact {i}: sensor {i % 97} in hall {i % 13} read {i * 7919 % 10007} units" for i in range(n)]


def build(storage, n: int, x_at: float) -> tuple[MemoryActor, float]:
    """A started actor that learned n facts with X at fraction `x_at`; seconds it took."""
    qname = f"bench/forget-{uuid.uuid4().hex[:8]}"
    full = normalize_config(CONFIG)
    storage.metadata.create_memory(qname, {"tenant": "bench", "name": qname, "config": full,
                                           "encoder": full["encoder"], "parent": None, "source_tag": None})
    actor = MemoryActor(qname, ActorSpec(storage=storage.settings, settings=ActorSettings()))
    actor.start()
    texts, encoder = facts(n), get_encoder("hash")
    cut = int(n * x_at) // BATCH * BATCH
    writes = [texts[i : i + BATCH] for i in range(0, cut, BATCH)] + [[X]]
    writes += [texts[i : i + BATCH] for i in range(cut, n, BATCH)]
    began = time.perf_counter()
    for batch in writes:
        actor.observe(uuid.uuid4().hex, encoder.encode(batch), batch)
    return actor, time.perf_counter() - began


def surprise(actor: MemoryActor, text: str) -> float:
    return actor.surprise(get_encoder("hash").encode([text])[0], text)["score"]


def forget_once(actor: MemoryActor) -> dict:
    job_id = uuid.uuid4().hex
    began = time.perf_counter()
    actor.forget_start(job_id, {"selector": {"text": X}, "mode": "exact", "who": {"key": "bench"}})
    while (job := actor.forget_status(job_id))["status"] not in ("done", "failed"):
        time.sleep(0.02)
    seconds = time.perf_counter() - began
    if job["status"] != "done":
        raise RuntimeError(f"forget failed: {job['error']}")
    report = job["report"]
    return {"seconds": round(seconds, 2), "exact": job["exact"], "forgotten": job["forgotten"],
            "replayed_entries": report["replayed_entries"], "replayed_from": report["replayed_from"],
            "bytes_written": report["bytes_written"], "objects_deleted": len(report["objects_deleted"]),
            "log_segments_written": report["archive"]["segments_written"],
            "log_segments_kept": report["archive"]["segments_kept"]}


def checkpoint_floor(actor: MemoryActor) -> dict:
    with actor._ckpt_lock:
        began = time.perf_counter()
        info = actor._auto_checkpoint()
    return {"seconds": round(time.perf_counter() - began, 3), "bytes": info["size"]}


def run_case(storage, n: int, x_at: float) -> dict:
    actor, learn_seconds = build(storage, n, x_at)
    before = surprise(actor, X)
    job = forget_once(actor)
    never = [surprise(actor, t) for t in NEVER_SEEN]
    archive = storage.metadata.archive_segments(actor._qname)
    return {"observations": n + 1, "x_at": x_at, "forget": job,
            "peer_learn_everything_again_seconds": round(learn_seconds, 2),
            "floor_one_checkpoint": checkpoint_floor(actor),
            # after the job the whole log is archived: its bytes per observation
            "history_bytes_per_observation": round(sum(s["size"] for s in archive) / (n + 1), 1),
            "surprise_of_x": {"before": round(before, 4), "after": round(surprise(actor, X), 4),
                              "never_seen_min": round(min(never), 4), "never_seen_max": round(max(never), 4)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--positions", type=float, nargs="+", default=[0.5],
                        help="where X is in the stream, as a fraction (0.5: the middle)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {"what": "exact forget of one observation (hash encoder, default config, batches of 64)",
              "machine": {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
              "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        with open_storage(StorageSettings(data_dir=Path(tmp) / "data")) as storage:
            for n in args.sizes:
                for x_at in args.positions:
                    case = run_case(storage, n, x_at)
                    print(json.dumps(case), flush=True)
                    report["cases"].append(case)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
