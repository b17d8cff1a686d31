"""Which code this process runs: one id over the sources that supervisors and memory actors run.

The supervisor and memory actors are detached: they outlive the gateway that started them, so
a new version deployed onto a running Ray cluster (`--ray-address`, KubeRay's in-place Serve
update) would otherwise find and call the previous version's processes, whose methods and
arguments differ. Each reports `CODE_ID`; the control plane replaces a supervisor of other
code, and the supervisor stops adopted memory actors of other code (their WAL holds every
acknowledged write, so the memory starts again on this code with nothing lost).

The id is a digest of the source files, not a version number, so no release can forget to
bump it; identical deployments (one image, one wheel) get the same id on every node.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["CODE_ID", "code_id"]

# Everything a supervisor or memory actor executes of ours (serve/ runs in the gateway only).
_PACKAGES = ("actors", "cluster", "memory", "storage")
_MODULES = ("errors.py", "contract.py")


def code_id(root: Path) -> str:
    """A short digest of the packages' sources under `root` (the directory holding actors/)."""
    files = sorted(path for package in _PACKAGES for path in (root / package).rglob("*.py"))
    files += [root / module for module in _MODULES if (root / module).is_file()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


CODE_ID = code_id(Path(__file__).resolve().parent.parent)
