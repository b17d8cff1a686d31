"""The package boundaries hold: serve -> cluster -> actors -> {memory, storage}.

`lint-imports` (import-linter, configured in pyproject.toml) checks the packages; it analyses
packages only, so the shared kernel's rule (the root modules `errors` and `contract` import
nothing of ours) is checked here from their source.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"serve", "cluster", "actors", "memory", "storage"}
KERNEL = {"errors", "contract"}


def test_import_linter_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([lint, "--no-cache", "pyproject.toml"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and "0 broken" in result.stdout


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_shared_kernel_imports_nothing_of_ours():
    for module in KERNEL:
        ours = _imported(REPO / f"{module}.py") & (PACKAGES | KERNEL - {module})
        assert ours <= {"errors"}, f"{module}.py imports {ours}; the kernel may import only errors"
    assert not _imported(REPO / "errors.py") & (PACKAGES | KERNEL)
