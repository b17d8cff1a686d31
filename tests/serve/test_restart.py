"""SPEC 6.1, session 2: restart the WHOLE server; knowledge and weight_hash survive.

Runs `neural-memory serve` as a subprocess (its own local Ray, embedded Valkey and checkpoints
in a tmp data dir, auth on), teaches it, stops it with SIGTERM, starts it again on the same
data dir and asks again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serve.helpers import ok

KEY = "restart-test-key-0001"
GROKKING = ("Grokking is when a model suddenly generalizes after extensive overfitting. "
            "It was discovered by OpenAI in 2022 and shows delayed generalization.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `neural-memory serve` process; output goes to a log file for failure messages."""

    def __init__(self, data_dir: Path, port: int, log: Path) -> None:
        # The separate Encoder deployment here (the gateway fixture covers the default,
        # in-gateway encoding), so both places text can be encoded are exercised end to end.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NMEM_API_KEYS": f"{KEY}:acme",
               "NMEM_ENCODE_IN": "deployment"}
        env.pop("RAY_ADDRESS", None)  # a fresh local Ray, never the test session's
        cli = Path(sys.executable).with_name("neural-memory")
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(cli), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
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


@pytest.mark.slow
def test_6_1_knowledge_and_weight_hash_survive_a_full_restart(tmp_path):
    data_dir, log, port = tmp_path / "data", tmp_path / "serve.log", _free_port()
    headers = {"Authorization": f"Bearer {KEY}"}
    server = Server(data_dir, port, log)
    try:
        server.wait_ready()
        assert "auth: ON" in log.read_text()
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as api:
            ok(api.post("/v1/memories", json={"name": "ml"}), 201)
            ok(api.post("/v1/memories/ml/observe", json={"context": GROKKING}))
            before = ok(api.get("/v1/memories/ml/stats"))
            first = ok(api.post("/v1/memories/ml/surprise", json={"input": "Explain grokking"}))
        assert server.stop() == 0, log.read_text()[-4000:]
    finally:
        server.stop()

    server = Server(data_dir, port, log)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as api:
            after = ok(api.get("/v1/memories/ml/stats"))
            assert after["weight_hash"] == before["weight_hash"]
            assert after["total_observations"] == before["total_observations"] == 1
            answer = ok(api.post("/v1/memories/ml/infer", json={"prompt": "Explain grokking"}))
            assert "grokking" in answer["response"].lower()
            again = ok(api.post("/v1/memories/ml/surprise", json={"input": "Explain grokking"}))
            assert again["score"] == pytest.approx(first["score"], abs=1e-6)
            assert again["score"] < 0.5
    finally:
        server.stop()
