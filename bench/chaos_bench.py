"""Chaos figures: for each fault, how long until writes succeed again, and acknowledged writes lost.

    python -m bench.chaos_bench [--out bench/results/chaos.json] [--faults valkey,s3,...]

Runs the chaos suite's machinery (tests/chaos/harness.py: a real `neural-memory serve` on a
restartable SeaweedFS S3, eight writers on four memories of two tenants) and SIGKILLs, in turn,
the embedded Valkey, S3 during a checkpoint, the supervisor, a gateway replica, every memory
actor and the whole server (restarted by the harness: nothing else would). For each fault it
records the seconds from the kill until the first write succeeds again and until every memory
has taken a write again, and then checks every acknowledged write (lost must be 0) and every
memory's weight_hash against a twin that replays its log. The load average is recorded too:
on a shared 2-core machine it moves the timings a lot.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench import write_results
from tests.chaos.harness import FAULTS, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/chaos.json"))
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated subset of {','.join(FAULTS)}")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    faults = tuple(f for f in args.faults.split(",") if f)
    load_before = os.getloadavg()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nmem-chaos-") as root:
        records = run_all(Path(root), faults)
    results = {
        "command": "python -m bench.chaos_bench" + (f" --faults {args.faults}" if args.faults != ",".join(FAULTS) else ""),
        "faults": records,
        "acknowledged_writes_lost": sum(r["lost"] for r in records),
        "memories_not_matching_their_twin": sorted({m for r in records for m in r["mismatched"]}),
        "seconds_total": round(time.monotonic() - began, 1),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    write_results(args.out, results)
    for r in records:
        print(f"{r['fault']:<11} writes ok after {r['writes_ok_after_s']:>6.2f} s, every memory after "
              f"{r['every_memory_ok_after_s']:>6.2f} s; acknowledged {r['acknowledged']}, lost {r['lost']}")
    print(f"wrote {args.out}")
    return 0 if results["acknowledged_writes_lost"] == 0 and not results["memories_not_matching_their_twin"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
