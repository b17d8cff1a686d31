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
