"""Replay: apply logged entries to a memory, in order, exactly as the live actor applied them.

Shared by recovery (checkpoint + WAL) and forgetting (a state + the kept history, without some
items). Every change of state is a log entry (actors/wal.py), so a replay is deterministic:
an observe runs `observe_vectors` on the logged vectors, a consolidate runs `consolidate()`, a
restore loads the tag's state (from `load_tag`: the stored tag, or the state a forgetting
replay rebuilt for it), a tag entry reports the state to `on_tag`. An item may be dropped from
an observe (forgetting): the write is replayed without it, as by a twin that never saw it, and
the entry comes back rewritten (fewer items, the new step, the steps its items were answered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from actors.wal import CONSOLIDATE, OBSERVE, RESTORE, TAG, answered_steps, entry_args, entry_kind

if TYPE_CHECKING:
    from memory import NeuralMemory

__all__ = ["Replay", "Unusable", "EntryFailed"]


class Unusable(Exception):
    """The log does not fit the state (a gap, or a step that differs from what was logged)."""


class EntryFailed(Exception):
    def __init__(self, entry: dict, cause: BaseException) -> None:
        super().__init__(f"WAL entry at step {entry['step']} failed to apply: {cause!r}")
        self.entry = entry


LoadTag = Callable[[str, int], "NeuralMemory"]  # (tag, seq it was taken at) -> its state
OnTag = Callable[[dict, "NeuralMemory"], None]


class Replay:
    """Applies entries to `memory` (replaced by a restore: read `.memory` after)."""

    def __init__(self, memory: NeuralMemory, load_tag: LoadTag, on_tag: OnTag | None = None) -> None:
        self.memory = memory
        self._load_tag = load_tag
        self._on_tag = on_tag
        # The step as logged (before any drop): the log must continue it without a gap.
        self.logged_step = memory.step

    def apply(self, entry: dict, drop: frozenset[int] = frozenset()) -> tuple[dict | None, dict | None]:
        """Apply `entry` without its items at positions `drop`; returns (the entry as it would
        have been logged: None if nothing is left of it, the observe's result or None)."""
        kind = entry_kind(entry)
        memory = self.memory
        if kind == OBSERVE:
            return self._observe(entry, drop)
        if kind == CONSOLIDATE:
            memory.consolidate()
        elif kind == RESTORE:
            self.memory = self._load_tag(entry["tag"], int(entry["tag_seq"]))
            self.logged_step = int(entry["step"])
        elif kind == TAG and self._on_tag is not None:
            self._on_tag(entry, memory)
        return {**entry, "step": self.memory.step}, None

    def _observe(self, entry: dict, drop: frozenset[int]) -> tuple[dict | None, dict | None]:
        memory = self.memory
        vectors, texts, domain, learning_rate, _ = entry_args(entry)
        if entry["step"] != self.logged_step + len(texts):
            raise Unusable(f"the log jumps from step {self.logged_step} to {entry['step']}")
        self.logged_step = int(entry["step"])
        keep = [i for i in range(len(texts)) if i not in drop]
        if not keep:
            return None, None
        if drop:
            vectors, texts = np.ascontiguousarray(vectors[keep]), [texts[i] for i in keep]
        try:
            result = memory.observe_vectors(vectors, texts, domain=domain, learning_rate=learning_rate)
        except Exception as exc:  # noqa: BLE001 - any failure: this write cannot be part of the state
            raise EntryFailed(entry, exc) from exc
        if not drop and entry["step"] == memory.step:
            return entry, result  # as logged
        answered = answered_steps(entry)  # what its items were answered: kept through renumbering
        rewritten = {**entry, "step": memory.step, "answered": [answered[i] for i in keep]}
        if drop:
            rewritten.update(texts=texts, vectors=vectors.astype("<f4", copy=False).tobytes())
        return rewritten, result
