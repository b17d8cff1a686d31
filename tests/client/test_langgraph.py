"""NeuralMemoryStore in real LangGraph graphs (no LLM: one node writes, another searches),
against the real session gateway."""

from __future__ import annotations

import asyncio
import operator
import uuid
from typing import Annotated, TypedDict

import pytest

import errors as E

pytest.importorskip("langgraph", reason="the `langgraph` extra is not installed")

FACTS = {
    "diet": {"text": "Alice is vegetarian and never eats fish."},
    "pet": {"text": "Alice has a grey cat called Miso."},
    "city": {"text": "Alice moved to Lisbon in 2021."},
    "job": {"text": "Alice works as a radio astronomer."},
}


class State(TypedDict):
    user: str
    query: str
    found: Annotated[list, operator.add]


def _graph():
    from langgraph.graph import END, START, StateGraph
    from langgraph.runtime import Runtime

    def remember(state: State, runtime: Runtime) -> dict:
        for key, value in FACTS.items():
            runtime.store.put(("users", state["user"]), key, value)
        return {}

    def recall(state: State, runtime: Runtime) -> dict:
        hits = runtime.store.search(("users", state["user"]), query=state["query"], limit=2)
        return {"found": [(hit.key, hit.value["text"], hit.score) for hit in hits]}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    return builder


@pytest.fixture
def store(gateway):
    from neural_memory.langgraph import NeuralMemoryStore

    s = NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, timeout=120)
    yield s
    s.close()


def _user() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


def test_a_graph_writes_then_recalls_by_meaning(store, nm):
    user = _user()
    graph = _graph().compile(store=store)
    out = graph.invoke({"user": user, "query": "Where does Alice live now?", "found": []})
    try:
        key, text, score = out["found"][0]
        assert (key, text) == ("city", FACTS["city"]["text"]) and 0 < score <= 1
        assert nm.stats(f"users.{user}").total_observations == 4  # the memory learned each put
        assert store.get(("users", user), "pet").value == FACTS["pet"]
        assert ("users", user) in store.list_namespaces(prefix=("users",))
    finally:
        nm.delete_memory(f"users.{user}")


def test_async_graph_and_delete_that_does_not_pretend_to_forget(store, nm):
    user = _user()
    graph = _graph().compile(store=store)
    ns = ("users", user)

    async def scenario() -> tuple:
        out = await graph.ainvoke({"user": user, "query": "What pet does Alice have?", "found": []})
        await store.adelete(ns, "pet")
        after = await store.asearch(ns, query="What pet does Alice have?", limit=4)
        return out, after, await store.aget(ns, "pet"), await store.aget(ns, "diet")

    try:
        out, after, pet, diet = asyncio.run(scenario())
        assert out["found"][0][0] == "pet"
        assert pet is None and diet.value == FACTS["diet"]
        assert "pet" not in [hit.key for hit in after] and after  # others still found
        # The record is gone, but the weights keep what they learned (no fake forgetting).
        stats = nm.stats(f"users.{user}")
        assert stats.total_observations == 4
        assert any("Miso" in a.pattern for a in nm.infer(f"users.{user}", "cat").attention_weights)
        # To un-learn it: forget the text put learned (the value as JSON), not the sentence in it.
        from neural_memory.langgraph import memory_name

        assert memory_name(ns) == f"users.{user}"
        job = nm.wait_for_forget(memory_name(ns), nm.forget(memory_name(ns), text=store.learned_text(FACTS["pet"])))
        assert job.status == "done" and job.forgotten == 1
        assert nm.stats(f"users.{user}").total_observations == 3
        assert not any("Miso" in a.pattern for a in nm.infer(f"users.{user}", "cat").attention_weights)
    finally:
        nm.delete_memory(f"users.{user}")


def test_search_without_query_filters_and_index_false_learns_nothing(store, nm):
    ns = ("notes", _user())
    store.put(ns, "a", {"text": "Blue whales are the largest animals.", "kind": "fact"})
    store.put(ns, "b", {"text": "Call the dentist on Monday.", "kind": "todo"}, index=False)
    try:
        assert [i.key for i in store.search(ns, filter={"kind": "todo"})] == ["b"]
        assert nm.stats(f"notes.{ns[1]}").total_observations == 1  # only "a" was learned
        hits = store.search(ns, query="dentist appointment", limit=5)
        assert "b" not in [h.key for h in hits]  # never learned, so never recalled
    finally:
        nm.delete_memory(f"notes.{ns[1]}")


def test_search_finds_current_items_past_what_updated_and_deleted_keys_left_in_the_memory(store, nm):
    """The memory keeps learned texts of earlier values and deleted items; they filled the
    places of its answer, and search returned [] while matching items existed."""
    ns = ("crm", _user())
    store.put(ns, "plan", {"text": "Globex is on the starter plan."})
    for i in range(30):  # an agent updating one key over time
        store.put(ns, "status", {"text": f"Globex ticket status update #{i}: waiting on the customer "
                                         f"about order {1000 + i}."})
    for i in range(12):
        store.put(ns, f"todo-{i}", {"text": f"Globex follow-up task {i}: call about invoice {500 + i}."})
        store.delete(ns, f"todo-{i}")
    try:
        [hit] = store.search(ns, query="What is the status of Globex's ticket?", limit=1)
        assert hit.key == "status" and "#29" in hit.value["text"], hit
        assert {h.key for h in store.search(ns, query="What is the status of Globex's ticket?", limit=5)} \
            == {"plan", "status"}
        assert {h.key for h in store.search(ns, query="")} == {"plan", "status"}  # no query: the records
    finally:
        nm.delete_memory(f"crm.{ns[1]}")


def test_what_put_and_search_refuse_is_told_in_the_stores_terms(store, nm):
    ns = ("notes", _user())
    with pytest.raises(E.InvalidInput, match=r"put\(.*'long'\).*index=False") as refused:
        store.put(ns, "long", {"text": "word " * 7000})
    assert "context" not in str(refused.value)  # the REST field, which a store user never named
    store.put(ns, "short", {"text": "A short note."})
    try:
        with pytest.raises(E.InvalidInput, match="search query") as refused:
            store.search(ns, query="q" * 40_000)
        assert "prompt" not in str(refused.value)
    finally:
        nm.delete_memory(f"notes.{ns[1]}")


def test_per_user_forks_inherit_shared_knowledge(gateway, nm):
    from neural_memory.langgraph import NeuralMemoryStore

    team = f"team{uuid.uuid4().hex[:6]}"
    store = NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, fork_from=(team,))
    try:
        store.put((team,), "wifi", {"text": "The office wifi password is on the fridge."})
        store.put((team, "alice"), "desk", {"text": "Alice sits at desk 14 by the window."})
        hits = store.search((team, "alice"), query="Where is the wifi password?", limit=1)
        assert [(h.namespace, h.key) for h in hits] == [((team,), "wifi")]
        lineage = {n.name: n.parent for n in nm.lineage().memories}
        assert lineage[f"{team}.alice"] == team
    finally:
        store.close()
        nm.delete_memory(f"{team}.alice")
        nm.delete_memory(team)


def test_a_user_put_before_the_shared_namespace_exists_says_what_to_put_first(gateway, nm):
    from neural_memory.langgraph import NeuralMemoryStore

    team = f"team{uuid.uuid4().hex[:6]}"
    store = NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, fork_from=(team,))
    try:
        with pytest.raises(E.MemoryNotFound, match=rf"fork_from=\('{team}',\).*put the shared items into that"):
            store.put((team, "bob"), "desk", {"text": "Bob sits at desk 3."})
        with pytest.raises(E.MemoryNotFound):  # nothing was made for him
            nm.stats(f"{team}.bob")
    finally:
        store.close()


def test_search_across_namespaces_ranks_the_matching_item_first_and_a_value_must_be_a_dict(store, nm):
    """Under a namespace prefix each namespace's memory answers with weights that sum to 1 over
    what it holds: a memory of one unrelated item scored it 1.0, above the right item of a
    fuller memory. And a value that is not a dict is refused before anything is learned."""
    team = f"crew{uuid.uuid4().hex[:6]}"
    alice = ["Lives in Lisbon since 2021.", "Prefers tea over coffee.", "Has two cats.",
             "Works on the billing service.", "Runs a marathon every spring."]
    try:
        for i, text in enumerate(alice):
            store.put((team, "alice"), f"a{i}", {"text": text})
        store.put((team, "bob"), "music", {"text": "Likes Berlin techno."})
        hits = store.search((team,), query="Who lives in Lisbon?", limit=3)
        assert (hits[0].namespace, hits[0].key) == ((team, "alice"), "a0"), [(h.key, h.score) for h in hits]
        with pytest.raises(E.InvalidInput, match="must be a dict"):
            store.put((team, "bob"), "s", "just a string value")
        assert nm.stats(f"{team}.bob").total_observations == 1  # nothing of it learned
    finally:
        for user in ("alice", "bob"):
            nm.delete_memory(f"{team}.{user}")


def test_namespace_rules_are_explained(store):
    with pytest.raises(E.InvalidInput, match="lowercase"):
        store.put(("Users", "alice"), "k", {"text": "x"})
    with pytest.raises(E.InvalidInput, match="63 characters"):
        store.put(("a" * 40, "b" * 30), "k", {"text": "x"})
    with pytest.raises(E.InvalidInput, match="reserved"):
        store.put(("users", "x"), "k", {"__nmem_text_sha256": "x"})


@pytest.mark.parametrize("prefix", ["My-App.", "-x.", "a" * 41, "app/"])
def test_a_name_prefix_that_cannot_begin_a_memory_name_is_refused_at_once(gateway, prefix):
    """Refused when the store is made, saying why: "My-App." was blamed on the name's length at
    the first put, and "-x." made every search quietly return nothing."""
    from neural_memory.langgraph import NeuralMemoryStore

    with pytest.raises(E.InvalidInput, match="name_prefix .*lowercase"):
        NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, name_prefix=prefix)
    NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, name_prefix="my-app.").close()


def test_a_search_wider_than_max_search_memories_is_refused_with_what_to_do(gateway, nm):
    """A search asks every memory under its prefix (an infer each, waking hibernated ones): one
    under ("users",) on a platform of per-user memories would wake them all."""
    from neural_memory.langgraph import NeuralMemoryStore

    team = f"wide{uuid.uuid4().hex[:6]}"
    store = NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, timeout=120, max_search_memories=2)
    try:
        for user in ("ana", "ben", "cy"):
            store.put((team, user), "k", {"text": f"{user} likes green tea"})
        with pytest.raises(E.InvalidInput, match="would ask 3 memories, more than max_search_memories"):
            store.search((team,), query="who likes tea?")
        assert [h.key for h in store.search((team, "ben"), query="who likes tea?")] == ["k"]
        assert store.search(("Not-A-Label",), query="tea") == []  # names no memory: nothing to ask
        with pytest.raises(E.InvalidInput, match="max_search_memories must be"):
            NeuralMemoryStore(url=gateway.base_url, api_key=gateway.key_a, max_search_memories=0)
    finally:
        store.close()
        for user in ("ana", "ben", "cy"):
            nm.delete_memory(f"{team}.{user}")
