"""A real `neural-memory serve` process for tests that need the whole server: its own local Ray,
embedded Valkey and checkpoints in a tmp data dir, on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def session_processes(session: int) -> Iterator[Path]:
    """/proc/<pid> of every process in `session` (a server's own, see `Server`), skipping any
    that is gone or unreadable meanwhile."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == session:
                yield entry
        except OSError:
            continue


class Server:
    """One `neural-memory serve` process; output goes to a log file for failure messages."""

    def __init__(self, data_dir: Path, port: int, log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        env.pop("RAY_ADDRESS", None)  # a fresh local Ray, never the test session's
        cli = Path(sys.executable).with_name("neural-memory")
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(cli), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd,
            )

    def wait_ready(self, timeout: float = 420.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()[-4000:]}")
            try:
                healthy = httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
                if healthy and "auth:" in self.log.read_text():  # the CLI's banner is out
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log.read_text()[-4000:]}")

    def stop(self, timeout: float = 120.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its children
                self.process.wait(30)
        return self.process.returncode
