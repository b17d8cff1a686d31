"""The repository stands on its own: nothing in it reads the team's reference shelf.

The team's `shared` folder exists beside our own checkouts only; users who clone the project
never have it, so any path into it from code, tests, benchmarks or set-up would break a clean
clone. This scans every file git tracks (plus untracked, not-ignored ones) for a reference to it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The shelf by relative or absolute path, or a path built by joining its name onto the repo's
# parent (how the old readers did it). Spelled in pieces here so this file does not name it.
SHELF = "shared"
REFERENCE = re.compile(rf"""\.\./{SHELF}\b|/work/{SHELF}\b|/\s*["']{SHELF}["']""")


def _repo_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True, text=True).stdout.split("\n")
    return [REPO / name for name in listed if name and (REPO / name).is_file()]


def test_no_file_refers_to_the_shared_shelf():
    offenders = []
    for path in _repo_files():
        if path == Path(__file__):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary data
        offenders += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if REFERENCE.search(line)]
    assert not offenders, f"files refer to the {SHELF} shelf (users never have it): {offenders}"


def test_the_pattern_catches_the_old_readers():
    assert REFERENCE.search(f'SHARED = REPO.parent / "{SHELF}"')
    assert REFERENCE.search(f"suite in ../{SHELF}/acceptance")
    assert not REFERENCE.search("shared by all replicas")
