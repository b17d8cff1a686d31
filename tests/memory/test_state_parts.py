"""State as named parts: exact round trips, WAL-style replay determinism, immutability of sealed
parts, small checkpoints of change, and format-1 blobs from the previous code (hash encoder)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from errors import IncompatibleState
from memory import MemoryConfig, NeuralMemory

DATA = Path(__file__).with_name("data")
CONFIG = MemoryConfig(encoder="hash", memory_width=64, value_dim=32, pattern_slots=24, episode_chunk=48,
                      chunk_size=8)


def _batches(count: int, seed: int = 0, size: int = 13):
    """Distinct facts plus some near-repeats, in batches of `size`."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    vectors[count // 2 :: 7] = vectors[: len(vectors[count // 2 :: 7])] + 0.05  # near-repeats
    texts = [f"fact {seed}-{i}" for i in range(count)]
    return [(vectors[s : s + size], texts[s : s + size]) for s in range(0, count, size)]


def _feed(memory, batches, consolidate_at: int | None = None):
    for i, (vectors, texts) in enumerate(batches):
        memory.observe_vectors(vectors, texts, domain="d" if i % 3 else None)
        if i == consolidate_at:
            memory.consolidate()
    return memory


def _index(memory) -> np.ndarray:
    """The search index's contents (sign-bit codes, in record order): derived, not a part."""
    import faiss

    return faiss.vector_to_array(memory.store._codes.xb)


def _answers(memory) -> list:
    probes = np.random.default_rng(99).standard_normal((6, 384))
    return ([memory.infer_vector(p, top_k=3) for p in probes] + [memory.surprise_vector(p) for p in probes]
            + [memory.explain(top_k=4), memory.stats(), memory.weight_hash])


@pytest.fixture(scope="module")
def grown():
    """A memory past its hot set (24) with three full chunks, a tail and EWC state."""
    return _feed(NeuralMemory(CONFIG), _batches(170), consolidate_at=5)


def test_parts_round_trip_gives_the_same_memory(grown):
    parts = grown.state_parts()
    assert grown.stats()["episodes"] > 3 * CONFIG.pattern_slots and len(grown.store.chunks) == 3
    assert grown.store.tail.count and {name.split("/")[0] for name in parts} == {"head", "ewc", "chunk"}
    copy = NeuralMemory.from_parts(parts)
    assert copy.state_parts() == parts and _answers(copy) == _answers(grown)
    more = _batches(40, seed=1)
    assert _answers(_feed(copy, more)) == _answers(_feed(NeuralMemory.from_parts(parts), more))


def test_blob_round_trip_gives_the_same_memory(grown):
    blob = grown.to_bytes()
    copy = NeuralMemory.from_bytes(blob)
    assert copy.to_bytes() == blob and _answers(copy) == _answers(grown)


def test_replay_from_a_checkpoint_equals_the_uninterrupted_memory():
    """What the actor does after a crash: newest checkpoint + WAL replay, in the same batches,
    must equal a twin that never stopped — weights, answers and every part."""
    batches = _batches(200, seed=2)
    twin = _feed(NeuralMemory(CONFIG), batches, consolidate_at=4)
    for cut in (3, 9):  # before and after the consolidation; chunks fill on both sides
        checkpoint = _feed(NeuralMemory(CONFIG), batches[:cut], consolidate_at=4).state_parts()
        replayed = _feed(NeuralMemory.from_parts(checkpoint), batches[cut:],
                         consolidate_at=4 - cut if cut <= 4 else None)
        assert replayed.state_parts() == twin.state_parts()
        assert np.array_equal(_index(replayed), _index(twin)) and _answers(replayed) == _answers(twin)


def test_two_memories_fed_the_same_batches_are_bit_identical():
    batches = _batches(150, seed=3)
    a, b = _feed(NeuralMemory(CONFIG), batches), _feed(NeuralMemory(CONFIG), batches)
    assert a.state_parts() == b.state_parts() and np.array_equal(_index(a), _index(b))
    assert len(_index(a)) == a.store.size * 384 // 8


def test_immutable_parts_never_change_and_a_checkpoint_writes_only_what_is_new():
    config = MemoryConfig(**{**CONFIG.to_dict(), "episode_chunk": 256, "pattern_slots": 64})
    memory = _feed(NeuralMemory(config), _batches(2000, seed=4, size=50))
    before = memory.state_parts()
    _feed(memory, _batches(20, seed=5))
    after = memory.state_parts()
    for name, data in before.items():  # same name, same bytes (only the head is mutable)
        if name != "head":
            assert after[name] == data, name
    known = {hashlib.sha256(b).hexdigest() for b in before.values()}
    written = sum(len(b) for b in after.values() if hashlib.sha256(b).hexdigest() not in known)
    total = sum(len(b) for b in after.values())
    assert written <= 0.25 * total, (written, total)  # the head and at most one new chunk
    assert set(after) - set(before) <= {"head"} | {n for n in after if n.startswith("chunk/")}


def test_missing_or_damaged_parts_are_a_clear_error(grown):
    parts = grown.state_parts()
    segment = next(name for name in parts if name.startswith("chunk/"))
    with pytest.raises(IncompatibleState, match=segment):
        NeuralMemory.from_parts({k: v for k, v in parts.items() if k != segment})
    damaged = dict(parts, head=parts["head"][:-10] + b"0123456789")
    with pytest.raises(IncompatibleState, match="corrupt"):
        NeuralMemory.from_parts(damaged)
    with pytest.raises(IncompatibleState, match="encoder 'hash'"):
        NeuralMemory.from_parts(parts, expected=MemoryConfig(encoder="minilm"))


def test_a_format_1_blob_from_the_previous_code_still_loads():
    """state_v1.nmem was written by the pattern-book code this replaced (see state_v1.json)."""
    saved = json.loads((DATA / "state_v1.json").read_text())
    memory = NeuralMemory.from_bytes((DATA / "state_v1.nmem").read_bytes())
    assert memory.weight_hash == saved["weight_hash"] and memory.step == saved["step"]
    assert sorted(memory.store.text(i) for i in range(memory.store.size)) == \
        sorted(t for slot in saved["book_texts"] for t in slot)
    assert memory.explain(top_k=1)[0]["examples"] == saved["book_texts"][-1][::-1]  # count 2
    assert memory.stats()["capacity_used"] == saved["stats"]["capacity_used"]
    assert memory.surprise("Granite is an igneous rock")["nearest_pattern"] == "Granite is an igneous rock"
    copy = NeuralMemory.from_bytes(memory.to_bytes())  # and it is saved in today's format
    assert copy.weight_hash == memory.weight_hash
    memory.observe("A new fact after the upgrade")
    assert memory.stats()["total_observations"] == saved["step"] + 1


def test_memories_loaded_from_the_same_parts_share_decoded_chunks_and_answer_alike(grown, monkeypatch):
    """A process decodes a chunk's bytes once (a fork burst loads one base many times); what it
    shares is immutable, so each copy still answers, learns and saves as a fresh decode does."""
    from memory import episodes
    from memory.decoded import DecodedParts

    parts = grown.state_parts()
    first, second = NeuralMemory.from_parts(parts), NeuralMemory.from_parts(parts)
    assert all(a is b for a, b in zip(first.store.chunks, second.store.chunks))
    monkeypatch.setattr(episodes, "DECODED", DecodedParts(episodes.Chunk, 0))  # cache off: decode afresh
    fresh = NeuralMemory.from_parts(parts)
    assert not any(a is b for a, b in zip(first.store.chunks, fresh.store.chunks))
    assert _answers(first) == _answers(fresh) == _answers(grown)
    assert np.array_equal(_index(first), _index(fresh))
    more = _batches(60, seed=5)
    _feed(first, more)
    _feed(fresh, more)
    assert _answers(second) == _answers(grown)  # the first copy's learning did not reach it
    assert first.state_parts() == fresh.state_parts() and _answers(first) == _answers(fresh)


def test_memories_loaded_from_the_same_head_verify_it_once_and_learn_into_their_own_weights(grown, monkeypatch):
    """The head (network, momentum, hot set) is checked once per process — payload sha256 and
    weights against their hash — and each memory loaded from it copies what it will change."""
    from memory import state
    from memory.decoded import DecodedParts

    parts = grown.state_parts()
    verified = []
    monkeypatch.setattr(state, "HEADS", DecodedParts(lambda data: verified.append(1) or state._verified_head(data),
                                                     16 * 1024 * 1024))
    first, second = NeuralMemory.from_parts(parts), NeuralMemory.from_parts(parts)
    assert len(verified) == 1
    monkeypatch.setattr(state, "HEADS", DecodedParts(state._verified_head, 0))  # cache off: verify afresh
    fresh = NeuralMemory.from_parts(parts)
    assert first.weight_hash == second.weight_hash == fresh.weight_hash == grown.weight_hash
    assert _answers(first) == _answers(fresh) == _answers(grown)
    _feed(first, _batches(20, seed=6))
    assert state.weight_hash(first) != grown.weight_hash
    assert state.weight_hash(second) == grown.weight_hash  # recomputed, not the cached value
    assert NeuralMemory.from_parts(parts).state_parts() == parts  # the stored bytes are untouched


def test_a_head_whose_weights_do_not_match_their_hash_is_refused_and_not_kept(grown):
    from memory import codec

    parts = dict(grown.state_parts())
    fields, arrays = codec.unpack(parts["head"], "head")
    forged = codec.pack("head", {k: v for k, v in fields.items() if k not in ("kind", "format_version", "arrays",
                                                                              "payload_sha256")}
                        | {"weight_hash": "0" * 64}, arrays)
    for _attempt in range(2):  # a refused head is not kept: the second load checks it again
        with pytest.raises(IncompatibleState, match="weights do not match their hash"):
            NeuralMemory.from_parts({**parts, "head": forged})


def test_decoded_parts_are_bounded_by_bytes_least_recently_used_out_first(grown):
    from memory.decoded import DecodedParts
    from memory.episodes import Chunk

    parts = [grown.state_parts()[name] for name in sorted(grown.state_parts()) if name.startswith("chunk/")]
    cache = DecodedParts(Chunk, max_bytes=2 * max(len(p) for p in parts))
    a, b, c = (cache.get(p) for p in parts[:3])
    assert cache.get(parts[1]) is b and cache.get(parts[2]) is c  # kept
    assert cache.get(parts[0]) is not a  # the oldest went when the third came
    assert cache.get(bytearray(parts[1])) is not b  # a mutable buffer is decoded, never kept
    assert cache.get(bytes(bytearray(parts[2]))) is not c  # equal bytes, another object: decoded
