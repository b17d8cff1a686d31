"""Approximate forgetting: what a memory can do about some records when their history is gone.

Exact forgetting replays the log without the forgotten observations (actors/forget.py); this is
the fallback when the log no longer reaches back far enough. It is *approximate*, and says so:

1. the episodic records matching the selection become tombstones (`EpisodicStore.erase`: the
   chunks holding them get new contents, the text bytes are gone) and leave the hot set;
2. the network is pushed away from them: for each forgotten key k, a normalised LMS step on the
   output layer towards M(k) = 0, what a memory that never saw k answers (its output layer
   starts at zero, so everything is fully surprising). With learning rate 1 one step zeroes
   M(k) exactly; the change is the smallest that does (ΔW = −M(k) hᵀ / (‖h‖² + 1)), so its
   norm is bounded by ‖M(k)‖ ≤ ~1 per key, and it leaks into another key k' only through
   h·h' (the first layer's sin features are near-orthogonal for unrelated texts). A few passes
   settle keys that interact;
3. momentum (past surprise, which still carries their gradients) is cleared and the EWC anchor,
   if any, moves to the new weights (else consolidation would pull them back).

It cannot undo what the forgotten observations did to the rest of the network (how later
updates were scaled, which patterns were reinforced): only a replay can.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from memory.titans import forward

PASSES = 3  # rounds over the forgotten keys; each key's output is zeroed in every round

Match = Callable[[str, int, str], bool]  # (text, step, domain) -> forget this record?


def matching_records(memory, match: Match) -> list[int]:
    """Ids of the live records whose (text, step, domain) `match` selects."""
    names = memory.domain_names
    return [record for record, text, step, domain in memory.store.records()
            if match(text, step, names[domain] if domain < len(names) else "")]


def forget_approximately(memory, match: Match) -> dict:
    """Erase the records `match` selects and push the network away from them (see the module
    doc); returns how many, with the fused surprise of each forgotten text before and after."""
    records = matching_records(memory, match)
    if not records:
        return {"records": 0, "surprise_before": [], "surprise_after": []}
    vectors = memory.store.vectors(records)
    keys = memory._keys(vectors)
    before = [memory._score(key)[0] for key in keys]
    domains = [memory.domain_names[d] for d in _domains(memory, records)]
    memory.store.erase(records)
    _leave_hot_set(memory.hot, set(records))
    with memory.changing_weights():
        _zero_outputs(memory.net, keys)
        if memory.net.fisher:
            memory.net.anchor = [p.clone() for p in memory.net.params]
            memory.ewc_generation += 1  # a new anchor: a new immutable EWC part
    for domain in domains:
        if domain and memory.domain_counts.get(domain, 0) > 0:
            memory.domain_counts[domain] -= 1
            if memory.domain_counts[domain] <= 0:
                del memory.domain_counts[domain]
    after = [memory._score(key)[0] for key in keys]
    return {"records": len(records), "surprise_before": before, "surprise_after": after}


def _domains(memory, records: list[int]) -> list[int]:
    wanted = set(records)
    return [domain for record, _text, _step, domain in memory.store.records() if record in wanted]


def _leave_hot_set(hot, gone: set[int]) -> None:
    """Drop erased records from the hot set's exemplars; a pattern left with none leaves it."""
    for slot in reversed(range(hot.used)):
        row = hot.members[slot]
        kept = [int(r) for r in row if r >= 0 and int(r) not in gone]
        if len(kept) == int((row >= 0).sum()):
            continue
        row[:] = -1
        row[: len(kept)] = kept
        if not kept:
            hot._remove(slot)


def _zero_outputs(net, keys: torch.Tensor) -> None:
    """Normalised LMS steps on the output layer towards M(k) = 0 for every key (see module doc)."""
    params = [p.clone() for p in net.params]
    weight, bias = params[-2], params[-1]
    for _ in range(PASSES):
        for key in keys:
            out, cache = forward(params, key[None])
            hidden = cache[-1][0][0]  # the output layer's input
            scale = 1.0 / (float(hidden @ hidden) + 1.0)
            weight.addr_(out[0], hidden, alpha=-scale)
            bias.add_(out[0], alpha=-scale)
    net.params = params  # atomic swap, as every update does
    net.momentum = [torch.zeros_like(m) for m in net.momentum]


def texts_matcher(texts: list[str]) -> Match:
    wanted = set(texts)
    return lambda text, _step, _domain: text in wanted


def summary(values: list[float]) -> dict:
    """min / mean / max of a list of surprises (empty: zeros)."""
    if not values:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "mean": float(array.mean()), "max": float(array.max())}
