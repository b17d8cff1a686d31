"""Benchmarks: each writes its figures to bench/results/ (see `write_results`)."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, results: dict) -> None:
    """`results` as indented JSON at `out` (its folder made if needed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
