"""MetadataStore contract (registry, stats, checkpoint index, lineage, history) on every Redis backend."""

from __future__ import annotations

import threading

import pytest

from errors import (
    Busy,
    CheckpointConflict,
    CheckpointNotFound,
    InvalidInput,
    MemoryExists,
    MemoryNotFound,
    QuotaExceeded,
)
from storage import MetadataStore, object_key
from storage.metadata import HISTORY_TEXT_LIMIT


def _record(**extra: object) -> dict:
    return {"config": {"dim": 384, "layers": [2, 3], "empty": []}, "encoder": "minilm", **extra}


def _stats(store: MetadataStore, name: str, n: int, domains: list[str], step: int, h: str) -> None:
    store.record_write(name, observations=n, domains=domains, step=step, weight_hash=h)


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


def test_a_tenant_limit_holds_against_concurrent_creations(metadata_store: MetadataStore) -> None:
    """The count and the insert are one step: sixteen threads racing for a limit of five
    register exactly five, a resend of a landed record is still done, another tenant is free."""
    _register(metadata_store, "acme/first")
    refused: list[str] = []

    def create(i: int) -> None:
        try:
            metadata_store.create_memory(f"acme/m{i}", _record(), tenant_limit=5)
        except QuotaExceeded as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metadata_store.count_memories("acme") == 5 and len(refused) == 12
    assert "acme already has 5 memories" in refused[0]
    landed = next(m for m in metadata_store.list_memories("acme") if m["name"] != "acme/first")
    assert metadata_store.create_memory(landed["name"], landed, tenant_limit=5) == landed  # a resend
    metadata_store.create_memory("other/m0", _record(), tenant_limit=5)
    with pytest.raises(MemoryExists):  # a taken name is named as taken, not as over the limit
        metadata_store.create_memory("acme/first", _record(), tenant_limit=5)


def test_missing_memory_is_not_found_everywhere(metadata_store: MetadataStore) -> None:
    name = "acme/ghost"
    calls = [
        lambda: metadata_store.get_memory(name),
        lambda: metadata_store.delete_memory(name),
        lambda: metadata_store.get_stats(name),
        lambda: metadata_store.record_write(name, observations=1, step=1, weight_hash="h",
                                            history=[{"step": 1, "text": "x"}]),
        lambda: metadata_store.add_checkpoint(name, "v1", {"step": 1}),
        lambda: metadata_store.list_checkpoints(name),
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


def test_stats_accumulate(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    assert metadata_store.get_stats("acme/notes") == {
        "total_observations": 0,
        "domains": [],
        "step": 0,
        "weight_hash": None,
    }
    _stats(metadata_store, "acme/notes", 1, ["code"], 1, "h1")
    _stats(metadata_store, "acme/notes", 2, ["code", "math"], 3, "h3")
    stats = metadata_store.get_stats("acme/notes")
    assert stats["total_observations"] == 3
    assert stats["domains"] == ["code", "math"]
    assert (stats["step"], stats["weight_hash"]) == (3, "h3")
    # observations=0 (e.g. after a restore) moves step/hash but leaves the count alone.
    _stats(metadata_store, "acme/notes", 0, [], 1, "h1")
    after = metadata_store.get_stats("acme/notes")
    assert after["total_observations"] == 3
    assert (after["step"], after["weight_hash"]) == (1, "h1")


def test_a_write_record_sent_again_is_applied_once(metadata_store: MetadataStore) -> None:
    """redis-py resends a script whose reply was lost to a restart; the first one may have been
    applied: the count and the history must not take the write twice. After a restore moved
    the stats back, the next writes (later steps than the restored one) count again."""
    _register(metadata_store, "acme/notes")
    items = [{"step": step, "text": f"t{step}", "surprise": 0.1, "weight_hash": "h"} for step in (1, 2)]
    for _ in range(2):
        metadata_store.record_write("acme/notes", observations=2, step=2, weight_hash="h2", history=items)
    assert metadata_store.get_stats("acme/notes")["total_observations"] == 2
    assert [i["step"] for i in metadata_store.history("acme/notes")] == [1, 2]
    metadata_store.record_write("acme/notes", step=1, weight_hash="h1")  # a restore to step 1
    metadata_store.record_write("acme/notes", observations=1, step=2, weight_hash="h2b",
                                history=[{"step": 2, "text": "after", "surprise": 0.1, "weight_hash": "h2b"}])
    stats = metadata_store.get_stats("acme/notes")
    assert (stats["total_observations"], stats["step"], stats["weight_hash"]) == (3, 2, "h2b")
    assert [i["text"] for i in metadata_store.history("acme/notes")] == ["t1", "t2", "after"]


def test_a_write_record_dropped_then_overtaken_by_a_stats_sync_still_lands(metadata_store: MetadataStore) -> None:
    """A record dropped while Redis was away, then a stats-only sync to a later step (a
    restart that found the log ahead of the stats): when the next restart sends the record
    again it lands, rather than being taken for a resend of one already applied."""
    _register(metadata_store, "acme/notes")
    first = {"step": 1, "text": "t1", "surprise": 0.1, "weight_hash": "h1"}
    metadata_store.record_write("acme/notes", observations=1, step=1, weight_hash="h1", history=[first])
    metadata_store.record_write("acme/notes", step=3, weight_hash="h3")  # the sync; steps 2-3 unrecorded
    assert metadata_store.get_stats("acme/notes")["step"] == 3
    late = [{"step": step, "text": f"t{step}", "surprise": 0.1, "weight_hash": f"h{step}"} for step in (2, 3)]
    metadata_store.record_write("acme/notes", observations=2, step=3, weight_hash="h3", history=late)
    metadata_store.record_write("acme/notes", observations=2, step=3, weight_hash="h3", history=late)  # resent
    stats = metadata_store.get_stats("acme/notes")
    assert (stats["total_observations"], stats["step"], stats["weight_hash"]) == (3, 3, "h3")
    assert [i["text"] for i in metadata_store.history("acme/notes")] == ["t1", "t2", "t3"]


def test_stats_refuse_bad_numbers(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    with pytest.raises(InvalidInput):
        _stats(metadata_store, "acme/notes", -1, [], 0, "h")
    with pytest.raises(InvalidInput):
        _stats(metadata_store, "acme/notes", 1, [""], 0, "h")
    with pytest.raises(InvalidInput):
        _stats(metadata_store, "acme/notes", 1, [], -3, "h")


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
    _register(metadata_store, "acme/empty")  # many at once: each as listed alone, unknown ones empty
    assert metadata_store.list_checkpoints_of(["acme/notes", "acme/empty", "acme/gone"]) == \
        {"acme/notes": listed, "acme/empty": [], "acme/gone": []}
    assert metadata_store.list_checkpoints_of([]) == {}
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


def test_lineage_is_the_registry_record(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/base")
    metadata_store.create_memory("acme/alice", _record(parent="acme/base", source_tag="v1"))
    record = metadata_store.get_memory("acme/alice")
    assert (record["parent"], record["source_tag"]) == ("acme/base", "v1")
    assert metadata_store.get_memory("acme/base")["parent"] is None
    with pytest.raises(InvalidInput):
        metadata_store.create_memory("acme/bad", _record(parent="not qualified"))


def test_delete_memory_removes_everything(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/base")
    metadata_store.create_memory("acme/child", _record(parent="acme/base", source_tag="v1"))
    metadata_store.record_write("acme/child", observations=1, domains=["d"], step=1, weight_hash="h",
                                history=[{"step": 1, "text": "t", "surprise": 0.5}])
    metadata_store.add_checkpoint("acme/child", "v1", {"step": 1})
    metadata_store.wal_append("acme/child", {"step": 1, "vectors": b"\x01" * 16, "texts": ["t"]})
    metadata_store.create_memory("acme/grandchild", _record(parent="acme/child", source_tag="v1"))

    metadata_store.delete_memory("acme/child")
    assert not metadata_store.memory_exists("acme/child")
    pattern = f"{metadata_store.keys.prefix}:mem:acme/child:*"
    assert list(metadata_store.client.scan_iter(match=pattern)) == []
    # The grandchild survives and still names its (now deleted) parent.
    assert metadata_store.get_memory("acme/grandchild")["parent"] == "acme/child"
    with pytest.raises(MemoryNotFound):
        metadata_store.delete_memory("acme/child")
    # The name can be reused, starting from a clean slate.
    _register(metadata_store, "acme/child")
    assert metadata_store.get_stats("acme/child")["total_observations"] == 0
    assert metadata_store.list_checkpoints("acme/child") == []


def test_history_is_capped_newest_last(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme/notes")
    for first in range(1, 31, 3):  # writes of 3 items each, as a batch observe records them
        items = [{"step": step, "text": f"t{step}", "surprise": step / 100, "weight_hash": "h"}
                 for step in range(first, first + 3)]
        metadata_store.record_write("acme/notes", observations=3, step=first + 2, weight_hash="h",
                                    history=items, history_cap=25)
    items = metadata_store.history("acme/notes", limit=200)
    assert [i["step"] for i in items] == list(range(6, 31))
    assert items[-1]["text"] == "t30" and items[-1]["at"]
    assert [i["step"] for i in metadata_store.history("acme/notes", limit=3)] == [28, 29, 30]
    metadata_store.record_write("acme/notes", step=31, weight_hash="h", history=[{"step": 31, "text": "x" * 5000}])
    assert len(metadata_store.history("acme/notes", limit=1)[0]["text"]) <= HISTORY_TEXT_LIMIT


def test_write_records_are_kept_newest_last_capped_by_count_once_each_and_swapped_by_a_forget(
        metadata_store: MetadataStore) -> None:
    """A write's record lands with its stats (once, however often the script is resent), the
    newest `writes_cap` are kept whatever their size, floats and fingerprints come back exact,
    a forget's swap replaces them whole, and the memory's delete takes them."""
    _register(metadata_store, "acme/notes")
    answer = {"surprise": 0.1 + 0.2, "surprises": [1 / 3, 2 / 3], "weight_delta": 1e-300, "step": 2,
              "weight_hash": "h", "patterns_activated": ["ü ✓"]}
    fingerprint = "ab" * 32
    for step in range(2, 12, 2):
        record = {"request_id": f"w{step}", "fingerprint": fingerprint, "answer": {**answer, "step": step}}
        for _resent in range(2):
            metadata_store.record_write("acme/notes", observations=2, step=step, weight_hash="h", write=record,
                                        writes_cap=3)
    metadata_store.record_write("acme/notes", step=11, weight_hash="h")  # a sync: no write, no record
    writes = metadata_store.recent_writes("acme/notes")
    assert [w["request_id"] for w in writes] == ["w6", "w8", "w10"]
    assert writes[-1] == {"request_id": "w10", "fingerprint": fingerprint, "answer": {**answer, "step": 10}}
    assert metadata_store.get_stats("acme/notes")["total_observations"] == 10
    with pytest.raises(InvalidInput, match="fingerprint"):
        metadata_store.record_write("acme/notes", observations=1, step=12, weight_hash="h",
                                    write={"request_id": "w12", "fingerprint": "not hex", "answer": None})
    kept = [{"request_id": "w8", "fingerprint": None, "answer": None}, writes[-1]]
    metadata_store.forget_commit("acme/notes", {"job": {"job_id": "j", "status": "done"}, "writes": kept},
                                 [], None)
    assert metadata_store.recent_writes("acme/notes") == kept
    metadata_store.forget_commit("acme/notes", {"job": {"job_id": "k", "status": "done"}}, None, None)
    assert metadata_store.recent_writes("acme/notes") == kept  # a plan without writes keeps them
    metadata_store.delete_memory("acme/notes")
    _register(metadata_store, "acme/notes")
    assert metadata_store.recent_writes("acme/notes") == []


def test_a_record_being_created_is_deleted_only_by_its_own_attempt(metadata_store: MetadataStore) -> None:
    """A plain delete refuses it (its creator would write into whatever takes the name next);
    its own attempt's clean-up deletes it, after a claim swapped in one step."""
    mark = {"attempt": "a1", "since": 0.0}
    stored = metadata_store.create_memory("acme/young", {"config": {}, "creating": mark})
    with pytest.raises(Busy, match="being created"):
        metadata_store.delete_memory("acme/young")
    claimed = {**stored, "creating": {**mark, "cleared_by": "g1"}}
    metadata_store.replace_record("acme/young", stored, claimed)
    metadata_store.replace_record("acme/young", stored, claimed)  # a resend: already done
    with pytest.raises(MemoryNotFound):  # a second clearer's claim, against what it read before
        metadata_store.replace_record("acme/young", stored, {**stored, "creating": {**mark, "cleared_by": "g2"}})
    with pytest.raises(MemoryNotFound):
        metadata_store.delete_memory("acme/young", creating="a2")
    metadata_store.delete_memory("acme/young", creating="a1")
    assert not metadata_store.memory_exists("acme/young")
