"""NeuralMemory behaviour on real sentences: learning, stability, retention, recall, exactness."""

import numpy as np
import pytest
import torch

from bench.quality import (cue, observe_all, recall_vs_nearest_neighbour, retention,
                           seen_unseen_auroc)
from memory import MemoryConfig, NeuralMemory


def test_surprise_of_repeated_text_falls_by_over_90_percent(emb):
    memory = NeuralMemory()
    text = "Grokking is when a model suddenly generalizes after extensive overfitting."
    first = memory.observe_vectors(emb([text]), [text])["surprise"]
    for _ in range(2):
        memory.observe_vectors(emb([text]), [text])
    fourth = memory.observe_vectors(emb([text]), [text])["surprise"]  # measured before its update
    assert first > 0.9
    assert fourth < 0.1 * first


def test_weights_change_and_parameter_count_is_constant(emb):
    memory = NeuralMemory()
    before, params = memory.weight_hash, memory.stats()["weight_parameters"]
    out = memory.observe_vectors(emb(["Docker uses layers"]), ["Docker uses layers"])
    assert out["weight_delta"] > 0 and memory.weight_hash != before
    assert memory.stats()["weight_parameters"] == params


@pytest.mark.slow
def test_ten_thousand_real_sentences_stay_finite_and_separable(emb, corpus):
    """10k distinct sentences: no NaN/Inf, constant parameter count, and at 5k observed the
    surprise still separates seen from unseen sentences (AUROC >= 0.8)."""
    seen, unseen = corpus[:10_000], corpus[-500:]
    vectors, unseen_vecs = emb(seen), emb(unseen)
    memory = NeuralMemory()
    params = memory.stats()["weight_parameters"]
    observe_all(memory, seen[:5000], vectors[:5000])
    sample = np.random.default_rng(0).choice(5000, 500, replace=False)
    at_5k = seen_unseen_auroc(memory, vectors[sample], unseen_vecs)
    observe_all(memory, seen[5000:], vectors[5000:])
    assert all(torch.isfinite(p).all() for p in memory.net.params + memory.net.momentum)
    assert memory.stats()["weight_parameters"] == params
    assert memory.stats()["total_observations"] == 10_000
    assert at_5k["fused"] >= 0.8, at_5k


@pytest.mark.slow
def test_consolidation_improves_retention(emb, corpus):
    """Learn A (100 sentences), then 10x as much unrelated data: A is recognised better when
    the memory consolidated after A than when it did not (both measured here)."""
    set_a, later, unseen = corpus[10_000:10_100], corpus[10_100:11_100], corpus[-500:]
    args = (MemoryConfig(), set_a, emb(set_a), later, emb(later), emb(unseen))
    without = retention(*args, consolidate=False)
    with_consolidation = retention(*args, consolidate=True)
    # the network's recall error on A is clearly lower (>= 10% relative), and no worse a separator
    assert with_consolidation["network_mean"] < 0.9 * without["network_mean"], (with_consolidation, without)
    assert with_consolidation["network_auroc"] >= without["network_auroc"], (with_consolidation, without)
    assert with_consolidation["fused_mean"] < without["fused_mean"], (with_consolidation, without)


@pytest.mark.slow
def test_recall_matches_nearest_neighbour_search(emb, corpus):
    """N = 1,000 facts, cued by their first four words: the top pattern of `infer` is the fact
    at least 0.9x as often as exact cosine search over all facts with the same encoder."""
    facts = corpus[:1000]
    cues = [cue(f) for f in facts]
    memory = NeuralMemory()
    observe_all(memory, facts, emb(facts))
    scores = recall_vs_nearest_neighbour(memory, facts, emb(facts), emb(cues))
    assert scores["memory"] >= 0.9 * scores["nearest_neighbour"], scores


def test_chunked_update_equals_item_by_item_when_chunk_is_one():
    config = MemoryConfig(encoder="hash", dtype="float64", chunk_size=1, memory_width=64,
                          value_dim=32)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 384))
    texts = [f"item {i}" for i in range(40)]
    batched, streamed = NeuralMemory(config), NeuralMemory(config)
    batched.observe_vectors(vectors, texts)
    for i in range(40):
        streamed.observe_vectors(vectors[i : i + 1], texts[i : i + 1])
    for a, b in zip(batched.net.params + batched.net.momentum, streamed.net.params + streamed.net.momentum):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_chunked_update_is_one_titans_step_per_item_at_chunk_start():
    """A chunk of C items equals C explicit momentum/forgetting steps whose gradients are all
    taken at the chunk-start weights (the mini-batch form)."""
    from memory.titans import backprop, output_error

    config = MemoryConfig(encoder="hash", dtype="float64", chunk_size=8, memory_width=32, value_dim=16,
                          forget=0.01)
    memory = NeuralMemory(config)
    keys = memory._keys(np.random.default_rng(1).standard_normal((8, 384)))
    net = memory.net
    params0, momentum = [p.clone() for p in net.params], [m.clone() for m in net.momentum]
    err, cache = output_error(params0, keys, net.values(keys))
    surprise = err.norm(dim=1).clamp(max=1.0)
    from memory.titans import feature_energy
    theta = config.lr * (0.25 + 0.75 * surprise) / (2.0 * feature_energy(cache))
    params = [p.clone() for p in params0]
    for j in range(8):
        coeffs = torch.zeros(8, 1, dtype=torch.float64)
        coeffs[j] = 1.0
        (grad,) = backprop(params0, err, cache, coeffs)
        momentum = [config.momentum * m - theta[j] * g for m, g in zip(momentum, grad)]
        params = [(1 - config.forget * surprise[j]) * p + m for p, m in zip(params, momentum)]
    net.update(keys)
    for a, b in zip(net.params, params):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
