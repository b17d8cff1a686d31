"""Consolidation ("sleep"): replay episodes into the weights, anchor them, compress the book.

1. Pattern-book compression: merge slots whose centroids are near-duplicates; if the book is
   nearly full, keep merging the closest pairs down to a lower watermark.
2. Replay: recent exemplars are fed through the Titans update again, so what the book holds
   verbatim is written into the network.
3. Online EWC (Schwarz et al. 2018): a diagonal Fisher estimated on the replayed keys, decayed
   into the running estimate, anchored at the consolidated weights. Later updates are pulled
   towards the anchor where the Fisher says the weights matter (see `TitansMemory.update`).
"""

from __future__ import annotations

import torch

from memory.config import MemoryConfig
from memory.patterns import PatternBook
from memory.titans import TitansMemory, activation_grad, output_error

FULL = 0.9  # above this fill, consolidation compresses the book ...
TARGET = 0.75  # ... down to this fill


def diagonal_fisher(net: TitansMemory, keys: torch.Tensor) -> list[torch.Tensor]:
    """Mean over items of the squared per-item gradient, per parameter. For a layer W with
    input x and output delta δ, Σ_i (δ_i x_iᵀ)² = (δ²)ᵀ x²: one matmul, no per-item grads."""
    err, cache = output_error(net.params, keys, net.values(keys))
    fisher = [torch.empty(0)] * len(net.params)
    delta = 2.0 * err
    n_layers = len(net.params) // 2
    for layer in reversed(range(n_layers)):
        x, pre = cache[layer]
        if layer != n_layers - 1:
            delta = delta * activation_grad(layer, pre)
        fisher[2 * layer] = (delta * delta).T @ (x * x) / keys.shape[0]
        fisher[2 * layer + 1] = (delta * delta).mean(0)
        if layer:
            delta = delta @ net.params[2 * layer]
    # Scale-free: mean 1 over all parameters, so ewc_lambda reads as a relative strength.
    mean = sum(float(f.sum()) for f in fisher) / sum(f.numel() for f in fisher)
    return [f / max(mean, 1e-30) for f in fisher]


def consolidate(net: TitansMemory, book: PatternBook, config: MemoryConfig) -> dict:
    before = book.used
    fill = book.used / book.capacity
    merged = book.merge_similar(config.merge_similarity, TARGET if fill > FULL else None)
    pairs = book.exemplar_pairs(config.replay_items)
    if not pairs:
        return {"patterns_merged": merged, "memory_compressed_by": 0.0, "stability_score": 1.0}
    keys = torch.stack([vector for vector, _ in pairs])
    keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for _ in range(config.replay_passes):
        for start in range(0, keys.shape[0], config.chunk_size):
            net.update(keys[start : start + config.chunk_size])
    new_fisher = diagonal_fisher(net, keys)
    if net.fisher:
        net.fisher = [config.fisher_decay * old + new for old, new in zip(net.fisher, new_fisher)]
    else:
        net.fisher = new_fisher
    net.anchor = [p.clone() for p in net.params]
    stability = float((1.0 - net.neural_surprise(keys)).mean())
    return {"patterns_merged": merged,
            "memory_compressed_by": 100.0 * merged / before if before else 0.0,
            "stability_score": stability}
