"""Pattern-book lookups: the chunked (batched) lookup sees every write made earlier in its chunk."""

import numpy as np
import torch

from memory import MemoryConfig, NeuralMemory
from memory.patterns import CANDIDATE_SLOTS, PatternBook


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x / x.norm(dim=1, keepdim=True)).to(torch.float32)


def _brute_force_nearest(book: PatternBook, query: torch.Tensor):
    best = None
    for slot in range(book.used):
        for col in range(len(book.texts[slot])):
            cos = float(book.exemplar_vectors[slot, col].to(torch.float32) @ query)
            if best is None or cos > best[2]:
                best = (slot, col, cos)
    return best


def test_chunk_lookup_sees_adds_reinforcements_and_evictions_made_within_the_chunk():
    # A book no bigger than the candidate pool, so the right answer is the exact nearest
    # exemplar; capacity is reached early, so adds evict and move slots mid-chunk.
    book = PatternBook(CANDIDATE_SLOTS, 2, 16, torch.float32)
    base = _unit(6, 16, 0)
    queries = torch.cat([base, base[:3] + 0.05 * _unit(3, 16, 1), _unit(40, 16, 2)])
    queries = queries / queries.norm(dim=1, keepdim=True)
    step, checked = 0, 0
    for start in range(0, len(queries), 7):
        chunk = queries[start : start + 7]
        lookup = book.lookup(chunk)
        for i, query in enumerate(chunk):
            got, want = lookup.nearest(i), _brute_force_nearest(book, query)
            assert (got is None) == (want is None)
            if want is not None:
                assert got[:2] == want[:2] and abs(got[2] - want[2]) < 1e-6
                checked += 1
            step += 1
            if want is not None and want[2] > 0.9:
                book.reinforce(want[0], query, f"t{step}", step, None)
            else:
                book.add(query, f"t{step}", step, None)
    assert checked > 40 and book.used == CANDIDATE_SLOTS


def test_a_repeat_inside_one_batch_is_recognised_by_the_later_item():
    memory = NeuralMemory(MemoryConfig(encoder="hash"))
    vector = _unit(1, 384, 3).numpy()
    first, again = memory.observe_vectors(np.concatenate([vector, vector]), ["fact", "fact"])["surprises"]
    assert first > 0.9 and again < 0.05 * first
    assert memory.book.used == 1 and memory.book.counts[0] == 2


def test_batched_and_streamed_observation_store_the_same_patterns():
    vectors = torch.cat([_unit(30, 384, 4)] * 2).numpy()  # every item comes back once
    texts = [f"item {i % 30}" for i in range(60)]
    batched, streamed = NeuralMemory(MemoryConfig(encoder="hash")), NeuralMemory(MemoryConfig(encoder="hash"))
    batched.observe_vectors(vectors, texts)
    for i in range(60):
        streamed.observe_vectors(vectors[i : i + 1], texts[i : i + 1])
    assert batched.book.used == streamed.book.used == 30
    assert batched.book.counts[:30].tolist() == streamed.book.counts[:30].tolist() == [2] * 30


def test_one_lookup_per_block_of_chunks_scores_like_one_lookup_per_chunk(monkeypatch):
    # Batches share one centroid scan across several network chunks (LOOKUP_BLOCK); an item
    # must still see what earlier chunks of the same block stored. Items repeat across chunk
    # boundaries, and a small book forces evictions, so writes from earlier chunks matter.
    import memory.neural_memory as neural_memory

    base = _unit(40, 384, 5)
    vectors = torch.cat([base, base[:20] + 0.02 * _unit(20, 384, 6), base[10:30]]).numpy()
    texts = [f"item {i}" for i in range(len(vectors))]
    config = MemoryConfig(encoder="hash", chunk_size=4, pattern_slots=48)
    results = {}
    for block in (4, 64):  # one chunk per lookup vs sixteen chunks per lookup
        monkeypatch.setattr(neural_memory, "LOOKUP_BLOCK", block)
        memory = NeuralMemory(config)
        results[block] = (memory.observe_vectors(vectors, texts)["surprises"], memory.book.texts,
                          memory.book.counts[: memory.book.used].tolist(), memory.weight_hash)
    assert results[4] == results[64]
    surprises = results[64][0]
    assert max(surprises[60:]) < 0.1  # exact repeats from earlier chunks were recognised
