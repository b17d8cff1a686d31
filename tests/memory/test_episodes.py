"""The episodic store and hot set: nothing observed is lost, lookups inside a batch see the
batch's own earlier writes, and searches agree with brute force (hash encoder: fast)."""

import numpy as np
import pytest
import torch

from memory import MemoryConfig, NeuralMemory
from memory.episodes import EpisodicStore

SMALL = dict(encoder="hash", memory_width=64, value_dim=32)


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_no_distinct_fact_is_dropped_at_three_times_the_hot_set():
    """3x as many distinct facts as hot-set slots, across immutable chunks: every one is still
    stored, found by its own vector as the top answer, and recognised as seen."""
    memory = NeuralMemory(MemoryConfig(**SMALL, pattern_slots=32, episode_chunk=32, shortlist=8))
    vectors, texts = _unit(96, 384, 0), [f"fact {i}" for i in range(96)]
    for start in range(0, 96, 10):
        memory.observe_vectors(vectors[start : start + 10], texts[start : start + 10])
    assert memory.capacity_used == 1.0 and memory.stats()["episodes"] == 96
    assert len(memory.store.chunks) == 3
    for vector, text in zip(vectors, texts):
        assert memory.infer_vector(vector, top_k=1)["attention_weights"][0]["pattern"] == text
        assert memory.surprise_vector(vector)["nearest_pattern"] == text
    unseen = [memory.surprise_vector(v)["score"] for v in _unit(20, 384, 1)]
    seen = [memory.surprise_vector(v)["score"] for v in vectors[:20]]  # the oldest
    assert max(seen) < 0.05 < 0.5 < min(unseen)


def test_store_search_equals_brute_force_over_chunks_and_tail():
    store = EpisodicStore(16, chunk=32, shortlist=256)  # a shortlist of everything: exact
    vectors = _unit(100, 16, 2)
    for i, vector in enumerate(vectors):
        store.append(vector, f"r{i}", i + 1, 0, None)
    assert len(store.chunks) == 3 and store.tail.count == 4
    queries = _unit(10, 16, 3)
    ids, sims = store.search(queries, 5)
    stored = vectors.astype(np.float16).astype(np.float32)
    want = np.argsort(-(queries @ stored.T), axis=1, kind="stable")[:, :5]
    assert np.array_equal(ids, want)
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ stored.T, want, 1), atol=1e-6)
    assert [store.text(i) for i in (0, 40, 99)] == ["r0", "r40", "r99"]
    np.testing.assert_array_equal(store.vectors([99, 0, 40]), stored[[99, 0, 40]])
    padded, _ = EpisodicStore(16, 32, 64).search(queries[:1], 3)
    assert padded.tolist() == [[-1, -1, -1]]


def test_vectors_are_the_stored_rows_in_the_order_asked_few_or_many_from_any_chunk():
    """A few ids are looked up row by row, a shortlist's worth grouped by chunk: either way the
    rows come back as stored (float16, widened exactly), in the order asked, repeats included."""
    from memory.episodes import GROUP_GATHER_AT

    store = EpisodicStore(16, chunk=32, shortlist=8)
    vectors = _unit(200, 16, 4)
    for i, vector in enumerate(vectors):
        store.append(vector, f"r{i}", i + 1, 0, None)
    stored = vectors.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(5)
    for count in (1, GROUP_GATHER_AT - 1, GROUP_GATHER_AT, 4 * GROUP_GATHER_AT):
        ids = rng.integers(0, 200, count)  # chunks and the tail, out of order, with repeats
        got = store.vectors(ids)
        assert got.dtype == np.float32 and np.array_equal(got, stored[ids]), count
    assert store.vectors([]).shape == (0, 16)


def test_exact_cosines_are_the_float64_sums_of_exact_products_in_any_batch():
    """A (record, query) pair scores the same bits whatever else is scored with it: a store
    search, a batch's check of its own records, one pair alone."""
    from memory.episodes import exact_cosines

    rows = _unit(300, 384, 11).astype(np.float16)
    queries = _unit(300, 384, 12)
    want = (rows.astype(np.float64) * queries.astype(np.float64)).sum(axis=1)
    assert np.array_equal(exact_cosines(rows, queries), want)
    assert np.array_equal(exact_cosines(rows.astype(np.float32), queries), want)  # gathered rows
    assert all(exact_cosines(rows[i : i + 1], queries[i : i + 1])[0] == want[i] for i in (0, 150, 299))


def test_a_short_shortlist_still_finds_every_stored_vector_and_ranks_exactly():
    store = EpisodicStore(64, chunk=50, shortlist=8)  # 8 of 300 pass the sign-bit scan
    vectors = _unit(300, 64, 8)
    for i, vector in enumerate(vectors):
        store.append(vector, f"r{i}", i + 1, 0, None)
    ids, sims = store.search(vectors, 3)
    assert ids[:, 0].tolist() == list(range(300))  # identical sign bits: always shortlisted
    assert (np.diff(sims, axis=1) <= 0).all() and np.allclose(sims[:, 0], 1.0, atol=2e-3)


def test_a_repeat_inside_one_batch_is_recognised_by_the_later_item():
    memory = NeuralMemory(MemoryConfig(**SMALL))
    vector = _unit(1, 384, 3)
    first, again = memory.observe_vectors(np.concatenate([vector, vector]), ["fact", "fact"])["surprises"]
    assert first > 0.9 and again < 0.05 * first
    assert memory.stats()["episodes"] == 1 and memory.hot.used == 1 and memory.hot.count[0] == 2


def test_a_paraphrase_joins_the_pattern_and_is_kept_verbatim():
    memory = NeuralMemory(MemoryConfig(**SMALL))
    base = _unit(1, 384, 4)
    close = base + 0.05 * _unit(1, 384, 5)
    memory.observe_vectors(base, ["Python has list comprehensions"])
    memory.observe_vectors(close, ["Python offers list comprehensions"])
    assert memory.hot.used == 1 and memory.stats()["episodes"] == 2
    assert memory.explain(top_k=1)[0]["examples"] == ["Python offers list comprehensions",
                                                      "Python has list comprehensions"]


def test_batched_and_streamed_observation_store_the_same_patterns():
    vectors = np.concatenate([_unit(30, 384, 4)] * 2)  # every item comes back once
    texts = [f"item {i % 30}" for i in range(60)]
    batched, streamed = NeuralMemory(MemoryConfig(**SMALL)), NeuralMemory(MemoryConfig(**SMALL))
    batched.observe_vectors(vectors, texts)
    for i in range(60):
        streamed.observe_vectors(vectors[i : i + 1], texts[i : i + 1])
    assert batched.hot.used == streamed.hot.used == 30
    assert batched.hot.count[:30].tolist() == streamed.hot.count[:30].tolist() == [2] * 30
    assert batched.stats()["episodes"] == streamed.stats()["episodes"] == 30


def test_one_lookup_per_block_of_chunks_scores_like_one_lookup_per_chunk(monkeypatch):
    # Batches share one store search across several network chunks (LOOKUP_BLOCK); an item
    # must still see what earlier chunks of the same block stored, across a filled chunk.
    import memory.neural_memory as neural_memory

    base = _unit(40, 384, 5)
    vectors = np.concatenate([base, base[:20] + 0.02 * _unit(20, 384, 6), base[10:30]])
    texts = [f"item {i}" for i in range(len(vectors))]
    config = MemoryConfig(**SMALL, chunk_size=4, pattern_slots=24, episode_chunk=32)
    results = {}
    for block in (4, 64):  # one chunk per lookup vs sixteen chunks per lookup
        monkeypatch.setattr(neural_memory, "LOOKUP_BLOCK", block)
        memory = NeuralMemory(config)
        out = memory.observe_vectors(vectors, texts)
        results[block] = (out["surprises"], out["patterns_activated"], memory.state_parts())
    assert results[4] == results[64]
    surprises = results[64][0]
    assert max(surprises[60:]) < 0.1  # exact repeats from earlier chunks were recognised


@pytest.mark.parametrize("members", [[[0, 1, -1], [2, -1, -1]]])
def test_centroids_average_member_vectors(members):
    memory = NeuralMemory(MemoryConfig(**SMALL))
    vectors = _unit(3, 384, 7)
    memory.observe_vectors(vectors, ["a", "b", "c"])
    got = memory.centroids(np.array(members))
    mean = vectors[:2].astype(np.float16).astype(np.float32).sum(0)
    np.testing.assert_allclose(got[0], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(got[1], vectors[2], atol=1e-3)
    assert torch.is_tensor(memory.net.params[0])


def test_consolidation_compresses_a_full_hot_set_and_keeps_every_record():
    memory = NeuralMemory(MemoryConfig(**SMALL, pattern_slots=16))
    vectors, texts = _unit(16, 384, 9), [f"fact {i}" for i in range(16)]
    memory.observe_vectors(vectors, texts)
    assert memory.capacity_used == 1.0
    result = memory.consolidate()  # > 90 % full: the closest patterns merge down to 75 %
    assert result["patterns_merged"] == 4 and memory.capacity_used == 0.75
    merged = next(iter(memory.hot.aliases))  # a pattern that joined another
    for vector, text in zip(vectors, texts):  # only statistics merged: every record is there
        assert memory.infer_vector(vector, top_k=1)["attention_weights"][0]["pattern"] == text
    memory.observe_vectors(vectors[merged : merged + 1], [texts[merged]])  # seen again
    assert memory.stats()["episodes"] == 16 and memory.hot.used == 12
    slot = memory.hot.slot(merged)
    assert slot is not None and merged in memory.hot.member_ids(slot)
