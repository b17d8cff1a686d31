"""Real sentences for quality measurements: first lines of docstrings from the Python standard
library and the installed packages, extracted with `ast` (no imports).

Parsing every source file takes about a minute, so the result is committed as
`bench/data/docstrings.txt`; `python -m bench.corpus` rebuilds it.
"""

from __future__ import annotations

import ast
import random
import site
import sysconfig
from functools import lru_cache
from pathlib import Path

CORPUS_FILE = Path(__file__).with_name("data") / "docstrings.txt"
SIZE = 16_000


def _first_lines(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and doc.strip():
                yield " ".join(doc.strip().splitlines()[0].split())


def build(size: int = SIZE) -> list[str]:
    """Distinct first lines (25-200 chars, at least 4 words), shuffled with a fixed seed."""
    roots = [Path(sysconfig.get_paths()["stdlib"])] + [Path(p) for p in site.getsitepackages()]
    seen: dict[str, None] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for line in _first_lines(path):
                if 25 <= len(line) <= 200 and len(line.split()) >= 4 and line.isprintable():
                    seen.setdefault(line, None)
            if len(seen) >= 2 * size:  # plenty to sample from; the rest would only cost time
                break
    sentences = sorted(seen)
    random.Random(1234).shuffle(sentences)
    return sentences[:size]


@lru_cache(maxsize=1)
def docstring_sentences() -> tuple[str, ...]:
    return tuple(CORPUS_FILE.read_text(encoding="utf-8").splitlines())


if __name__ == "__main__":
    CORPUS_FILE.parent.mkdir(exist_ok=True)
    lines = build()
    CORPUS_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} sentences to {CORPUS_FILE}")
