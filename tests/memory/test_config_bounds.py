"""Every MemoryConfig field is bounded, and every value inside the bounds keeps the maths finite.

A config is the one thing a caller hands the model that lives as long as the memory: a value
that divides by zero or overflows on the 2nd observe would poison every later call (and the
write-ahead log's replay). So: each numeric field has a range in `config.BOUNDS`, values just
outside are refused naming the field, and a memory built at either end of each range learns,
consolidates and answers with finite numbers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import pytest

from errors import InvalidInput
from memory import MemoryConfig, NeuralMemory
from memory.config import BOUNDS, STRING_FIELDS

# Small and fast; each case overrides one field.
BASE = {"encoder": "hash", "memory_width": 32, "value_dim": 16, "pattern_slots": 64,
        "replay_items": 64, "chunk_size": 8}
# Fields whose extremes only cost memory or time (the joint cost limits cover them), not
# numerical safety; building them at their maximum would allocate gigabytes.
SIZE_FIELDS = {"dim", "memory_depth", "memory_width", "value_dim", "pattern_slots",
               "exemplars_per_slot", "replay_items", "replay_passes"}


def test_every_field_is_bounded():
    fields = {f.name for f in dataclasses.fields(MemoryConfig)}
    assert fields - set(BOUNDS) - set(STRING_FIELDS) == set(), "add the new field to config.BOUNDS"


def _extremes():
    for name, bound in BOUNDS.items():
        if name in SIZE_FIELDS:
            continue
        low = bound.low + (1e-6 if bound.low_open else 0)
        for value in (low, bound.high):
            yield pytest.param(name, int(value) if bound.kind is int else float(value),
                               id=f"{name}={value:g}")


@pytest.mark.parametrize(("name", "value"), list(_extremes()))
def test_values_at_the_bounds_keep_the_maths_finite(name, value):
    memory = NeuralMemory(MemoryConfig.from_dict({**BASE, name: value}))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 384)).astype(np.float32)
    vectors[20:] = vectors[:20] + 0.01 * vectors[20:]  # near-duplicates: reinforce and merge
    for start in (0, 20, 30):  # a batch, then single-chunk and cross-chunk writes
        result = memory.observe_vectors(vectors[start:start + 10], [f"t{i}" for i in range(10)])
        assert all(math.isfinite(s) for s in result["surprises"]), result
        assert math.isfinite(result["weight_delta"])
    memory.consolidate()
    memory.observe_vectors(vectors[:1], ["after consolidation"])
    assert all(bool(np.isfinite(p.numpy()).all()) for p in memory.net.params)
    assert math.isfinite(memory.surprise_vector(vectors[5], "probe")["score"])
    answer = memory.infer_vector(vectors[5], top_k=3)
    assert math.isfinite(answer["confidence"])


def _outside():
    for name, bound in BOUNDS.items():
        below = bound.low if bound.low_open else bound.low - 1
        yield pytest.param(name, below, id=f"{name}-below")
        yield pytest.param(name, bound.high * 2 + 1, id=f"{name}-above")
        yield pytest.param(name, int("9" * 400), id=f"{name}-beyond-float")  # a float() of it overflows
        yield pytest.param(name, float("nan"), id=f"{name}-nan")
        yield pytest.param(name, True, id=f"{name}-bool")
        if bound.kind is int:
            yield pytest.param(name, 1.5, id=f"{name}-fraction")


@pytest.mark.parametrize(("name", "value"), list(_outside()))
def test_values_outside_the_bounds_are_refused_naming_the_field(name, value):
    with pytest.raises(InvalidInput, match=rf"invalid memory config: .*\b{name} must be"):
        MemoryConfig.from_dict({**BASE, name: value})


@pytest.mark.parametrize(("config", "what"), [
    ({"replay_items": 8192, "replay_passes": 2}, "replay_items x replay_passes"),
    ({"pattern_slots": 65536, "exemplars_per_slot": 8}, "pattern_slots x exemplars_per_slot"),
    ({"memory_width": 16384, "memory_depth": 8}, "memory too large"),
])
def test_joint_cost_limits(config, what):
    with pytest.raises(InvalidInput, match=what):
        MemoryConfig.from_dict(config)


def test_the_smallest_lr_and_temperature_stay_finite_with_the_largest_overrides():
    """A subnormal lr was accepted, and an observe's learning_rate of 2 over it made the step
    infinite; a temperature of 1e-40 overflowed the attention scores. Both now stay finite."""
    with pytest.raises(InvalidInput, match="lr must be"):
        MemoryConfig.from_dict({**BASE, "lr": 1e-309})
    memory = NeuralMemory(MemoryConfig.from_dict({**BASE, "lr": BOUNDS["lr"].low}))
    vectors = np.random.default_rng(0).normal(size=(4, 384)).astype(np.float32)
    result = memory.observe_vectors(vectors, [f"t{i}" for i in range(4)], learning_rate=2.0)
    assert math.isfinite(result["weight_delta"]) and all(math.isfinite(s) for s in result["surprises"])
    for temperature in (1e-40, 5e-324, 1e-3):
        answer = memory.infer_vector(vectors[0], top_k=4, temperature=temperature)
        weights = [a["weight"] for a in answer["attention_weights"]]
        assert all(math.isfinite(w) and 0 <= w <= 1 for w in weights) and abs(sum(weights) - 1) < 1e-6, weights
    assert math.isfinite(memory.surprise_vector(vectors[1], "probe")["score"])


def test_a_step_that_overflows_is_refused_and_the_weights_stay():
    """Whatever makes the step overflow (here an output layer scaled to 1e30), the write is
    refused with a message saying what to change, and no non-finite weight is ever stored
    (before, NaN weights stayed for good and every answer carried NaN as JSON null)."""
    memory = NeuralMemory(MemoryConfig.from_dict(BASE))
    vectors = np.random.default_rng(1).normal(size=(3, 384)).astype(np.float32)
    memory.observe_vectors(vectors[:2], ["t0", "t1"])
    net = memory.net
    net.params = [p * 1e30 if i == len(net.params) - 2 else p for i, p in enumerate(net.params)]
    before, step = memory.weight_hash, memory.step
    with pytest.raises(InvalidInput, match="diverge.*smaller learning_rate"):
        memory.observe_vectors(vectors[2:], ["t2"])
    assert (memory.weight_hash, memory.step) == (before, step)
    assert all(torch.isfinite(p).all() for p in net.params)


def test_consolidating_a_deep_float32_network_keeps_the_fisher_finite():
    """Deep, fast-learning float32 networks grow large gradients whose squares overflowed
    float32: the Fisher became NaN and every later write was refused as diverging."""
    memory = NeuralMemory(MemoryConfig.from_dict({"encoder": "hash", "memory_width": 16, "memory_depth": 8,
                                                  "lr": 2.0, "momentum": 0.9}))
    memory.observe([f"fact {i}" for i in range(300)])
    memory.consolidate()
    assert all(torch.isfinite(f).all() for f in memory.net.fisher)
    assert memory.observe("a small later fact", learning_rate=1e-3)["step"] == 301


@pytest.mark.parametrize("value", [{"name": "hash"}, ["hash"], 5, None, "", "Hash"])
@pytest.mark.parametrize("name", STRING_FIELDS)
def test_string_fields_refuse_any_other_value_naming_the_field(name, value):
    """JSON can carry a list or an object where a name belongs; that is the caller's mistake (a
    list cannot even be looked up in the table of names), so it is refused like any other."""
    with pytest.raises(InvalidInput, match=rf"invalid memory config: .*\b{name} must be"):
        MemoryConfig.from_dict({**BASE, name: value})
