"""Recovery building blocks without Ray: WAL entry round trip, replay, checkpoint fallback."""

from __future__ import annotations

import numpy as np
import pytest

from actors.durability import Checkpoints, recover, to_parts
from actors.wal import check_observation, entry_args, make_entry
from errors import CheckpointCorrupt, InvalidInput
from tests.actors.conftest import register
from tests.cluster.helpers import encode

Q = "acme/dur"


def test_wal_entry_round_trip():
    vectors = encode(["a", "b"])
    entry = make_entry(7, vectors, ["a", "b"], "dom", 0.25, "req")
    back, texts, domain, lr, rid = entry_args(entry)
    assert back.dtype == np.float32 and np.array_equal(back, vectors)
    assert (texts, domain, lr, rid) == (["a", "b"], "dom", 0.25, "req")


@pytest.mark.parametrize("args, match", [
    ((np.zeros((1, 384)), ["a", "b"]), "shape"),
    ((np.zeros((2, 10)), ["a", "b"]), "shape"),
    ((np.zeros((1, 384)), "a"), "non-empty list of strings"),
    (([["x"] * 384], ["a"]), "numeric"),
])
def test_check_observation_refuses_bad_writes(args, match):
    with pytest.raises(InvalidInput, match=match):
        check_observation(*args, None, None, 384)


def test_replay_rebuilds_the_same_state_and_skips_refused_entries(local_storage):
    from memory import MemoryConfig, NeuralMemory

    config = MemoryConfig.from_dict(register(local_storage, Q))
    texts = ["x one", "x two", "x three"]
    vectors = encode(texts)
    meta = local_storage.metadata
    meta.wal_append(Q, make_entry(1, vectors[:1], texts[:1], None, None, "r1"))
    # An entry the memory refuses (logged by a buggy writer): replay refuses it again.
    meta.wal_append(Q, make_entry(2, np.zeros((1, 5), np.float32), ["bad"], None, None, "bad"))
    meta.wal_append(Q, make_entry(3, vectors[1:], texts[1:], None, None, "r2"))

    rec = recover(local_storage, Q, config, remember=10)
    reference = NeuralMemory(config)
    reference.observe_vectors(vectors[:1], texts[:1])
    reference.observe_vectors(vectors[1:], texts[1:])
    assert rec.checkpoint_step is None and rec.replayed == 2
    assert rec.memory.weight_hash == reference.weight_hash and rec.memory.step == 3
    assert "r1" in rec.results and "r2" in rec.results and "bad" not in rec.results


def _two_autos(storage):
    """Auto-checkpoints at step 0 and 1 with the write between them in the WAL."""
    from memory import MemoryConfig, NeuralMemory

    config = MemoryConfig.from_dict(register(storage, Q))
    ckpts = Checkpoints(storage, Q)
    memory = NeuralMemory(config)
    first = ckpts.save_auto(to_parts(memory), step=0, weight_hash=memory.weight_hash)
    vectors = encode(["kept by the wal"])
    storage.metadata.wal_append(Q, make_entry(1, vectors, ["kept by the wal"], None, None, "r1"))
    memory.observe_vectors(vectors, ["kept by the wal"])
    second = ckpts.save_auto(to_parts(memory), step=1, weight_hash=memory.weight_hash)
    assert second["tag"] > first["tag"]
    return config, memory, first, second


def _damage(storage, info, how: str = "truncate") -> None:
    path = storage.settings.checkpoint_dir / info["object_key"]
    path.write_bytes(path.read_bytes()[:-10] if how == "truncate" else b"garbage")


def test_fallback_to_older_checkpoint_then_to_genesis_when_the_log_reaches_back(local_storage):
    config, memory, first, second = _two_autos(local_storage)
    _damage(local_storage, second)
    rec = recover(local_storage, Q, config, remember=10)
    assert rec.checkpoint_step == 0 and rec.replayed == 1 and rec.fell_back
    assert rec.memory.weight_hash == memory.weight_hash

    _damage(local_storage, first, "garbage")  # no checkpoint loads, but the log starts at step 1
    rec = recover(local_storage, Q, config, remember=10)
    assert rec.checkpoint_step is None and rec.replayed == 1 and rec.fell_back
    assert rec.memory.weight_hash == memory.weight_hash


def test_genesis_is_refused_when_the_log_was_trimmed(local_storage):
    config, _, first, second = _two_autos(local_storage)
    _damage(local_storage, first)
    _damage(local_storage, second)
    local_storage.metadata.wal_trim_through(Q, 1)
    with pytest.raises(CheckpointCorrupt, match="cannot be rebuilt"):
        recover(local_storage, Q, config, remember=10)


def test_checkpoints_share_bytes_and_old_single_blob_checkpoints_still_load(local_storage):
    """A fork's first checkpoint costs a manifest; a checkpoint after one more observation adds
    the memory's head part, not its episode segments; a checkpoint object written before
    manifests (one blob of the memory's format 1) still recovers."""
    import json
    from pathlib import Path

    from memory import MemoryConfig, NeuralMemory
    from storage.keys import object_key

    full = {"encoder": "hash"}  # the default network: its weights are what every observation changes
    config = MemoryConfig.from_dict(register(local_storage, Q, full))
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{k}" for k in rng.integers(0, 50_000, 12)) for _ in range(2100)]
    vectors = encode(texts)
    memory = NeuralMemory(config)
    for i in range(0, len(texts), 300):
        memory.observe_vectors(vectors[i:i + 300], texts[i:i + 300])
    ckpts = Checkpoints(local_storage, Q)
    base = ckpts.save_auto(to_parts(memory), step=memory.step, weight_hash=memory.weight_hash)
    assert base["stored"] >= base["size"]

    register(local_storage, "acme/fork", full)
    fork = Checkpoints(local_storage, "acme/fork").copy_auto(base)
    assert fork["stored"] < 4096 and fork["size"] == base["size"]
    assert recover(local_storage, "acme/fork", config, remember=1).memory.weight_hash == memory.weight_hash

    memory.observe_vectors(encode(["one more"]), ["one more"])
    parts = to_parts(memory)
    assert len(parts) > 2  # a head and episode segments
    after = ckpts.save_auto(parts, step=memory.step, weight_hash=memory.weight_hash)
    assert len(parts["head"]) <= after["stored"] <= len(parts["head"]) + 4096 < after["size"]

    data = Path(__file__).resolve().parents[1] / "memory" / "data"
    expected = json.loads((data / "state_v1.json").read_text())
    register(local_storage, "acme/old", full)
    key = object_key("acme/old", "auto@000000000001", nonce="abc")
    stored = local_storage.checkpoints.put(key, (data / "state_v1.nmem").read_bytes())
    local_storage.metadata.add_checkpoint("acme/old", "auto@000000000001", {
        "object_key": key, "sha256": stored["sha256"], "size": stored["size"], "step": expected["step"],
        "weight_hash": expected["weight_hash"]})
    rec = recover(local_storage, "acme/old", config, remember=1)
    assert rec.checkpoint_step == expected["step"] and rec.memory.weight_hash == expected["weight_hash"]


def test_genesis_is_refused_when_it_would_not_reproduce_the_checkpoints(local_storage):
    """A step-0 checkpoint that is not the config's genesis (consolidated, imported, forked):
    replaying the log on a fresh memory would give other weights, so recovery refuses."""
    from memory import NeuralMemory

    config, memory, first, second = _two_autos(local_storage)
    _damage(local_storage, second)
    local_storage.metadata.delete_checkpoint(Q, first["tag"])
    other = NeuralMemory(config)
    other.observe_vectors(encode(["something else"]), ["something else"])
    other.step = 0  # a different state recorded at step 0
    Checkpoints(local_storage, Q).save_auto(to_parts(other), step=0, weight_hash=other.weight_hash)
    local_storage.metadata.delete_checkpoint(Q, second["tag"])  # order: the step-0 one newest
    bad = Checkpoints(local_storage, Q).save_auto(to_parts(memory), step=1, weight_hash=memory.weight_hash)
    _damage(local_storage, bad)
    _damage(local_storage, Checkpoints(local_storage, Q).autos()[0])
    with pytest.raises(CheckpointCorrupt, match="cannot be rebuilt"):
        recover(local_storage, Q, config, remember=10)


def test_an_entry_that_fails_on_replay_is_dropped_and_the_rebuild_starts_over(local_storage, monkeypatch):
    """A logged write that raises half-way (after touching the weights) on replay: the rebuild
    starts again without it, and the log loses it, so no later replay meets it."""
    from memory import MemoryConfig, NeuralMemory

    config = MemoryConfig.from_dict(register(local_storage, Q))
    texts = ["first fact", "poison", "third fact"]
    vectors = encode(texts)
    for step, (i, rid) in enumerate([(0, "r1"), (1, "r2"), (2, "r3")], start=1):
        local_storage.metadata.wal_append(Q, make_entry(step if i < 2 else 2, vectors[i:i + 1],
                                                        [texts[i]], None, None, rid))
    real = NeuralMemory.observe_vectors

    def touch_then_fail(self, vecs, txts, **kwargs):
        result = real(self, vecs, txts, **kwargs)
        if txts == ["poison"]:
            raise ZeroDivisionError("half applied")
        return result

    monkeypatch.setattr(NeuralMemory, "observe_vectors", touch_then_fail)
    rec = recover(local_storage, Q, config, remember=10)
    monkeypatch.undo()
    reference = NeuralMemory(config)
    reference.observe_vectors(vectors[:1], texts[:1])
    reference.observe_vectors(vectors[2:], texts[2:])
    assert rec.memory.step == 2 and rec.memory.weight_hash == reference.weight_hash
    assert [e["texts"] for e in local_storage.metadata.wal_read_after(Q, 0)] == [["first fact"], ["third fact"]]
    assert "r2" not in rec.results and "r3" in rec.results


def _crafted(change_head=None, change_outer=None) -> bytes:
    """A small memory's image with its head's fields / arrays or its outer fields changed by
    `change_*` (in place), repacked with every hash right: what a hand-made file can hold."""
    from memory import MemoryConfig, NeuralMemory, codec

    memory = NeuralMemory(MemoryConfig.from_dict({"encoder": "hash"}))
    memory.observe(["a fact one", "another fact two", "third fact here"])
    outer, parts = codec.unpack(memory.to_bytes(), "neural-memory")
    parts = {name: array.tobytes() for name, array in parts.items()}
    fields, arrays = codec.unpack(parts["head"], "head")
    fields = {k: v for k, v in fields.items() if k not in ("kind", "format_version", "arrays", "payload_sha256")}
    arrays = {name: np.array(array) for name, array in arrays.items()}
    if change_head:
        change_head(fields, arrays)
    parts["head"] = codec.pack("head", fields, arrays)
    outer = {"parts": sorted(parts)}
    if change_outer:
        change_outer(outer)
    return codec.pack("neural-memory", outer, {n: np.frombuffer(parts[n], dtype=np.uint8) for n in sorted(parts)})


@pytest.mark.parametrize("change_head, change_outer", [
    # indexes out of range: every check passed, then observe, consolidate and explain answered 500
    (lambda f, a: a.update(hot_members=np.full((3, 4), 10**6, np.int64)), None),
    (lambda f, a: a.update(hot_domain=np.full(3, 99, np.int32)), None),
    # fields and arrays of the wrong type or length: 500 at the import
    (lambda f, a: f.update(step="abc"), None),
    (lambda f, a: f.update(domain_names=5), None),
    (lambda f, a: a.update(tail_text_bytes=np.frombuffer(b"\xff" * 41, np.uint8)), None),
    (lambda f, a: a.update(tail_steps=np.array([1], np.int64)), None),
    (None, lambda o: o.update(parts="head")),
    (None, lambda o: o.update(parts=["head", "ewc/0"])),
], ids=["members-out-of-range", "domain-out-of-range", "step-text", "domain-names-int", "text-not-utf8",
        "tail-length", "parts-a-string", "part-missing"])
def test_a_crafted_state_is_refused_at_import_not_when_used(change_head, change_outer):
    from actors.durability import blob_to_parts
    from errors import IncompatibleState

    with pytest.raises(IncompatibleState, match="healthy memory"):
        blob_to_parts(_crafted(change_head, change_outer))
    parts, held = blob_to_parts(_crafted())  # the same memory untouched is taken
    assert held["step"] == 3 and "head" in parts
