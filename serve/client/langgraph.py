"""`NeuralMemoryStore`: LangGraph long-term memory backed by neural memories.

    from neural_memory.langgraph import NeuralMemoryStore
    store = NeuralMemoryStore(url="http://127.0.0.1:8000", api_key="...")
    graph = builder.compile(store=store)   # nodes: store.put(ns, key, value), store.search(ns, query=...)

How LangGraph's key-value interface maps onto memories that learn:

- A namespace is a memory: ("users", "alice") is the memory `users.alice` (with `name_prefix`
  in front, if set). Labels must be 1+ of a-z 0-9 _ - starting with a letter or digit (no
  dots: LangGraph forbids them, and they join the labels), and the whole name at most 63
  characters. A namespace's memory is created on its first put; with `fork_from` (a namespace,
  e.g. ("team",)) it is forked from that namespace's memory instead, so each user's memory
  starts with the shared knowledge and learns on its own, and its search also returns the
  inherited items (with their own namespace) that still hold the text it inherited. With an
  empty `name_prefix` every memory of the tenant is taken for one of this store's namespaces.
- `put` makes the memory *learn* the item's text (LangGraph's `index` fields; default the whole
  value as JSON; `index=False` learns nothing) and writes the exact value to `records`.
- `search(ns, query=...)` asks the memory (`infer`) what it recalls for the query; each
  recalled text is mapped back to the items whose text it is, scored by the memory's
  attention weight times its confidence in the query (so items of several memories, under a
  namespace prefix, compare); texts no current item holds (deleted, or replaced by a put) make
  it ask for more. Without a query (or an empty one), search lists `records` (with the filter).
- `get` and `delete` work by key on `records`: a network's weights cannot be read back as an
  exact value, so the exact values live in an ordinary store. By default that is LangGraph's
  `InMemoryStore` (this process only; nothing is shared or kept across restarts); pass
  `records=` any BaseStore (PostgresStore, SqliteStore, ...) to keep them durably and share
  them between processes. `delete` removes the record, so get and search no longer return
  the item, but the weights keep what they learned from it. To forget for real, forget the
  text it learned (`learned_text(value)`) in the namespace's memory (`memory_name(namespace)`):
  the memory is rebuilt as if the item had never been put.

Sync and async (`abatch`) run the same plans: each operation is written once as a generator
that yields the calls it needs (to the server or to `records`), and a sync or an async driver
performs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from langgraph.store.base import (
    BaseStore, GetOp, Item, ListNamespacesOp, MatchCondition, Op, PutOp, Result, SearchItem,
    SearchOp,
)
from langgraph.store.base.embed import get_text_at_path
from langgraph.store.memory import InMemoryStore

from errors import InvalidInput, MemoryExists, MemoryNotFound
from neural_memory.client import DEFAULT_TIMEOUT_S, AsyncClient, Client
from contract import MAX_PAGE, MAX_TOP_K

# Memories one search may ask (an infer each, waking hibernated ones): a search under a prefix
# as wide as ("users",) on a platform of per-user memories is refused rather than waking them all.
DEFAULT_MAX_SEARCH_MEMORIES = 100
from serve.schemas import MEMORY_NAME_PATTERN

__all__ = ["NeuralMemoryStore", "memory_name", "namespace_of", "TEXT_FIELD"]

TEXT_FIELD = "__nmem_text_sha256"  # in each record: which learned text is this item's
_LABEL = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ALL = 1_000_000  # "no limit" for the records store's own searches


# Empty, or the start of a memory name (contract.MEMORY_NAME_PATTERN), leaving room for labels.
_NAME_PREFIX = r"([a-z0-9][a-z0-9._-]{0,39})?"


def memory_name(namespace: tuple[str, ...], prefix: str = "") -> str:
    """The memory a namespace maps to; InvalidInput says which rule a label breaks."""
    if not namespace:
        raise InvalidInput("a namespace needs at least one label, e.g. ('users', 'alice')")
    for label in namespace:
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise InvalidInput(f"namespace label {label!r} cannot name a neural memory: use "
                               "a-z 0-9 _ - (lowercase, no dots), starting with a letter or digit")
    name = prefix + ".".join(namespace)
    if not re.fullmatch(MEMORY_NAME_PATTERN, name):
        raise InvalidInput(f"namespace {namespace} makes the memory name {name!r}, longer than "
                           "63 characters; use shorter labels or fewer levels")
    return name


def namespace_of(name: str, prefix: str = "") -> tuple[str, ...] | None:
    """The namespace of a memory name (None: not one of this store's memories)."""
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    labels = tuple(name[len(prefix):].split("."))
    return labels if all(_LABEL.fullmatch(label) for label in labels) else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class _Server:  # a call on the neural-memory client
    method: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Records:  # a batch on the records store
    ops: list


Plan = Generator[Any, Any, Any]


class NeuralMemoryStore(BaseStore):
    """A LangGraph BaseStore whose search is a neural memory's recall (see the module doc)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 records: BaseStore | None = None, name_prefix: str = "",
                 fork_from: tuple[str, ...] | None = None, memory_config: dict | None = None,
                 index_fields: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 max_search_memories: int = DEFAULT_MAX_SEARCH_MEMORIES) -> None:
        self.records = records if records is not None else InMemoryStore()
        if not isinstance(name_prefix, str) or not re.fullmatch(_NAME_PREFIX, name_prefix):
            raise InvalidInput(f"name_prefix {name_prefix!r} cannot begin a neural memory's name: use a-z 0-9 "
                               ". _ - (lowercase), starting with a letter or digit, at most 40 characters "
                               "(e.g. 'myapp.')")
        self.name_prefix = name_prefix
        self.fork_from = tuple(fork_from) if fork_from else None
        if self.fork_from:
            memory_name(self.fork_from, name_prefix)  # refuse a bad template now, not on a put
        self.memory_config = memory_config
        self.index_fields = list(index_fields or ["$"])
        if isinstance(max_search_memories, bool) or not isinstance(max_search_memories, int) \
                or max_search_memories < 1:
            raise InvalidInput(f"max_search_memories must be an int >= 1, got {max_search_memories!r}")
        self.max_search_memories = max_search_memories
        self._client_args = (url, api_key, timeout)
        self._client = Client(*self._client_args)
        self._aclients: dict[int, AsyncClient] = {}  # one per event loop (httpx binds to it)

    # ---- BaseStore ---------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._drive(self._plan(op)) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return [await self._adrive(self._plan(op)) for op in ops]

    def close(self) -> None:
        self._client.close()

    # ---- drivers: perform what a plan yields -------------------------------------------

    def _drive(self, plan: Plan) -> Any:
        try:
            step = next(plan)
            while True:
                try:
                    if isinstance(step, _Server):
                        value = getattr(self._client, step.method)(*step.args, **step.kwargs)
                    else:
                        value = self.records.batch(step.ops)
                except Exception as exc:  # noqa: BLE001 - the plan decides what it can handle
                    step = plan.throw(exc)
                else:
                    step = plan.send(value)
        except StopIteration as done:
            return done.value

    async def _adrive(self, plan: Plan) -> Any:
        client = self._aclient()
        try:
            step = next(plan)
            while True:
                try:
                    if isinstance(step, _Server):
                        value = await getattr(client, step.method)(*step.args, **step.kwargs)
                    else:
                        value = await self.records.abatch(step.ops)
                except Exception as exc:  # noqa: BLE001
                    step = plan.throw(exc)
                else:
                    step = plan.send(value)
        except StopIteration as done:
            return done.value

    def _aclient(self) -> AsyncClient:
        loop = id(asyncio.get_running_loop())
        if loop not in self._aclients:
            self._aclients = {loop: AsyncClient(*self._client_args)}  # older loops are gone
        return self._aclients[loop]

    # ---- plans: one per operation ------------------------------------------------------

    def _plan(self, op: Op) -> Plan:
        if isinstance(op, GetOp):
            return self._get(op)
        if isinstance(op, PutOp):
            return self._put(op)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise InvalidInput(f"unknown store operation {type(op).__name__}")

    def _get(self, op: GetOp) -> Plan:
        [item] = yield _Records([GetOp(op.namespace, op.key)])
        return _public(item)

    def _put(self, op: PutOp) -> Plan:
        if op.value is None:
            yield _Records([PutOp(op.namespace, op.key, None)])
            return None
        if not isinstance(op.value, dict):  # refused before the memory learns anything of it
            raise InvalidInput(f"a stored value must be a dict (LangGraph's BaseStore), got "
                               f"{type(op.value).__name__}: wrap it, e.g. {{\"text\": ...}}")
        if TEXT_FIELD in op.value:
            raise InvalidInput(f"{TEXT_FIELD!r} is reserved by NeuralMemoryStore; rename that field")
        text = self.learned_text(op.value, op.index)
        if text is not None:
            try:
                yield from self._learn(memory_name(op.namespace, self.name_prefix), text)
            except InvalidInput as exc:  # told in the store's terms, not the REST call's fields
                raise InvalidInput(f"put({op.namespace}, {op.key!r}): the text this item would learn (its index "
                                   f"fields; by default the whole value as JSON) was refused: {_reason(exc)}. "
                                   "Learn fewer fields with index=[\"field\"], or nothing with index=False") from None
        record = {**op.value, TEXT_FIELD: _digest(text) if text is not None else None}
        yield _Records([PutOp(op.namespace, op.key, record, index=False)])
        return None

    def learned_text(self, value: dict, index: Any = None) -> str | None:
        """The text `put(namespace, key, value, index)` makes the memory learn (None: nothing):
        what to `forget` (Client.forget(memory_name(namespace), text=...)) to un-learn the item."""
        if index is False:
            return None
        texts = [t for path in (index or self.index_fields) for t in get_text_at_path(value, path)]
        return "\n".join(texts) if any(t.strip() for t in texts) else None

    def _learn(self, name: str, text: str) -> Plan:
        try:
            yield _Server("observe", (name, text))
        except MemoryNotFound:
            try:
                template = self.fork_from and memory_name(self.fork_from, self.name_prefix)
                if template and template != name:
                    try:
                        yield _Server("fork", (template, name))
                    except MemoryNotFound:
                        raise MemoryNotFound(
                            f"fork_from={self.fork_from} names the memory {template!r}, which does not exist "
                            f"yet: put the shared items into that namespace first (put({self.fork_from}, "
                            "key, value)), then each user's namespace is forked from it") from None
                else:
                    yield _Server("create_memory", (name, self.memory_config))
            except MemoryExists:  # another writer created it first
                pass
            yield _Server("observe", (name, text))

    def _search(self, op: SearchOp) -> Plan:
        if not op.query:  # as LangGraph's own stores: an empty query is no query
            [items] = yield _Records([SearchOp(op.namespace_prefix, op.filter, op.limit, op.offset)])
            return [_searched(item, None) for item in items]
        prefix = tuple(op.namespace_prefix)
        listed = yield from self._memory_namespaces(prefix)
        spaces = [ns for ns in listed if ns[:len(prefix)] == prefix]
        if len(spaces) > self.max_search_memories:  # one infer each, waking the hibernated ones
            raise InvalidInput(f"a search under namespace {prefix} would ask {len(spaces):,} memories, more than "
                               f"max_search_memories ({self.max_search_memories}): search a narrower namespace "
                               "prefix (e.g. one user's), or raise max_search_memories")
        best: dict[tuple, tuple[float, Item]] = {}
        for ns in spaces:
            for key, (score, item) in (yield from self._recall(ns, op)).items():
                if score > best.get(key, (-1.0,))[0]:
                    best[key] = (score, item)
        ranked = sorted(best.values(), key=lambda pair: -pair[0])
        return [_searched(item, score) for score, item in ranked[op.offset:op.offset + op.limit]]

    def _recall(self, ns: tuple[str, ...], op: SearchOp) -> Plan:
        """The items memory `ns` recalls for `op.query`, {(namespace, key): (score, item)}. A
        memory still holds what it learned from deleted items and from earlier values of
        updated keys, and those take places in its answer: it is asked again for more
        (`top_k` doubled, up to MAX_TOP_K) until enough of what it recalls is a current item."""
        wanted, top_k = op.limit + op.offset, min(MAX_TOP_K, max(10, 2 * (op.limit + op.offset)))
        while True:
            try:
                answer = yield _Server("infer", (memory_name(ns, self.name_prefix), op.query), {"top_k": top_k})
            except MemoryNotFound:  # deleted since it was listed
                return {}
            except InvalidInput as exc:
                raise InvalidInput(f"search query refused by the memory of namespace {ns}: {_reason(exc)}") from None
            # A memory's weights sum to 1 over what it holds (a memory of one item scores it 1,
            # however far from the query): times its confidence in the query (1 - the query's
            # surprise there), the scores of different memories compare.
            recalled: dict[str, float] = {}
            for hit in answer.attention_weights:
                digest = _digest(hit.pattern)
                recalled[digest] = max(recalled.get(digest, 0.0), hit.weight * answer.confidence)
            found = yield from self._current_items(ns, recalled, op.filter)
            exhausted = len(answer.attention_weights) < top_k or top_k == MAX_TOP_K
            if len(found) >= wanted or exhausted:
                return found
            top_k = min(MAX_TOP_K, 2 * top_k)

    def _current_items(self, ns: tuple[str, ...], recalled: dict[str, float], filter: dict | None) -> Plan:
        """The records whose learned text memory `ns` recalled ({text digest: score}), in its own
        namespace or the one it was forked from: {(namespace, key): (score, item)}."""
        wanted = [(owner, digest, score) for digest, score in recalled.items() for owner in self._owners(ns)]
        if not wanted:
            return {}
        found = yield _Records([SearchOp(owner, {**(filter or {}), TEXT_FIELD: digest}, limit=_ALL)
                                for owner, digest, _ in wanted])
        items: dict[tuple, tuple[float, Item]] = {}
        for (owner, _, score), matches in zip(wanted, found):
            for item in matches:  # the records store searches by prefix; keep exact namespaces
                key = (item.namespace, item.key)
                if item.namespace == owner and score > items.get(key, (-1.0,))[0]:
                    items[key] = (score, item)
        return items

    def _owners(self, ns: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Namespaces whose items a memory's recall may be: its own, and what it was forked from."""
        return [ns] if self.fork_from in (None, ns) else [ns, self.fork_from]

    def _memory_namespaces(self, under: tuple[str, ...] = ()) -> Plan:
        """The namespaces of this store's memories, those under namespace prefix `under` (and a
        few more that share its name's start: the caller keeps the exact ones), listed by the
        server a page at a time."""
        names, cursor = [], None
        try:
            listed_prefix = memory_name(under, self.name_prefix) if under else self.name_prefix
        except InvalidInput:  # no memory is named so: the caller finds none among all of them
            listed_prefix = self.name_prefix
        while True:
            listed = yield _Server("list_memories", kwargs={"cursor": cursor, "limit": MAX_PAGE,
                                                            "prefix": listed_prefix or None})
            names += [m.name for m in listed.memories]
            cursor = listed.next_cursor
            if cursor is None:
                break
        spaces = (namespace_of(name, self.name_prefix) for name in names)
        return [ns for ns in spaces if ns is not None]

    def _list_namespaces(self, op: ListNamespacesOp) -> Plan:
        spaces = set((yield from self._memory_namespaces()))  # memories, and namespaces whose
        # items were all put with index=False (records only)
        [recorded] = yield _Records([ListNamespacesOp(limit=_ALL)])
        spaces |= {tuple(ns) for ns in recorded}
        matched = {ns for ns in spaces if all(_matches(c, ns) for c in op.match_conditions or ())}
        if op.max_depth is not None:
            matched = {ns[:op.max_depth] for ns in matched}
        return sorted(matched)[op.offset:op.offset + op.limit]


def _reason(refused: InvalidInput) -> str:
    """A refusal of the client's call without the call's own field name ("context: ...")."""
    return re.sub(r"^(context|contexts|prompt)(\.\d+)?: ", "", str(refused))


def _matches(condition: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(ns) < len(path):
        return False
    part = ns[:len(path)] if condition.match_type == "prefix" else ns[len(ns) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part))


def _value(item: Item) -> dict:
    return {k: v for k, v in item.value.items() if k != TEXT_FIELD}


def _public(item: Item | None) -> Item | None:
    if item is None:
        return None
    return Item(value=_value(item), key=item.key, namespace=item.namespace,
                created_at=item.created_at, updated_at=item.updated_at)


def _searched(item: Item, score: float | None) -> SearchItem:
    return SearchItem(item.namespace, item.key, _value(item), item.created_at, item.updated_at,
                      score=score)
