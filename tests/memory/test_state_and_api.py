"""Codec round trips, config validation, the façade's contract and its errors (hash encoder: fast)."""

import unicodedata

import numpy as np
import pytest

from errors import IncompatibleState, InvalidInput
from memory import HashEncoder, MemoryConfig, NeuralMemory, get_encoder

TEXTS = ["Docker uses layers for efficient storage", "Redis is an in-memory database",
         "Kubernetes orchestrates containers", "Python has list comprehensions"]


@pytest.fixture
def memory():
    memory = NeuralMemory(MemoryConfig(encoder="hash"))
    memory.observe(TEXTS, domain="infra")
    memory.observe("Redis is an in-memory database")
    return memory


def test_round_trip_is_bit_identical(memory):
    memory.consolidate()  # EWC state must survive too
    blob = memory.to_bytes()
    copy = NeuralMemory.from_bytes(blob)
    assert copy.weight_hash == memory.weight_hash
    assert copy.to_bytes() == blob
    assert copy.stats() == memory.stats()
    assert copy.infer("What is Redis?") == memory.infer("What is Redis?")
    assert copy.surprise("Kubernetes runs pods") == memory.surprise("Kubernetes runs pods")
    # and they keep learning identically
    a, b = memory.observe("Caddy provides automatic HTTPS"), copy.observe("Caddy provides automatic HTTPS")
    assert a == b and memory.weight_hash == copy.weight_hash


def test_state_of_another_encoder_is_refused(memory):
    with pytest.raises(IncompatibleState, match="encoder 'hash'"):
        NeuralMemory.from_bytes(memory.to_bytes(), expected=MemoryConfig(encoder="minilm"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_damaged_state_is_a_clear_error(memory, damage):
    blob = bytearray(memory.to_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) - 100]
    elif damage == "garbage":
        blob = bytearray(b"not a memory at all")
    else:
        blob = bytearray()
    with pytest.raises(IncompatibleState):
        NeuralMemory.from_bytes(bytes(blob))


def test_config_validation_says_what_to_fix():
    with pytest.raises(InvalidInput, match="unknown memory config field"):
        MemoryConfig.from_dict({"learning_rat": 0.1})
    with pytest.raises(InvalidInput, match="lr must be"):
        MemoryConfig(lr=float("nan"))
    with pytest.raises(InvalidInput, match="encoder must be one of"):
        MemoryConfig.from_dict({"encoder": "word2vec"})
    with pytest.raises(InvalidInput, match="memory too large"):
        MemoryConfig.from_dict({"memory_width": 16384, "memory_depth": 8})
    assert MemoryConfig.from_dict({"encoder": "hash"}).dim == 384


@pytest.mark.parametrize("call", [
    lambda m: m.observe(""),
    lambda m: m.observe("   "),
    lambda m: m.observe("x" * 100_001),
    lambda m: m.observe("fine", learning_rate=float("nan")),
    lambda m: m.observe("fine", learning_rate=0),
    lambda m: m.observe("fine", domain=""),
    lambda m: m.infer("query", top_k=0),
    lambda m: m.infer("query", top_k=101),
    lambda m: m.infer("query", temperature=-1),
    lambda m: m.observe_vectors(np.full((1, 384), np.nan), ["nan vector"]),
    lambda m: m.observe_vectors(np.ones((1, 100)), ["wrong dim"]),
    lambda m: m.observe_vectors(np.ones((2, 384)), ["one text for two vectors"]),
    lambda m: m.explain(top_k=0),
])
def test_bad_input_is_invalid_input_and_changes_nothing(memory, call):
    before = memory.weight_hash, memory.step
    with pytest.raises(InvalidInput):
        call(memory)
    assert (memory.weight_hash, memory.step) == before


def test_a_text_spelt_with_other_unicode_code_points_is_the_same_words():
    """"é" as one code point or as "e" and a combining accent (as macOS file names spell it) is
    the same text to a reader: surprise said "learn" for a text the memory held."""
    memory = NeuralMemory(MemoryConfig(encoder="hash"))
    memory.observe(["Zoë runs the café on the corner", "Flight 2231 departs 07:45 on 2024-03-18"])
    assert memory.surprise(unicodedata.normalize("NFD", "Zoë runs the café on the corner"))["recommendation"] == "skip"
    assert memory.surprise("Flight ２２３１ departs ０７:４５ on ２０２４-０３-１８")["recommendation"] == "skip"
    assert memory.surprise("Zoe runs the cafe on the corner")["recommendation"] == "learn"  # other letters


def test_result_shapes_follow_the_contract(memory):
    out = memory.observe("Nginx is a reverse proxy server", domain="web")
    assert set(out) >= {"surprise", "weight_delta", "patterns_activated", "step"}
    assert 0 <= out["surprise"] <= 1 and out["step"] == 6
    s = memory.surprise("Nginx is a reverse proxy server")
    assert s["nearest_pattern"] == "Nginx is a reverse proxy server" and s["recommendation"] == "skip"
    assert memory.surprise("Photosynthesis converts light")["recommendation"] in ("learn", "consolidate")
    assert memory.surprise("  nginx is a reverse proxy server. ")["recommendation"] == "skip"  # the same words
    changed = memory.surprise("Nginx is a reverse proxy cache")  # familiar, and low, but not what it holds
    assert changed["score"] <= 0.3 and changed["recommendation"] == "learn", changed
    inferred = memory.infer("Redis is an in-memory database", top_k=3)
    assert inferred["attention_weights"][0]["pattern"] == "Redis is an in-memory database"
    assert abs(sum(a["weight"] for a in inferred["attention_weights"]) - 1) < 1e-6
    assert len(inferred["attention_weights"]) == 3 and 0 <= inferred["confidence"] <= 1
    for limit in (1, 2):  # at most that many words, a cut shown by an ellipsis on the last one
        short = memory.infer("Redis is an in-memory database", max_tokens=limit)["response"]
        assert len(short.split()) == limit and short.endswith("…"), short
    patterns = memory.explain(top_k=2)
    assert len(patterns) == 2 and patterns[0]["description"].endswith("Redis is an in-memory database")
    assert all(set(p) == {"description", "strength", "examples"} for p in patterns)
    stats = memory.stats()
    assert stats["total_observations"] == 6 and stats["domains"] == ["infra", "web"]
    assert 0 < stats["capacity_used"] <= 1
    result = memory.consolidate()
    assert set(result) == {"patterns_merged", "memory_compressed_by", "stability_score"}


def test_empty_memory_answers_honestly():
    memory = NeuralMemory(MemoryConfig(encoder="hash"))
    assert memory.infer("anything")["confidence"] == 0.0
    assert memory.surprise("anything") == {"score": 1.0, "nearest_pattern": None, "recommendation": "learn"}
    assert memory.explain() == [] and memory.attention_map("x") == []


def test_hash_encoder_is_deterministic_and_normalised():
    a = HashEncoder().encode(["Same text", "other"])
    b = get_encoder("hash").encode(["Same text", "other"])
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    with pytest.raises(InvalidInput):
        get_encoder("nope")


def test_hash_encoder_vectors_are_signed_feature_hashing_of_words_and_trigrams():
    """The `hash` encoder's vectors are a stored memory's keys: pinned to their definition
    (blake2b-64 of each feature; bucket = value mod dim, sign = top bit), cold and warm."""
    import hashlib
    import re

    def reference(text: str, dim: int = 384) -> np.ndarray:
        words = re.findall(r"\w+", text.lower())
        padded = f" {' '.join(words)} "
        features = [f"w:{w}" for w in words] + [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
        out = np.zeros(dim)
        for feature in features or ["<empty>"]:
            value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            out[value % dim] += 1.0 if value >> 63 else -1.0
        return (out / max(np.linalg.norm(out), 1e-12)).astype(np.float32)

    texts = ["Ray Serve exposes REST and MCP", "the the the", "", "Ünïcode café, naïve!", "x" * 500]
    want = np.stack([reference(t) for t in texts])
    encoder = HashEncoder()
    assert np.array_equal(encoder.encode(texts), want)
    assert np.array_equal(encoder.encode(texts), want)  # every feature now seen before


def test_minilm_encoder_loads_offline_and_separates_meaning():
    enc = get_encoder("minilm")
    v = enc.encode(["Kubernetes restarts failed containers", "K8s restarts containers that fail",
                    "Shakespeare wrote Hamlet"])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > 0.7 > 0.3 > v[0] @ v[2]


@pytest.mark.parametrize("change", ["observe", "consolidate", "forget"])
def test_a_hash_read_beside_a_change_never_stands_for_the_state_after_it(memory, monkeypatch, change):
    """An actor's reads run beside its writes. A reader computing the weight hash while a
    write changes the weights must not leave its (older) hash standing for the new weights:
    the write's answer and the next checkpoint would carry it."""
    import threading

    from memory import state

    real = state.weight_hash
    hashing, finish = threading.Event(), threading.Event()

    def slow_hash(of):
        value = real(of)  # the weights as they are when the reader starts
        hashing.set()
        finish.wait(5)
        return value

    changes = {"observe": lambda: memory.observe("a write beside the reader"),
               "consolidate": memory.consolidate,
               "forget": lambda: memory.forget_approximately(lambda text, step, domain: "Redis" in text)}
    assert memory._hash is None  # the fixture's last write cleared it: the next read computes
    before, failures = real(memory), []

    def write() -> None:
        try:
            changes[change]()
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    monkeypatch.setattr(state, "weight_hash", slow_hash)
    reader = threading.Thread(target=lambda: memory.weight_hash)
    reader.start()
    assert hashing.wait(5)
    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.3)  # the change waits for the reader's hash, or (before) ran beside it
    finish.set()
    reader.join(5)
    writer.join(5)
    monkeypatch.setattr(state, "weight_hash", real)
    assert not failures and not writer.is_alive() and not reader.is_alive()
    assert real(memory) != before  # the change did change the weights
    assert memory.weight_hash == real(memory)
