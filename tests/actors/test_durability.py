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


def test_fallback_to_older_checkpoint_and_refusal_when_none_loads(local_storage):
    from memory import MemoryConfig, NeuralMemory

    config = MemoryConfig.from_dict(register(local_storage, Q))
    ckpts = Checkpoints(local_storage, Q)
    memory = NeuralMemory(config)
    first = ckpts.save_auto(to_parts(memory), step=0, weight_hash=memory.weight_hash)
    vectors = encode(["kept by the wal"])
    local_storage.metadata.wal_append(Q, make_entry(1, vectors, ["kept by the wal"], None, None, "r1"))
    memory.observe_vectors(vectors, ["kept by the wal"])
    second = ckpts.save_auto(to_parts(memory), step=1, weight_hash=memory.weight_hash)
    assert second["tag"] > first["tag"]

    path = local_storage.settings.checkpoint_dir / second["object_key"]
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    rec = recover(local_storage, Q, config, remember=10)
    assert rec.checkpoint_step == 0 and rec.replayed == 1 and rec.memory.weight_hash == memory.weight_hash

    first_path = local_storage.settings.checkpoint_dir / first["object_key"]
    first_path.write_bytes(b"garbage")
    with pytest.raises(CheckpointCorrupt, match="no auto-checkpoint"):
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
