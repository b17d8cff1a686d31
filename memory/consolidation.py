"""Consolidation ("sleep"): compress the hot set, replay episodes into the weights, anchor them.

1. Hot-set compression: merge patterns whose centroids are near-duplicates; if the hot set is
   nearly full, keep merging the closest pairs down to a lower watermark. Only pattern
   statistics merge: every record stays in the episodic store.
2. Replay: the newest exemplars of the most recently seen patterns are fed through the Titans
   update again, so what the store holds verbatim is written into the network.
3. Online EWC (Schwarz et al. 2018): a diagonal Fisher estimated on the replayed keys, decayed
   into the running estimate, anchored at the consolidated weights. Later updates are pulled
   towards the anchor where the Fisher says the weights matter (see `TitansMemory.update`).
"""

from __future__ import annotations

import torch

from memory.config import MemoryConfig
from memory.episodes import EpisodicStore
from memory.patterns import Centroids, HotSet
from memory.titans import TitansMemory

FULL = 0.9  # above this fill, consolidation compresses the hot set ...
TARGET = 0.75  # ... down to this fill


def replay_ids(hot: HotSet, limit: int) -> list[int]:
    """Up to `limit` record ids: the exemplars of the most recently seen patterns, newest first."""
    out: list[int] = []
    for slot in hot.recent():
        out += hot.member_ids(slot)[: limit - len(out)]
        if len(out) == limit:
            break
    return out


def consolidate(net: TitansMemory, hot: HotSet, store: EpisodicStore, centroids: Centroids,
                config: MemoryConfig) -> dict:
    before = hot.used
    fill = hot.used / hot.capacity
    merged = hot.merge_similar(config.merge_similarity, centroids, TARGET if fill > FULL else None)
    ids = replay_ids(hot, config.replay_items)
    if not ids:
        return {"patterns_merged": merged, "memory_compressed_by": 0.0, "stability_score": 1.0}
    keys = torch.from_numpy(store.vectors(ids)).to(net.dtype)
    keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for _ in range(config.replay_passes):
        for start in range(0, keys.shape[0], config.chunk_size):
            net.update(keys[start : start + config.chunk_size])
    new_fisher = net.diagonal_fisher(keys)
    if net.fisher:
        net.fisher = [config.fisher_decay * old + new for old, new in zip(net.fisher, new_fisher)]
    else:
        net.fisher = new_fisher
    net.anchor = [p.clone() for p in net.params]
    stability = float((1.0 - net.neural_surprise(keys)).mean())
    return {"patterns_merged": merged,
            "memory_compressed_by": 100.0 * merged / before if before else 0.0,
            "stability_score": stability}
