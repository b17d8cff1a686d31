"""CPU time per process role, from /proc: where a request's CPU goes on this machine.

    before = cpu_by_role(); ...run load...; after = cpu_by_role()
    per_request_ms(before, after, requests)  ->  {"gateway": 9.8, "memory actor": 4.1, ...}

Roles are recognised by process title (Ray names its workers `ray::<Class>...`); the bench's own
process is the "bench client". Linux only (reads /proc/<pid>/stat and cmdline).
"""

from __future__ import annotations

import os
from pathlib import Path

# (role, what its command line contains), first match wins.
ROLES = [
    ("serve proxy", "ray::ProxyActor"),
    ("haproxy", "/haproxy "),  # `--ingress haproxy`: it takes the Python proxy's place
    ("gateway", "ServeReplica:neural-memory:Gateway"),
    ("encoder deployment", "ServeReplica:neural-memory:Encoder"),
    ("serve controller", "ray::ServeController"),
    ("memory actor", "ray::MemoryActor"),
    ("supervisor", "ray::Supervisor"),
    ("valkey", "valkey-server"),
    ("raylet", "raylet"),
    ("gcs", "gcs_server"),
    ("other ray", "ray::"),
]
_TICK = os.sysconf("SC_CLK_TCK")


def _role(pid: int, cmdline: str) -> str | None:
    if pid == os.getpid():
        return "bench client"
    return next((role for role, mark in ROLES if mark in cmdline), None)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) used so far, summed per role, over the live processes."""
    totals: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        role = _role(int(entry.name), cmdline)
        if role is not None:
            totals[role] = totals.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return totals


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per request, per role, between two snapshots (largest first)."""
    if requests <= 0:
        return {}
    used = {role: (after.get(role, 0.0) - before.get(role, 0.0)) * 1000 / requests
            for role in set(before) | set(after)}
    shown = {role: round(ms, 2) for role, ms in used.items() if ms >= 0.05}
    shown["total"] = round(sum(shown.values()), 2)
    return dict(sorted(shown.items(), key=lambda kv: -kv[1]))
