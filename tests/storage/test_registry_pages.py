"""Paged listings of a tenant's memories (storage/registry_pages.py) on every Redis backend."""

from __future__ import annotations

import pytest

from errors import CheckpointConflict, InvalidInput, MemoryExists
from storage import MetadataStore, is_fork_of
from storage.codec import dumps_json


def _register(store: MetadataStore, tenant: str, names: list[str]) -> None:
    for name in names:
        store.create_memory(f"{tenant}/{name}", {"config": {}, "encoder": "hash"})


def _all_pages(store: MetadataStore, tenant: str, limit: int, prefix: str = "") -> list[list[str]]:
    pages, cursor = [], None
    while True:
        records, cursor = store.list_page(tenant, after=cursor, limit=limit, prefix=prefix)
        pages.append([r["name"].split("/", 1)[1] for r in records])
        if cursor is None:
            return pages


def test_pages_walk_every_name_once_in_order(metadata_store: MetadataStore) -> None:
    names = [f"user-{i:03d}" for i in range(23)] + ["alpha", "zeta.1", "team_a"]
    _register(metadata_store, "acme", names)
    _register(metadata_store, "other", ["user-000", "user-999"])
    pages = _all_pages(metadata_store, "acme", 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 5, 1]
    assert [n for p in pages for n in p] == sorted(names)
    assert _all_pages(metadata_store, "acme", 26) == [sorted(names)]


def test_prefix_filters_and_pages(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme", ["user-1", "user-2", "user-3", "users", "usa", "team-user-1"])
    assert _all_pages(metadata_store, "acme", 2, prefix="user-") == [["user-1", "user-2"], ["user-3"]]
    assert _all_pages(metadata_store, "acme", 10, prefix="us") == [["usa", "user-1", "user-2", "user-3", "users"]]
    assert _all_pages(metadata_store, "acme", 10, prefix="nobody") == [[]]


def test_records_carry_steps_and_deleted_memories_leave(metadata_store: MetadataStore) -> None:
    _register(metadata_store, "acme", ["a", "b", "c"])
    metadata_store.record_write("acme/b", step=7, weight_hash="h", observations=7)
    metadata_store.delete_memory("acme/a")
    records, cursor = metadata_store.list_page("acme", limit=10)
    assert [(r["name"], r["step"], r["encoder"]) for r in records] == [("acme/b", 7, "hash"), ("acme/c", 0, "hash")]
    assert cursor is None


def test_a_registry_from_before_paging_is_indexed_once(metadata_store: MetadataStore) -> None:
    for name in ["acme/old-1", "acme/old-2", "beta/old-3"]:  # written without the name sets
        metadata_store.client.hset(metadata_store.keys.registry(), name, dumps_json({"name": name}))
    metadata_store.client.delete(metadata_store.keys.names_marker())
    assert metadata_store.list_page("acme")[0] == []
    assert metadata_store.index_names() == 3
    assert [r["name"] for r in metadata_store.list_page("acme")[0]] == ["acme/old-1", "acme/old-2"]
    assert metadata_store.index_names() == 0


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 1001}, {"after": "Bad Name"},
                                    {"prefix": "UPPER"}, {"prefix": "a*"}])
def test_bad_page_arguments_say_what_to_fix(metadata_store: MetadataStore, kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        metadata_store.list_page("acme", **kwargs)


def test_a_resent_create_or_checkpoint_is_not_a_conflict(metadata_store: MetadataStore) -> None:
    """redis-py resends a command that timed out; if the first attempt was applied, the same
    record (same bytes, created_at included) must count as done, not as taken."""
    record = {"config": {}, "encoder": "hash", "created_at": "2026-01-01T00:00:00+00:00"}
    metadata_store.create_memory("acme/resent", record)
    metadata_store.create_memory("acme/resent", record)  # the resend
    with pytest.raises(MemoryExists):
        metadata_store.create_memory("acme/resent", {**record, "encoder": "minilm"})
    assert [r["name"] for r in metadata_store.list_page("acme")[0]] == ["acme/resent"]
    info = {"object_key": "acme/resent/v1.ckpt", "created_at": "2026-01-01T00:00:00+00:00", "step": 1}
    metadata_store.add_checkpoint("acme/resent", "v1", info)
    metadata_store.add_checkpoint("acme/resent", "v1", info)
    with pytest.raises(CheckpointConflict):
        metadata_store.add_checkpoint("acme/resent", "v1", {**info, "step": 2})
    assert [c["tag"] for c in metadata_store.list_checkpoints("acme/resent")] == ["v1"]


def test_a_fork_belongs_to_its_parent_not_to_a_later_memory_of_that_name(metadata_store):
    """Forks name their parent's creation; forks from before that did are placed by time."""
    metadata_store.create_memory("acme/base", {"config": {}, "created_at": "2026-01-01T00:00:00+00:00"})
    old = metadata_store.get_memory("acme/base")
    metadata_store.create_memory("acme/kid", {"config": {}, "parent": "acme/base",
                                              "parent_created_at": old["created_at"]})
    metadata_store.create_memory("acme/legacy", {"config": {}, "parent": "acme/base",
                                                 "created_at": "2026-01-02T00:00:00+00:00"})
    assert is_fork_of(metadata_store.get_memory("acme/kid"), old)
    assert is_fork_of(metadata_store.get_memory("acme/legacy"), old)
    assert {r["name"]: r["parent_deleted"] for r in metadata_store.list_page("acme")[0] if r.get("parent")} \
        == {"acme/kid": False, "acme/legacy": False}

    metadata_store.delete_memory("acme/base")
    assert {r["name"]: r["parent_deleted"] for r in metadata_store.list_page("acme")[0] if r.get("parent")} \
        == {"acme/kid": True, "acme/legacy": True}
    metadata_store.create_memory("acme/base", {"config": {}})  # now: after both forks were made
    new = metadata_store.get_memory("acme/base")
    assert not is_fork_of(metadata_store.get_memory("acme/kid"), new)
    assert not is_fork_of(metadata_store.get_memory("acme/legacy"), new)
    assert all(r["parent_deleted"] for r in metadata_store.list_page("acme")[0] if r.get("parent"))
