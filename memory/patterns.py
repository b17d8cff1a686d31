"""The hot set: the most recently active patterns, with what the network and `explain` need.

A *pattern* is a group of records that reinforced each other: an observation close enough to a
stored record (fused surprise below `reinforce_below`) joins that record's pattern instead of
founding a new one. Its id is the id of the record that founded it (`memory.episodes`).

The hot set keeps, for up to `pattern_slots` patterns, how often each was reinforced, when it
was last seen, its domain and its newest `exemplars_per_slot` records (ids into the episodic
store, which holds the texts and vectors). When it is full the least recently seen pattern
leaves it: only those statistics go, its records stay in the episodic store and are still
found, recalled and recognised. `merge_similar` (run by consolidation) folds near-duplicate
patterns together; a merged pattern id is remembered as an alias of the one it joined.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Centroids = Callable[[np.ndarray], np.ndarray]  # member ids (slots, per_slot; -1 = none) -> unit rows


class HotSet:
    def __init__(self, slots: int, per_slot: int):
        self.capacity, self.per_slot = slots, per_slot
        self.used = 0
        self.pattern = np.zeros(slots, dtype=np.int64)  # pattern id of each used slot
        self.count = np.zeros(slots, dtype=np.int64)  # observations that reinforced it
        self.last_seen = np.zeros(slots, dtype=np.int64)  # step
        self.domain = np.zeros(slots, dtype=np.int32)  # domain id, 0 = none
        self.members = np.full((slots, per_slot), -1, dtype=np.int64)  # record ids, oldest first
        self.slot_of: dict[int, int] = {}  # pattern id -> slot
        self.aliases: dict[int, int] = {}  # merged pattern id -> the pattern it joined

    # ---- reads -----------------------------------------------------------------------------
    def resolve(self, pattern: int) -> int:
        while pattern in self.aliases:
            pattern = self.aliases[pattern]
        return pattern

    def slot(self, pattern: int) -> int | None:
        return self.slot_of.get(self.resolve(pattern))

    def newest_member(self, slot: int) -> int:
        """The slot's newest record id; -1 if it has none (only seen by a reader racing a write:
        readers do not lock, so they tolerate a slot caught mid-update)."""
        row = self.members[slot]
        row = row[row >= 0]
        return int(row[-1]) if len(row) else -1

    def member_ids(self, slot: int) -> list[int]:
        """Record ids of a slot's exemplars, newest first."""
        row = self.members[slot]
        return [int(r) for r in row[row >= 0][::-1]]

    def strongest(self, n: int) -> list[int]:
        """Up to n used slots, most reinforced first (ties: most recently seen first)."""
        used = self.used
        order = np.lexsort((-self.last_seen[:used], -self.count[:used]))
        return order[:n].tolist()

    def recent(self) -> list[int]:
        """Used slots, most recently seen first."""
        return np.argsort(-self.last_seen[: self.used], kind="stable").tolist()

    # ---- writes ----------------------------------------------------------------------------
    def touch(self, pattern: int, record: int, step: int, domain: int) -> None:
        """Pattern `pattern` was observed again (or for the first time) as record `record`."""
        pattern = self.resolve(pattern)
        slot = self.slot_of.get(pattern)
        if slot is None:
            slot = self._add(pattern)
        self.count[slot] += 1
        self.last_seen[slot] = step
        if domain and not self.domain[slot]:
            self.domain[slot] = domain
        self._add_member(slot, record)

    def _add(self, pattern: int) -> int:
        if self.used == self.capacity:
            self._remove(self._least_recent())
        slot = self.used
        self.used += 1
        self.pattern[slot], self.count[slot], self.last_seen[slot], self.domain[slot] = pattern, 0, 0, 0
        self.members[slot] = -1
        self.slot_of[pattern] = slot
        return slot

    def _add_member(self, slot: int, record: int) -> None:
        row = self.members[slot]
        if record in row:
            return
        if row[-1] >= 0:  # full: the oldest exemplar leaves the slot (not the store)
            row[:-1] = row[1:].copy()
            row[-1] = record
        else:
            row[int(np.argmax(row < 0))] = record

    def _least_recent(self) -> int:
        seen = self.last_seen[: self.used].astype(np.float64) - 1e-6 * self.count[: self.used]
        return int(np.argmin(seen))

    def _remove(self, slot: int) -> None:
        """Swap-remove: the last used slot moves into `slot`."""
        last = self.used - 1
        del self.slot_of[int(self.pattern[slot])]
        if slot != last:
            for column in self._columns():
                column[slot] = column[last]
            self.slot_of[int(self.pattern[slot])] = slot
        self.used -= 1

    def _columns(self):
        return self.pattern, self.count, self.last_seen, self.domain, self.members

    # ---- consolidation ---------------------------------------------------------------------
    def merge_similar(self, threshold: float, centroids: Centroids, target_fill: float | None = None) -> int:
        """Merge patterns whose centroids are at least `threshold` alike; if the set is still
        fuller than `target_fill`, keep merging the closest pairs until it is not. Works in
        rounds: one similarity matrix per round, disjoint pairs merged greedily."""
        merged = 0
        while self.used > 1:
            target = self.used if target_fill is None else int(target_fill * self.capacity)
            wanted = max(0, self.used - target)
            unit = centroids(self.members[: self.used])
            sims = unit @ unit.T  # (used, used) float32: 64 MB at 4,096 patterns
            order = np.arange(self.used)
            sims[order[:, None] >= order[None, :]] = -4.0  # each pair once, never with itself
            flat = sims.ravel()
            top = np.argpartition(-flat, min(flat.size, max(2 * wanted, 64)) - 1)[: max(2 * wanted, 64)]
            top = top[np.lexsort((top, -flat[top]))]  # closest first, ties by position
            gone: set[int] = set()
            for at in top.tolist():
                if flat[at] < threshold and len(gone) >= wanted:
                    break
                i, j = divmod(at, self.used)
                if i in gone or j in gone:
                    continue
                keep, drop = (i, j) if self.count[i] >= self.count[j] else (j, i)
                self._absorb(keep, drop)
                gone.add(drop)
            if not gone:
                break
            self._compact(gone)
            merged += len(gone)
        return merged

    def _absorb(self, keep: int, gone: int) -> None:
        self.count[keep] += self.count[gone]
        self.last_seen[keep] = max(self.last_seen[keep], self.last_seen[gone])
        self.domain[keep] = self.domain[keep] or self.domain[gone]
        self.aliases[int(self.pattern[gone])] = int(self.pattern[keep])
        for record in sorted(self.members[gone][self.members[gone] >= 0].tolist()):
            self._add_member(keep, record)

    def _compact(self, gone: set[int]) -> None:
        keep = [slot for slot in range(self.used) if slot not in gone]
        for column in self._columns():
            column[: len(keep)] = column[keep]
        self.used = len(keep)
        self.slot_of = {int(p): slot for slot, p in enumerate(self.pattern[: self.used].tolist())}

    # ---- state -----------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        used = self.used
        return {"hot_pattern": self.pattern[:used], "hot_count": self.count[:used],
                "hot_last_seen": self.last_seen[:used], "hot_domain": self.domain[:used],
                "hot_members": self.members[:used],
                "aliases": np.array(sorted(self.aliases.items()), dtype=np.int64).reshape(-1, 2)}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        used = len(arrays["hot_pattern"])
        self.used = used
        for column, name in zip(self._columns(), ("hot_pattern", "hot_count", "hot_last_seen",
                                                  "hot_domain", "hot_members")):
            column[:used] = arrays[name]
        self.slot_of = {int(p): slot for slot, p in enumerate(self.pattern[:used].tolist())}
        self.aliases = {int(a): int(b) for a, b in arrays["aliases"].tolist()}
