"""A copied memory (copy.deepcopy, as an actor process copies a checkpoint it decoded before)
is the same memory: equal weights, and it learns and answers exactly as the original does."""

from __future__ import annotations

import copy

from memory import MemoryConfig, NeuralMemory, get_encoder


def test_a_deep_copy_learns_and_answers_like_the_original():
    encoder = get_encoder("hash")
    words = [f"{a}{b}" for a in "bcdfghjklmnp" for b in "aeiou"]
    texts = [" ".join(words[(i * 7 + k * 13) % len(words)] for k in range(6)) + f" number{i}" for i in range(60)]
    vectors = encoder.encode(texts)
    original = NeuralMemory(MemoryConfig.from_dict({"encoder": "hash", "pattern_slots": 64}))
    original.observe_vectors(vectors[:50], texts[:50])
    twin = copy.deepcopy(original)
    assert twin.weight_hash == original.weight_hash
    for memory in (original, twin):  # new patterns land in the pattern book of each
        for i in range(50, 60):
            memory.observe_vectors(vectors[i:i + 1], texts[i:i + 1])
    assert twin.weight_hash == original.weight_hash
    for i in range(50, 60):
        ours, theirs = twin.infer_vector(vectors[i], top_k=3), original.infer_vector(vectors[i], top_k=3)
        assert ours == theirs
    assert twin.to_bytes() == original.to_bytes()
    original.observe_vectors(vectors[:1], texts[:1])  # and they are independent afterwards
    assert twin.weight_hash != original.weight_hash
