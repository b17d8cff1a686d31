"""Three Ray nodes on this machine: memories land on every node; losing a worker while clients
write costs them a pause, never an error or an acknowledged write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.cluster.multinode_driver import WRITES

REPO = Path(__file__).resolve().parents[2]


def run_driver(valkey_url: str, s3_server, data_dir: Path) -> dict:
    args = {"redis_url": valkey_url, "s3": asdict(s3_server), "prefix": f"mn{uuid.uuid4().hex[:8]}",
            "data_dir": str(data_dir)}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.cluster.multinode_driver", json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_losing_a_node_while_clients_write_loses_no_acknowledged_observation(valkey_url, s3_server, tmp_path):
    result = run_driver(valkey_url, s3_server, tmp_path / "nmem")
    assert len(set(result["placement"].values())) >= 2, "memories should be spread over the nodes"
    assert result["removed"] in result["workers"] and result["affected"]  # the lost node held some
    for name, seen in result["after"].items():
        assert seen["errors"] == [], (name, seen["errors"])  # a pause, not an error
        assert seen["acked"] == list(range(1, WRITES + 1)), name
        assert seen["total"] == WRITES, name
        assert seen["hash"] == seen["expected"], name  # exactly the acknowledged writes, in order
    for name in result["affected"]:
        assert result["after"][name]["answered_again_s"] is not None, name
