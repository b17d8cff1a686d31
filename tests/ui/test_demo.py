"""`neural-memory demo` against the real session gateway, run as the installed command."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FELL = re.compile(r"repeated concept's surprise fell (\d+\.\d+) → (\d+\.\d+)")


def demo_command() -> list[str]:
    script = Path(sys.executable).with_name("neural-memory")
    if not script.exists():
        pytest.fail(f"the `neural-memory` command is not installed next to {sys.executable}: "
                    "run `make setup` (pip install -e .)")
    return [str(script), "demo"]


def run_demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*demo_command(), *args], capture_output=True, text=True,
                          timeout=timeout, encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def demo_run(ui_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "surprise.png"
    args = ["--url", ui_server.url, "--out", str(out)]
    if ui_server.api_key:
        args += ["--api-key", ui_server.api_key]
    return run_demo(*args), out


def test_demo_exits_zero_and_tells_all_three_scenarios(demo_run):
    proc, _ = demo_run
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout}\n{proc.stderr}"
    for heading in ("Teaching a new concept", "Pattern recognition",
                    "Checkpoint → experiment → restore → fork", "all claims held"):
        assert heading in proc.stdout
    assert re.search(r"weights changed: [0-9a-f]{6} → [0-9a-f]{6}", proc.stdout)
    assert re.search(r"confidence \d\.\d\d → \d\.\d\d", proc.stdout)


def test_repeated_concept_surprise_falls_by_more_than_90_percent(demo_run):
    proc, _ = demo_run
    match = FELL.search(proc.stdout)
    assert match, f"no surprise line in the demo output:\n{proc.stdout}"
    first, last = float(match.group(1)), float(match.group(2))
    assert first > 0.5, "a concept the memory never saw should be surprising"
    assert (first - last) / first > 0.9, f"surprise only fell {first} → {last}"


def test_demo_writes_a_valid_png(demo_run, artifacts):
    from PIL import Image
    import matplotlib.image as mpimg

    _, out = demo_run
    assert out.exists(), "the demo did not write its PNG"
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 300
    pixels = mpimg.imread(out)
    assert pixels.ndim == 3 and pixels.std() > 0.01, "the PNG is blank"
    shutil.copy(out, artifacts / "demo-surprise.png")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_against_nothing_fails_with_a_clear_message(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    proc = run_demo("--url", url, "--out", str(tmp_path / "x.png"), timeout=120)
    assert proc.returncode != 0
    assert f"demo failed: Unavailable: cannot reach the gateway at {url}" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_demo_with_a_wrong_key_reports_the_servers_message(ui_server, tmp_path):
    if not ui_server.api_key:
        pytest.skip("the session gateway runs with auth off, so no key can be wrong")
    proc = run_demo("--url", ui_server.url, "--api-key", "definitely-not-a-key",
                    "--out", str(tmp_path / "x.png"), timeout=120)
    assert proc.returncode != 0
    assert "demo failed: AuthError:" in proc.stderr
