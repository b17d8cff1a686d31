"""The seed author's 16 experiments (tests/data/seed_suite), default config, MiniLM.

Thresholds come from the JSON files' `expected` fields; see `bench.seed_suite` for how each
behaviour is read. Wall-clock checks are reported here, asserted only by the benchmark.
"""

import pytest

from bench.seed_suite import (run_capacity, run_generalization, run_learning,
                              run_retention)
from memory import MemoryConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seed_results(emb, corpus):
    config = MemoryConfig()
    results = run_learning(config, emb) + run_retention(config, emb) + run_generalization(config, emb)
    results += run_capacity(config, emb, novel=list(corpus[-200:]), fill=list(corpus[:400]))
    return {r.id: r for r in results}


def test_all_sixteen_experiments_are_run(seed_results):
    assert len(seed_results) == 16


@pytest.mark.parametrize("test_id", [
    "repeat_exact", "semantic_variation", "domain_separation", "incremental_learning",
    "immediate_recall", "interference_resistance", "interleaved_domains", "consolidation_benefit",
    "paraphrase_recognition", "concept_transfer", "abstraction_learning", "negative_transfer",
    "scaling_test", "saturation_detection", "recovery_after_consolidation", "dimension_vs_capacity",
])
def test_seed_experiment(seed_results, test_id, record_property):
    result = seed_results[test_id]
    for check in result.checks:
        record_property(check.name, check.detail)
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok and not c.timing]
    assert result.checks and not failed, failed
