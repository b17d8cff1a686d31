"""SPEC 6.1, session 2: restart the WHOLE server; knowledge and weight_hash survive.

Runs `neural-memory serve` as a subprocess (its own local Ray, embedded Valkey and checkpoints
in a tmp data dir, auth on), teaches it, stops it with SIGTERM, starts it again on the same
data dir and asks again.
"""

from __future__ import annotations

import httpx
import pytest

from serve.ports import free_port
from tests.serve.helpers import ok
from tests.serve.server_process import Server

KEY = "restart-test-key-0001"
GROKKING = ("Grokking is when a model suddenly generalizes after extensive overfitting. "
            "It was discovered by OpenAI in 2022 and shows delayed generalization.")


@pytest.mark.slow
def test_6_1_knowledge_and_weight_hash_survive_a_full_restart(tmp_path):
    data_dir, log, port = tmp_path / "data", tmp_path / "serve.log", free_port()
    headers = {"Authorization": f"Bearer {KEY}"}
    # The separate Encoder deployment here (the gateway fixture covers the default,
    # in-gateway encoding), so both places text can be encoded are exercised end to end.
    env = {"NMEM_API_KEYS": f"{KEY}:acme", "NMEM_ENCODE_IN": "deployment"}
    server = Server(data_dir, port, log, env)
    # Held open across the stop, as the Python client, the LangGraph store and the MCP proxy
    # hold theirs: the stopped server's side of it once kept the port for a minute.
    idle = httpx.Client(base_url=server.url, headers=headers, timeout=120)
    try:
        server.wait_ready()
        assert "auth: ON" in log.read_text()
        api = idle
        ok(api.post("/v1/memories", json={"name": "ml"}), 201)
        ok(api.post("/v1/memories/ml/observe", json={"context": GROKKING}))
        before = ok(api.get("/v1/memories/ml/stats"))
        first = ok(api.post("/v1/memories/ml/surprise", json={"input": "Explain grokking"}))
        assert server.stop() == 0, log.read_text()[-4000:]
    finally:
        server.stop()

    server = Server(data_dir, port, log, env)
    try:
        server.wait_ready()
        assert "waiting for the system to release" not in log.read_text()  # the port was free at once
        idle.close()
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


@pytest.mark.slow
def test_a_stop_signal_to_the_whole_process_group_leaves_nothing_running(tmp_path):
    """`kill -TERM -<pgid>` (a service manager, `timeout`) stops Ray's own processes and the
    embedded Valkey with the server: the server used to wait 60 s on Ray, abort, and leave the
    Valkey its watchdog had restarted running with no parent. Now it gives up on Ray after a
    deadline, closes storage and exits: nothing of its session is left."""
    import os
    import signal
    import time

    from tests.serve.server_process import session_processes

    data_dir, log, port = tmp_path / "data", tmp_path / "serve.log", free_port()
    server = Server(data_dir, port, log)
    session = server.process.pid  # started in a session of its own (start_new_session)
    try:
        server.wait_ready()
        ok(httpx.post(f"{server.url}/v1/memories", json={"name": "m", "config": {"encoder": "hash"}}), 201)
        os.killpg(server.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            server.process.poll()  # reaps the server once it exits (else it stays listed, a zombie)
            if not list(session_processes(session)):
                break
            time.sleep(1)
        left = [(p.name, (p / "cmdline").read_bytes()[:80]) for p in session_processes(session)]
        assert left == [], f"{left}\n{log.read_text()[-3000:]}"
    finally:
        server.stop()
        for entry in session_processes(session):  # what a failure left
            os.kill(int(entry.name), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_starting_shuts_down_cleanly(tmp_path, stop):
    """Ctrl-C (or SIGTERM) during start-up, before the banner: once a KeyboardInterrupt traceback
    from inside Ray and exit -2 (SIGTERM: the process ended on the spot). Now the same clean
    shutdown as a stop while serving: exit 130, nothing of the session left running."""
    import os
    import signal
    import time

    from tests.serve.server_process import session_processes

    data_dir, log, port = tmp_path / "data", tmp_path / "serve.log", free_port()
    server = Server(data_dir, port, log)
    session = server.process.pid
    try:
        deadline = time.monotonic() + 120
        while "Started Serve" not in log.read_text() and server.process.poll() is None \
                and time.monotonic() < deadline:  # Ray is up, the app is being deployed
            time.sleep(0.05)
        assert "Ctrl-C to stop" not in log.read_text(), "started before the stop could be sent"
        server.process.send_signal(getattr(signal, stop))
        assert server.process.wait(120) == 130, log.read_text()[-3000:]
        text = log.read_text()
        assert "stopped while starting" in text and "Traceback" not in text, text[-3000:]
        deadline = time.monotonic() + 60
        while list(session_processes(session)) and time.monotonic() < deadline:
            time.sleep(1)
        assert list(session_processes(session)) == [], text[-3000:]
    finally:
        server.stop()
        for entry in session_processes(session):
            os.kill(int(entry.name), signal.SIGKILL)
