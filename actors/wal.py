"""Write-ahead-log entries of one memory: checked before they are logged, rebuilt for replay.

A write is validated *before* it reaches the WAL (the rules of `contract`, the same ones the
memory applies), so replay never meets an entry the live actor would have refused. An entry
holds everything `observe_vectors` needs to redo the write bit-for-bit (float32 vectors, texts,
domain, learning rate) plus the caller's request id, which makes a retried write idempotent.

The log records every change of state, not only observations, so the memory can be rebuilt from
any earlier state by replay (recovery, and forgetting: actors/forget.py). Each entry has a
`kind` — "observe" (the default, also of entries from before kinds existed), "consolidate",
"restore" (of tag `tag`, taken at log position `tag_seq`) or "tag" (a user checkpoint taken
here) — a `seq`, its position in the memory's log (1, 2, ...; never reused, gaps where a
forgotten or failed write was), the memory's `step` after it, and `at` (unix time).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

import time

import numpy as np

import contract
from errors import InvalidInput

__all__ = ["check_observation", "make_entry", "make_marker", "entry_args", "entry_kind", "answered_steps", "RecentResults",
           "history_items", "result_from_history", "applied_in_history", "write_record",
           "OBSERVE", "CONSOLIDATE", "RESTORE", "TAG"]

OBSERVE, CONSOLIDATE, RESTORE, TAG = "observe", "consolidate", "restore", "tag"


def check_observation(vectors: Any, texts: Any, domain: Any, learning_rate: Any, dim: int) -> np.ndarray:
    """Validate one write (the rules of `contract`); returns the vectors as a fresh, writable
    (n, dim) float32 array."""
    if not isinstance(texts, list) or not texts:
        raise InvalidInput("texts must be a non-empty list of strings (one per vector)")
    if len(texts) > contract.MAX_ITEMS_PER_WRITE:
        raise InvalidInput(f"at most {contract.MAX_ITEMS_PER_WRITE} items per observe; split the batch")
    for text in texts:
        contract.check_new_text(text)
    contract.check_new_domain(domain)
    contract.check_learning_rate(learning_rate)
    try:
        array = np.array(vectors, dtype=np.float32, copy=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"vectors must be a numeric array of shape (n, {dim}): {exc}") from exc
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape != (len(texts), dim):
        raise InvalidInput(
            f"vectors must have shape ({len(texts)}, {dim}) for {len(texts)} text(s) and this "
            f"memory's encoder, got {tuple(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise InvalidInput("vectors contain NaN or infinity")
    return np.ascontiguousarray(array)


def make_entry(step: int, vectors: np.ndarray, texts: list[str], domain: str | None,
               learning_rate: float | None, request_id: str, seq: int | None = None) -> dict[str, Any]:
    """The WAL entry of a write; `step` is the memory's step *after* applying it."""
    options = {"request_id": request_id}
    if learning_rate is not None:
        options["learning_rate"] = float(learning_rate)
    entry = {
        "step": int(step),
        "vectors": vectors.astype("<f4", copy=False).tobytes(),
        "texts": list(texts),
        "domain": domain,
        "options": options,
        "at": time.time(),
    }
    if seq is not None:
        entry["seq"] = int(seq)
    return entry


def make_marker(kind: str, seq: int, step: int, **fields: Any) -> dict[str, Any]:
    """A log entry for a change of state that is not an observation (consolidate, restore, tag)."""
    return {"kind": kind, "seq": int(seq), "step": int(step), "vectors": b"", "texts": [], "domain": None,
            "options": {}, "at": time.time(), **fields}


def entry_kind(entry: dict[str, Any]) -> str:
    return entry.get("kind") or OBSERVE


def entry_args(entry: dict[str, Any]) -> tuple[np.ndarray, list[str], str | None, float | None, str | None]:
    """(vectors, texts, domain, learning_rate, request_id) of a WAL entry, ready for replay."""
    texts = list(entry.get("texts") or [])
    options = entry.get("options") or {}
    vectors = np.frombuffer(entry["vectors"], dtype="<f4").astype(np.float32)
    vectors = vectors.reshape(len(texts), -1) if texts else vectors.reshape(0, 0)
    return vectors, texts, entry.get("domain"), options.get("learning_rate"), options.get("request_id")


def answered_steps(entry: dict[str, Any]) -> list[int]:
    """The step `observe` answered for each item of an observe entry. A forget renumbers what
    follows the observations it removes (the memory equals a twin that never saw them), so an
    entry it rewrites keeps its items' first answers in `answered`: a later forget by `steps`
    selects what the caller was told, not what the renumbering made of it."""
    if "answered" in entry:
        return [int(step) for step in entry["answered"]]
    count = len(entry.get("texts") or [])
    first = int(entry["step"]) - count + 1
    return list(range(first, first + count))


def write_fingerprint(texts: list[str], domain: str | None, learning_rate: float | None) -> str:
    """What makes two writes with one request id the same write (the vectors follow from the
    texts): a retry must match the write its id first named."""
    rate = None if learning_rate is None else float(learning_rate)
    return hashlib.sha256(json.dumps([list(texts), domain, rate]).encode()).hexdigest()


class RecentResults:
    """Bounded map request id -> (result of the write, or None if only known to be applied;
    its `write_fingerprint`, or None where it is not known). A write noted again keeps its
    answer: noting it as applied (result None) keeps it, and a replayed answer (no weight hash:
    see actors/durability.py) does not replace one that names the weights."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._items: OrderedDict[str, tuple[dict | None, str | None]] = OrderedDict()

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._items

    def get(self, request_id: str) -> dict | None:
        return self._items.get(request_id, (None, None))[0]

    def fingerprint(self, request_id: str) -> str | None:
        return self._items.get(request_id, (None, None))[1]

    def known(self) -> list[tuple[str, str | None]]:
        """(request id, fingerprint) of every remembered write, oldest first."""
        return [(request_id, fingerprint) for request_id, (_result, fingerprint) in self._items.items()]

    def redact(self, request_id: str, *, result: bool = False, fingerprint: bool = False) -> None:
        """Drop what is known of a write's `result` and/or `fingerprint`, keeping it known as
        applied (in its place: the eviction order does not change)."""
        known, print_ = self._items[request_id]
        self._items[request_id] = (None if result else known, None if fingerprint else print_)

    def put(self, request_id: str | None, result: dict | None, fingerprint: str | None = None) -> None:
        if not request_id:
            return
        known = self._items.get(request_id, (None, None))[0]
        if known is not None and (result is None or ("weight_hash" in known and "weight_hash" not in result)):
            result = known
        self._items[request_id] = (result, fingerprint)
        self._items.move_to_end(request_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)


def write_record(request_id: str, result: dict | None, fingerprint: str | None) -> dict:
    """What Redis keeps of an answered write (storage MetadataStore.recent_writes), so a retry
    of it is recognised and answered after a restart, whatever the size of the writes since."""
    return {"request_id": request_id, "fingerprint": fingerprint, "answer": result}


def history_items(result: dict, texts: list[str], request_id: str | None,
                  fingerprint: str | None = None) -> list[dict]:
    """The history items of one answered write: one per text, each naming the write's request
    id; the last also keeps the write's totals and `write_fingerprint`, so `result_from_history`
    can answer a retry of a write that only the history still details (one applied before the
    newest checkpoint), and `applied_in_history` can refuse another write sent under its id."""
    surprises = result.get("surprises") or [result["surprise"]] * len(texts)
    first = result["step"] - len(texts) + 1
    items = [{"step": first + i, "text": text, "surprise": float(surprises[i]),
              "weight_hash": result["weight_hash"]} for i, text in enumerate(texts)]
    if request_id and items:
        for item in items:
            item["request_id"] = request_id
        items[-1]["write"] = {"surprise": float(result["surprise"]), "weight_delta": float(result["weight_delta"]),
                              "patterns_activated": list(result.get("patterns_activated") or [])}
        if fingerprint:
            items[-1]["fingerprint"] = fingerprint
    return items


def applied_in_history(items: list[dict]) -> list[tuple[str, str | None]]:
    """(request id, write_fingerprint or None where not recorded) of each write the history
    items name, oldest first: writes a restart must still know as applied, though the log that
    held them was trimmed after a checkpoint."""
    applied: dict[str, str | None] = {}
    for item in items:
        request_id = item.get("request_id")
        if request_id:
            applied[request_id] = item.get("fingerprint") or applied.get(request_id)
    return list(applied.items())


def result_from_history(items: list[dict], request_id: str) -> dict | None:
    """The answer of write `request_id` rebuilt from its history items, or None where the
    history no longer holds all of them (older than its cap, or recorded before they named
    their write)."""
    mine = sorted((item for item in items if item.get("request_id") == request_id), key=lambda i: i["step"])
    if not mine or "write" not in mine[-1] or mine[-1]["step"] - mine[0]["step"] + 1 != len(mine):
        return None
    totals = mine[-1]["write"]
    result = {**totals, "step": mine[-1]["step"], "weight_hash": mine[-1]["weight_hash"],
              "surprises": [float(item["surprise"]) for item in mine]}
    if any("answered_step" in item for item in mine):  # renumbered by a forget (actors/forget.py)
        result["answered"] = [int(item.get("answered_step", item["step"])) for item in mine]
    return result
