"""Two Ray nodes on this machine: memories land on both; losing one loses no acknowledged write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_node_loss_loses_no_acknowledged_observation(valkey_url, s3_server, tmp_path):
    args = {"redis_url": valkey_url, "s3": asdict(s3_server), "prefix": f"mn{uuid.uuid4().hex[:8]}",
            "data_dir": str(tmp_path / "nmem")}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.cluster.multinode_driver", json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1][len("RESULT "):])

    nodes = set(result["placement"].values())
    assert nodes == {result["head"], result["worker"]}, "memories should be spread over both nodes"
    on_lost_node = [n for n, node in result["placement"].items() if node == result["worker"]]
    assert on_lost_node
    for name, seen in result["after"].items():
        assert seen["acked"] == list(range(1, 13)), name
        assert seen["total"] == 12, name
        assert seen["hash"] == seen["expected"], name
