"""`neural-memory serve` refuses what it cannot do before it starts anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def test_a_port_already_in_use_is_named_at_once(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMEM_") and k != "RAY_ADDRESS"}
    cli = Path(sys.executable).with_name("neural-memory")
    try:
        done = subprocess.run([str(cli), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                              capture_output=True, text=True, timeout=120, env=env)
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr
    assert f"port {port} on 127.0.0.1 is not free" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # nothing started: no Valkey, no Ray
