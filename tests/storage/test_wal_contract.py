"""Write-ahead log contract on every Redis backend: append, read after a step, trim, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from errors import InvalidInput, MemoryNotFound, Superseded
from storage import MetadataStore


def _entry(step: int, n: int = 2, **extra: object) -> dict:
    vectors = np.random.default_rng(step).standard_normal((n, 8)).astype(np.float32)
    return {
        "step": step,
        "vectors": vectors.tobytes(),
        "texts": [f"text {step}.{i}" for i in range(n)],
        "domain": "code" if step % 2 else None,
        "options": {"learning_rate": 0.01 * step} if step % 3 else {},
        **extra,
    }


@pytest.fixture
def wal_store(metadata_store: MetadataStore) -> MetadataStore:
    metadata_store.create_memory("acme/notes", {"config": {}})
    return metadata_store


def test_round_trip_preserves_every_field(wal_store: MetadataStore) -> None:
    entries = [_entry(step) for step in range(1, 6)]
    ids = [wal_store.wal_append("acme/notes", e) for e in entries]
    assert len(set(ids)) == 5
    got = wal_store.wal_read_after("acme/notes", 0)
    assert got == entries
    vectors = np.frombuffer(got[0]["vectors"], dtype=np.float32).reshape(2, 8)
    np.testing.assert_array_equal(vectors, np.frombuffer(entries[0]["vectors"], dtype=np.float32).reshape(2, 8))


def test_extra_fields_round_trip(wal_store: MetadataStore) -> None:
    wal_store.wal_append("acme/notes", _entry(1, request_id="r-1"))
    assert wal_store.wal_read_after("acme/notes", 0)[0]["request_id"] == "r-1"


def test_read_after_step(wal_store: MetadataStore) -> None:
    for step in range(1, 11):
        wal_store.wal_append("acme/notes", _entry(step))
    assert [e["step"] for e in wal_store.wal_read_after("acme/notes", 7)] == [8, 9, 10]
    assert wal_store.wal_read_after("acme/notes", 10) == []


def test_read_and_trim_span_many_pages(wal_store: MetadataStore) -> None:
    wal_store.wal_page = 7  # small pages, so 45 entries take several XRANGE/XDEL round trips
    for step in range(1, 46):
        wal_store.wal_append("acme/notes", {"step": step, "vectors": b"v", "texts": []})
    assert [e["step"] for e in wal_store.wal_read_after("acme/notes", 10)] == list(range(11, 46))
    assert [e["step"] for e in wal_store.wal_read_after("acme/notes", 0)] == list(range(1, 46))
    assert wal_store.wal_trim_through("acme/notes", 30) == 30
    assert wal_store.wal_length("acme/notes") == 15


def test_trim_through_checkpoint_step(wal_store: MetadataStore) -> None:
    for step in range(1, 11):
        wal_store.wal_append("acme/notes", _entry(step))
    assert wal_store.wal_trim_through("acme/notes", 6) == 6
    assert wal_store.wal_length("acme/notes") == 4
    assert [e["step"] for e in wal_store.wal_read_after("acme/notes", 0)] == [7, 8, 9, 10]
    assert wal_store.wal_trim_through("acme/notes", 6) == 0
    wal_store.wal_append("acme/notes", _entry(11))
    assert [e["step"] for e in wal_store.wal_read_after("acme/notes", 6)] == [7, 8, 9, 10, 11]


@pytest.mark.parametrize(
    "bad",
    [
        {"vectors": b"", "texts": []},
        {"step": -1, "vectors": b"", "texts": []},
        {"step": 1, "vectors": [0.1, 0.2], "texts": []},
        {"step": 1, "vectors": b"", "texts": "one string"},
        {"step": 1, "vectors": b"", "texts": [], "options": {"f": object()}},
    ],
)
def test_bad_entries_are_invalid_input(wal_store: MetadataStore, bad: dict) -> None:
    with pytest.raises(InvalidInput):
        wal_store.wal_append("acme/notes", bad)
    assert wal_store.wal_length("acme/notes") == 0


def test_sixteen_threads_lose_nothing_and_order_is_total(wal_store: MetadataStore) -> None:
    threads_n, per_thread = 16, 50
    barrier = threading.Barrier(threads_n)
    returned: dict[int, list[str]] = {}

    def produce(writer: int) -> None:
        barrier.wait()
        returned[writer] = [
            wal_store.wal_append(
                "acme/notes",
                {"step": seq, "vectors": bytes([writer, seq]), "texts": [f"{writer}:{seq}"], "options": {"w": writer}},
            )
            for seq in range(1, per_thread + 1)
        ]

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    entries = wal_store.wal_read_after("acme/notes", 0)
    assert len(entries) == threads_n * per_thread
    assert {e["texts"][0] for e in entries} == {f"{w}:{s}" for w in range(threads_n) for s in range(1, per_thread + 1)}
    # One total order, consistent with each writer's own order and with the ids handed back.
    for writer in range(threads_n):
        seqs = [e["step"] for e in entries if e["options"]["w"] == writer]
        assert seqs == list(range(1, per_thread + 1))
    stream = wal_store.client.xrange(wal_store.keys.wal("acme/notes"))
    ids = [entry_id.decode() for entry_id, _ in stream]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert sorted(ids) == sorted(i for ids_w in returned.values() for i in ids_w)


def test_drop_removes_unapplied_entries_after_a_step(wal_store: MetadataStore) -> None:
    for step, rid in [(1, "a"), (2, "b"), (3, "c"), (3, "d")]:
        wal_store.wal_append("acme/notes", _entry(step, options={"request_id": rid}))
    assert wal_store.wal_drop("acme/notes", after_step=2, request_id="c") == 1
    assert [e["options"]["request_id"] for e in wal_store.wal_read_after("acme/notes", 0)] == ["a", "b", "d"]
    assert wal_store.wal_drop("acme/notes", after_step=1) == 2
    assert [e["options"]["request_id"] for e in wal_store.wal_read_after("acme/notes", 0)] == ["a"]


def test_only_the_latest_owner_appends_or_drops(wal_store: MetadataStore) -> None:
    """A killed actor's process can still run a call after its successor took the memory and
    read the log: its append or drop must not land (it would fork the log)."""
    first = wal_store.take_ownership("acme/notes")
    wal_store.wal_append("acme/notes", _entry(1, options={"request_id": "a"}), owner=first)
    second = wal_store.take_ownership("acme/notes")
    assert second > first
    with pytest.raises(Superseded):
        wal_store.wal_append("acme/notes", _entry(2, options={"request_id": "stale"}), owner=first)
    with pytest.raises(Superseded):
        wal_store.wal_drop("acme/notes", after_step=0, owner=first)
    with pytest.raises(Superseded):
        wal_store.wal_trim_seq_through("acme/notes", 5, owner=first)
    with pytest.raises(Superseded):
        wal_store.check_owner("acme/notes", first)
    wal_store.check_owner("acme/notes", second)
    wal_store.wal_append("acme/notes", _entry(2, options={"request_id": "b"}), owner=second)
    wal_store.wal_append("acme/notes", _entry(3, options={"request_id": "tool"}))  # unfenced: tools, tests
    assert [e["options"]["request_id"] for e in wal_store.wal_read_after("acme/notes", 0)] == ["a", "b", "tool"]
    assert wal_store.wal_drop("acme/notes", after_step=2, owner=second) == 1
    # A forget job's swap replaces the whole log: all or nothing, and only by the owner.
    plan = {"job": {"job_id": "j1", "status": "done"}, "stats": {"step": 7}}
    with pytest.raises(Superseded):
        wal_store.forget_commit("acme/notes", plan, [], None, owner=first)
    assert len(wal_store.wal_read_after("acme/notes", 0)) == 2 and wal_store.get_stats("acme/notes").get("step") != 7
    wal_store.forget_commit("acme/notes", plan, [], None, owner=second)
    assert wal_store.wal_read_after("acme/notes", 0) == [] and wal_store.get_stats("acme/notes")["step"] == 7

    # A memory made again under the name never hands out a token an actor of the old one holds.
    wal_store.delete_memory("acme/notes")
    assert not wal_store.client.exists(wal_store.keys.owner("acme/notes"))
    wal_store.create_memory("acme/notes", {"config": {}})
    with pytest.raises(Superseded):
        wal_store.wal_append("acme/notes", _entry(1), owner=second)
    assert wal_store.take_ownership("acme/notes") > second
    with pytest.raises(MemoryNotFound):
        wal_store.take_ownership("acme/gone")
