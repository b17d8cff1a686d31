"""The README's examples run as written against a live gateway, so the docs cannot drift.

Every ```python block, and every ```bash block made only of `neural-memory ...` commands (and
`printf ... > file` lines that write their input files), is run in README order in one temp directory (later blocks use what earlier ones made), as its
own process, with the documented defaults pointed at the test servers: the URL
http://127.0.0.1:8000 becomes the session gateway's (also as NMEM_URL), NMEM_API_KEY is a key
of its tenant B (so nothing here meets other tests' memories), and the registry
localhost:5000 becomes the session's docker-registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
DOC_URL = "http://127.0.0.1:8000"
DOC_REGISTRY = "localhost:5000"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# What a reader is told to expect, per block (by a phrase the block contains).
EXPECTED = {
    "nm.create_memory(\"py-notes\")": ["weights now", "as the server said: memory no-such-memory not found"],
    "asyncio.gather": ["[2, 3]"],
    "StateGraph(State)": ["Vegetarian; never eats fish.", "{'text': 'Lives in Lisbon since 2021.'}"],
    "neural-memory pull": ["pulled localhost:", "as py-notes-pulled"],
    "neural-memory import team.md": ["imported 3 items from 2 file(s) into team-notes"],
    "nm.forget(": ["done exact 1", "learn", "'kind': 'text'"],
}


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    blocks = []
    for lang, code in FENCE.findall(text):
        lines = [ln for ln in code.splitlines() if ln.strip()]
        if lang == "python" or (lang == "bash" and lines and any(ln.startswith("neural-memory ") for ln in lines)
                                and all(ln.startswith(("neural-memory ", "printf ")) for ln in lines)):
            blocks.append((lang, code))
    return blocks


def test_the_readme_has_the_examples_this_test_runs():
    blocks = runnable_blocks(README.read_text())
    joined = "\n".join(code for _, code in blocks)
    for phrase in EXPECTED:
        assert phrase in joined, f"README lost the example containing {phrase!r}"
    assert len(blocks) >= 4


def test_readme_examples_run_against_a_live_gateway(gateway, oci_registry, tmp_path):
    from neural_memory import Client

    env = {**os.environ, "NMEM_URL": gateway.base_url, "NMEM_API_KEY": gateway.key_b,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HOME": str(tmp_path)}
    with Client(gateway.base_url, api_key=gateway.key_b) as nm:
        before = {m.name for m in nm.list_memories().memories}
        try:
            for lang, code in runnable_blocks(README.read_text()):
                code = code.replace(DOC_URL, gateway.base_url).replace(DOC_REGISTRY, oci_registry.host)
                command = [sys.executable, "-c", code] if lang == "python" else ["bash", "-ec", code]
                run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                     timeout=300)
                shown = f"README block failed:\n{code}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
                assert run.returncode == 0, shown
                for phrase, outputs in EXPECTED.items():
                    if phrase in code:
                        for expected in outputs:
                            assert expected.replace(DOC_REGISTRY, oci_registry.host) in run.stdout \
                                or expected in run.stdout, shown
            pulled = nm.stats("py-notes-pulled")
            assert pulled.weight_hash == nm.list_checkpoints("py-notes").checkpoints[0].weight_hash
        finally:
            for memory in nm.list_memories().memories:
                if memory.name not in before:
                    nm.delete_memory(memory.name)
