"""Storage of per-user forks around a `forks: true` forget on their base (issue 14's byte
sharing, after an erasure).

    python -m bench.fork_forget_bench [--forks 200] [--json bench/results/fork_forget.json]

A base memory (`hash` encoder: the bytes, not the encoder, are measured) learns 1,000 facts and
one private text X, and is tagged; 8 REST clients fork it once per user from the tag, and each
fork observes one fact of its own. Then one exact forget of X with `forks: true` runs until it
is done on every fork. Reported: the checkpoint store's bytes before and after the forget (chunks
it no longer names stay until garbage collection, so the difference is what the forget wrote),
its wall time, and how many forks it found holding X and rebuilt. The peer, in the same run:
the size of one whole state (what each rebuilt fork would add if it wrote its own checkpoint).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.local_server import local_server
from neural_memory import Client

TENANT, NAMESPACE = "bench", "nmem-fork-forget-bench"
X = "Erin's bank PIN is 4071 and her card ends in 9921"


def stored_bytes(data_dir: str) -> int:
    """Bytes under the local checkpoint store (`du -sb`: what the disk holds)."""
    out = subprocess.run(["du", "-sb", str(Path(data_dir) / "checkpoints")], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with local_server(tenant=TENANT, namespace=NAMESPACE, gateway={"preload_encoders": "hash"}, cluster={}) \
            as (url, key, storage):
        nm = Client(url, key, timeout=300)
        nm.create_memory("base", {"encoder": "hash"})
        facts = [f"fact {i}: sensor {i % 97} in hall {i % 13} read {i * 7919 % 10007} units" for i in range(1000)]
        for i in range(0, 1000, 250):
            nm.observe("base", facts[i:i + 250] + ([X] if i == 500 else []))
        nm.checkpoint("base", "v1")

        def user(i: int) -> None:
            with Client(url, key, timeout=300) as c:
                c.fork("base", f"user-{i}", source_tag="v1")
                c.observe(f"user-{i}", f"user {i} prefers tea at {i % 24}:00")

        began = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(user, range(args.forks)))
        forked_s = time.perf_counter() - began
        (tag,) = [c for c in nm.list_checkpoints("base").checkpoints if c.tag == "v1"]
        before = stored_bytes(storage["data_dir"])
        began = time.perf_counter()
        job = nm.wait_for_forget("base", nm.forget("base", text=X, forks=True), timeout=3600)
        forget_s = time.perf_counter() - began
        after = stored_bytes(storage["data_dir"])
        forks = job.report["forks"]
        result = {
            "forks": args.forks, "forked_s": round(forked_s, 1), "forget_status": job.status,
            "forget_s": round(forget_s, 1), "forks_holding_x": sum(1 for f in forks if f.get("contains")),
            "forks_done": sum(1 for f in forks if f.get("status") == "done"),
            "store_bytes_before": before, "store_bytes_after": after,
            "added_per_fork_bytes": round((after - before) / args.forks),
            "peer_full_state_mb": tag.size_mb,
        }
        nm.close()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
