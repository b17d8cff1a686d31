"""MetadataStore contract (registry, stats, checkpoint index, lineage, history) on every Redis backend."""

from __future__ import annotations

import threading

import pytest

from errors import (
    CheckpointConflict,
    CheckpointNotFound,
    InvalidInput,
    MemoryExists,
    MemoryNotFound,
)
from storage import MetadataStore, object_key


def _record(**extra: object) -> dict:
    return {"config": {"dim": 384, "layers": [2, 3], "empty": []}, "encoder": "minilm", **extra}


def _stats(store: MetadataStore, name: str, n: int, surprise: float, domains: list[str], step: int, h: str) -> None:
    store.update_stats(name, observations=n, surprise_mean=surprise, domains=domains, step=step, weight_hash=h)


def _register(store: MetadataStore, *names: str) -> None:
    for name in names:
        store.create_memory(name, _record())


def test_ping(metadata_store: MetadataStore) -> None:
    metadata_store.ping()


def test_create_get_exists(metadata_store: MetadataStore) -> None:
    metadata_store.create_memory("acme/notes", _record(created_at="2026-01-01T00:00:00+00:00"))
    record = metadata_store.get_memory("acme/notes")
    assert record == {
        "name": "acme/notes",
        "tenant": "acme",
        "parent": None,
        "source_tag": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        **_record(),
    }
    assert metadata_store.memory_exists("acme/notes")
    assert not metadata_store.memory_exists("acme/other")


def test_create_twice_is_memory_exists(metadata_store: MetadataStore) -> None:
    metadata_store.create_memory("acme/notes", _record(encoder="minilm"))
    with pytest.raises(MemoryExists):
        metadata_store.create_memory("acme/notes", _record(encoder="hash"))
    assert metadata_store.get_memory("acme/notes")["encoder"] == "minilm"


def test_missing_memory_is_not_found_everywhere(metadata_store: MetadataStore) -> None:
    name = "acme/ghost"
    calls = [
        lambda: metadata_store.get_memory(name),
        lambda: metadata_store.delete_memory(name),
        lambda: metadata_store.get_stats(name),
        lambda: metadata_store.update_stats(
            name, observations=1, surprise_mean=0.5, domains=[], step=1, weight_hash="h"
        ),
        lambda: metadata_store.add_checkpoint(name, "v1", {"step": 1}),
        lambda: metadata_store.list_checkpoints(name),
        lambda: metadata_store.lineage(name),
        lambda: metadata_store.history_append(name, {"step": 1, "text": "x"}),
        lambda: metadata_store.history(name),
        lambda: metadata_store.wal_append(name, {"step": 1, "vectors": b"", "texts": []}),
        lambda: metadata_store.wal_read_after(name, 0),
    ]
    for call in calls:
        with pytest.raises(MemoryNotFound):
            call()
    # None of those calls may leave keys behind for a memory that does not exist.
    assert not list(metadata_store.client.scan_iter(match=f"{metadata_store.keys.prefix}:mem:*"))


@pytest.mark.parametrize("bad", ["notes", "acme/", "/notes", "acme/no/pe", "acme/UP per", "ac:me/x", "acme/-x", ""])
def test_bad_names_are_invalid_input(metadata_store: MetadataStore, bad: str) -> None:
    with pytest.raises(InvalidInput):
        metadata_store.create_memory(bad, _record())


def test_list_memories_by_tenant(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/b", "acme/a", "globex/a", "acmex/z")
    assert [r["name"] for r in metadata_store.list_memories("acme")] == ["acme/a", "acme/b"]
    assert [r["name"] for r in metadata_store.list_memories("globex")] == ["globex/a"]
    assert len(metadata_store.list_memories()) == 4
    assert metadata_store.list_memories("nobody") == []


def test_stats_accumulate_with_ema(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    assert metadata_store.get_stats("acme/notes") == {
        "total_observations": 0,
        "avg_surprise": 0.0,
        "domains": [],
        "step": 0,
        "weight_hash": None,
    }
    _stats(metadata_store, "acme/notes", 1, 0.8, ["code"], 1, "h1")
    _stats(metadata_store, "acme/notes", 2, 0.2, ["code", "math"], 3, "h3")
    stats = metadata_store.get_stats("acme/notes")
    w = 1 - (1 - metadata_store.ema_alpha) ** 2  # a batch of 2 counts as two EMA steps
    assert stats["avg_surprise"] == pytest.approx(w * 0.2 + (1 - w) * 0.8)
    assert stats["total_observations"] == 3
    assert stats["domains"] == ["code", "math"]
    assert (stats["step"], stats["weight_hash"]) == (3, "h3")
    # observations=0 (e.g. after a restore) moves step/hash but leaves counts and EMA alone.
    _stats(metadata_store, "acme/notes", 0, 0.0, [], 1, "h1")
    after = metadata_store.get_stats("acme/notes")
    assert after["avg_surprise"] == stats["avg_surprise"] and after["total_observations"] == 3
    assert (after["step"], after["weight_hash"]) == (1, "h1")


def test_stats_refuse_bad_numbers(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    with pytest.raises(InvalidInput):
        _stats(metadata_store, "acme/notes", -1, 0.1, [], 0, "h")
    with pytest.raises(InvalidInput):
        _stats(metadata_store, "acme/notes", 1, float("nan"), [], 0, "h")
    with pytest.raises(InvalidInput):
        _stats(metadata_store, "acme/notes", 1, 0.1, [""], 0, "h")


def test_checkpoint_index(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    assert metadata_store.list_checkpoints("acme/notes") == []
    assert metadata_store.latest_checkpoint("acme/notes") is None
    for step, tag in enumerate(["b-first", "a-second", "c-third"], start=1):
        info = {"object_key": object_key("acme/notes", tag), "weight_hash": f"h{step}", "size": 10, "step": step}
        metadata_store.add_checkpoint("acme/notes", tag, {**info, "description": f"d{step}"})
    listed = metadata_store.list_checkpoints("acme/notes")
    assert [c["tag"] for c in listed] == ["b-first", "a-second", "c-third"]  # creation order, not name
    assert listed[0]["object_key"] == "acme/notes/b-first.ckpt" and listed[0]["created_at"]
    assert metadata_store.latest_checkpoint("acme/notes")["tag"] == "c-third"
    assert metadata_store.get_checkpoint("acme/notes", "a-second")["step"] == 2
    with pytest.raises(CheckpointConflict):
        metadata_store.add_checkpoint("acme/notes", "a-second", {"step": 99})
    assert metadata_store.get_checkpoint("acme/notes", "a-second")["step"] == 2
    metadata_store.delete_checkpoint("acme/notes", "c-third")
    assert metadata_store.latest_checkpoint("acme/notes")["tag"] == "a-second"
    with pytest.raises(CheckpointNotFound):
        metadata_store.get_checkpoint("acme/notes", "c-third")
    with pytest.raises(CheckpointNotFound):
        metadata_store.delete_checkpoint("acme/notes", "c-third")


def test_eight_threads_race_for_one_tag(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    barrier = threading.Barrier(8)
    results: list[object] = [None] * 8

    def claim(i: int) -> None:
        barrier.wait()
        try:
            metadata_store.add_checkpoint("acme/notes", "v1", {"step": i, "writer": i})
            results[i] = "won"
        except CheckpointConflict as exc:
            results[i] = exc

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1, results
    assert sum(isinstance(r, CheckpointConflict) for r in results) == 7
    winner = results.index("won")
    assert metadata_store.get_checkpoint("acme/notes", "v1")["writer"] == winner
    assert [c["tag"] for c in metadata_store.list_checkpoints("acme/notes")] == ["v1"]


def test_lineage(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/base")
    metadata_store.create_memory("acme/alice", _record(parent="acme/base", source_tag="v1"))
    metadata_store.create_memory("acme/bob", _record())
    metadata_store.add_child("acme/base", "acme/bob", "v2")
    metadata_store.add_child("acme/base", "acme/bob", "v2")  # idempotent
    assert metadata_store.lineage("acme/base") == {
        "parent": None,
        "source_tag": None,
        "children": ["acme/alice", "acme/bob"],
    }
    assert metadata_store.lineage("acme/bob") == {"parent": "acme/base", "source_tag": "v2", "children": []}
    assert metadata_store.get_memory("acme/bob")["config"] == _record()["config"]  # record kept intact
    with pytest.raises(MemoryNotFound):
        metadata_store.add_child("acme/nobody", "acme/bob", None)
    with pytest.raises(MemoryNotFound):
        metadata_store.add_child("acme/base", "acme/nobody", None)


def test_delete_memory_removes_everything(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/base")
    metadata_store.create_memory("acme/child", _record(parent="acme/base", source_tag="v1"))
    _stats(metadata_store, "acme/child", 1, 0.5, ["d"], 1, "h")
    metadata_store.add_checkpoint("acme/child", "v1", {"step": 1})
    metadata_store.wal_append("acme/child", {"step": 1, "vectors": b"\x01" * 16, "texts": ["t"]})
    metadata_store.history_append("acme/child", {"step": 1, "text": "t", "surprise": 0.5})
    metadata_store.create_memory("acme/grandchild", _record(parent="acme/child", source_tag="v1"))

    metadata_store.delete_memory("acme/child")
    assert not metadata_store.memory_exists("acme/child")
    assert metadata_store.lineage("acme/base")["children"] == []
    pattern = f"{metadata_store.keys.prefix}:mem:acme/child:*"
    assert list(metadata_store.client.scan_iter(match=pattern)) == []
    # The grandchild survives and still names its (now deleted) parent.
    assert metadata_store.lineage("acme/grandchild")["parent"] == "acme/child"
    with pytest.raises(MemoryNotFound):
        metadata_store.delete_memory("acme/child")
    # The name can be reused, starting from a clean slate.
    _register(metadata_store, "acme/child")
    assert metadata_store.get_stats("acme/child")["total_observations"] == 0
    assert metadata_store.list_checkpoints("acme/child") == []


def test_history_is_capped_newest_last(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    for step in range(1, 31):
        metadata_store.history_append(
            "acme/notes", {"step": step, "text": f"t{step}", "surprise": step / 100, "weight_hash": "h"}, cap=25
        )
    items = metadata_store.history("acme/notes", limit=200)
    assert [i["step"] for i in items] == list(range(6, 31))
    assert items[-1]["text"] == "t30" and items[-1]["at"]
    assert [i["step"] for i in metadata_store.history("acme/notes", limit=3)] == [28, 29, 30]
    metadata_store.history_append("acme/notes", {"step": 31, "text": "x" * 5000})
    assert len(metadata_store.history("acme/notes", limit=1)[0]["text"]) <= 1000
