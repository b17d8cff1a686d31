"""The chaos suite: with eight writers running, SIGKILL in turn the embedded Valkey, S3 (during a
checkpoint), the supervisor, a gateway replica, the memory actors and the whole server; after
each, every acknowledged write is there and every memory's weights equal a twin's that replays
its log. Timings are measured by bench/chaos_bench.py (same machinery), not asserted here."""

from __future__ import annotations

import pytest

from tests.chaos.harness import FAULTS, run_all


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_no_acknowledged_write_is_lost_under_any_single_fault(tmp_path):
    records = run_all(tmp_path)
    assert [r["fault"] for r in records] == list(FAULTS)
    for record in records:
        assert record["acknowledged"] > 0, record
        assert record["lost"] == 0, record
        assert record["mismatched"] == [], record
