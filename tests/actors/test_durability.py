"""Recovery building blocks without Ray: WAL entry round trip, replay, checkpoint fallback."""

from __future__ import annotations

import numpy as np
import pytest

from actors.durability import Checkpoints, recover
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
    first = ckpts.save_auto(memory.to_bytes(), step=0, weight_hash=memory.weight_hash)
    vectors = encode(["kept by the wal"])
    local_storage.metadata.wal_append(Q, make_entry(1, vectors, ["kept by the wal"], None, None, "r1"))
    memory.observe_vectors(vectors, ["kept by the wal"])
    second = ckpts.save_auto(memory.to_bytes(), step=1, weight_hash=memory.weight_hash)
    assert second["tag"] > first["tag"]

    path = local_storage.settings.checkpoint_dir / second["object_key"]
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    rec = recover(local_storage, Q, config, remember=10)
    assert rec.checkpoint_step == 0 and rec.replayed == 1 and rec.memory.weight_hash == memory.weight_hash

    first_path = local_storage.settings.checkpoint_dir / first["object_key"]
    first_path.write_bytes(b"garbage")
    with pytest.raises(CheckpointCorrupt, match="no auto-checkpoint"):
        recover(local_storage, Q, config, remember=10)
