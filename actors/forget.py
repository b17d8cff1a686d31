"""Exact forgetting, the parts without locks: select, find where to start, replay without.

A forget job (actors/forgetting.py) asks for a memory "as if these observations had never
happened". Every change of state is in the kept history (actors/history.py), so:

1. `scan` reads the history once and finds the selected items (by text, in the same words, a list of texts
   such as the patterns `infer` returned, a domain, or a range of the steps `observe` answered,
   which an earlier forget does not renumber: actors/wal.py `answered_steps`), each as
   (entry seq, item);
2. `choose_start` picks the newest stored state (history base, auto-checkpoint or user tag)
   logged before the first of them: a state that cannot contain them;
3. `Rebuild` replays the history from there, dropping the selected items (a batch is replayed
   without them, as by a twin that never saw them). It notes which states the old timeline
   had with selected items in them (how many: `held`): user tags taken then, and fork points,
   are rebuilt from the replayed state.

Exactness is claimed only when it is proven: the start state is older than every selected item
(a checkpoint's seq says what it holds), and no selected text is in the history base itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import contract
from errors import InvalidInput

from actors.durability import from_parts, to_parts
from actors.replay import Replay
from actors.wal import (OBSERVE, RESTORE, TAG, answered_steps, entry_args, entry_kind, history_items,
                        write_fingerprint)

__all__ = ["Selector", "Scan", "scan", "choose_start", "Rebuild", "NotExact", "SELECTOR_KINDS",
           "DRY_RUN_ITEMS"]

SELECTOR_KINDS = ("text", "texts", "domain", "steps")
DRY_RUN_ITEMS = 1000  # items a dry run lists (it counts them all)


class NotExact(Exception):
    """The kept history cannot prove the result exact (the message says why)."""


@dataclass(frozen=True)
class Selector:
    """Which observations to forget: exactly one kind (see SELECTOR_KINDS). A text selects every
    observation that says it in the same words (`contract.same_words`): a copy differing in
    case or a closing full stop was left behind, and the job said it had found nothing."""

    kind: str
    texts: frozenset[str] = frozenset()
    domain: str | None = None
    steps: tuple[int, int] | None = None
    _words: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_words", frozenset(contract.same_words(t) for t in self.texts))

    @classmethod
    def from_dict(cls, spec: dict) -> "Selector":
        given = [k for k in SELECTOR_KINDS if spec.get(k) not in (None, [], "")]
        if len(given) != 1:
            raise InvalidInput("give exactly one selector: `text` (one text; every observation saying it in the "
                               "same words goes, case, spacing and a closing full stop aside), `texts` (a "
                               "list, e.g. the patterns infer returned), `domain`, or `steps` ({from, to})")
        kind = given[0]
        if kind == "text":
            return cls("text", texts=frozenset([contract.check_text(spec["text"])]))
        if kind == "texts":
            texts = spec["texts"]
            if not isinstance(texts, list) or len(texts) > contract.MAX_BATCH_ITEMS:
                raise InvalidInput(f"texts must be a list of 1-{contract.MAX_BATCH_ITEMS} texts")
            return cls("texts", texts=frozenset(contract.check_text(t) for t in texts))
        if kind == "domain":
            return cls("domain", domain=contract.check_domain(spec["domain"]))
        steps = spec["steps"]
        low, high = (steps.get("from"), steps.get("to")) if isinstance(steps, dict) else (None, None)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (low, high)) or low > high:
            raise InvalidInput("steps must be {\"from\": a, \"to\": b} with 1 <= a <= b (both included)")
        return cls("steps", steps=(low, high))

    def to_dict(self) -> dict:
        """Everything needed to run the job again (held only while it runs: it has the texts)."""
        if self.kind in ("text", "texts"):
            return {self.kind: sorted(self.texts) if self.kind == "texts" else next(iter(self.texts))}
        if self.kind == "domain":
            return {"domain": self.domain}
        return {"steps": {"from": self.steps[0], "to": self.steps[1]}}

    def describe(self) -> dict:
        """What was selected, without any text (audit records and finished jobs)."""
        if self.kind in ("text", "texts"):
            return {"kind": self.kind, "texts": len(self.texts)}
        if self.kind == "domain":
            return {"kind": "domain", "domain": self.domain}
        return {"kind": "steps", "from": self.steps[0], "to": self.steps[1]}

    def matches(self, text: str, step: int, domain: str | None) -> bool:
        if self.kind in ("text", "texts"):
            return contract.same_words(text) in self._words
        if self.kind == "domain":
            return domain == self.domain
        return self.steps[0] <= step <= self.steps[1]


@dataclass
class Scan:
    """The selected items in the kept history, and what a replay will meet."""

    matches: dict[int, frozenset[int]] = field(default_factory=dict)  # entry seq -> item positions
    count: int = 0
    listed: list[dict] = field(default_factory=list)  # the first DRY_RUN_ITEMS, with their texts
    restores: list[tuple[int, str, int]] = field(default_factory=list)  # (seq, tag, tag's seq)
    tags: dict[int, str] = field(default_factory=dict)  # seq of each tag entry -> tag
    last_seq: int = 0

    @property
    def first_seq(self) -> int | None:
        return min(self.matches) if self.matches else None


def items_of(entry: dict) -> Iterable[tuple[int, str, int]]:
    """(position, text, the step observe answered) of each item of an observe entry."""
    return zip(range(len(entry.get("texts") or [])), entry.get("texts") or [], answered_steps(entry))


def scan(events: Iterable[dict], selector: Selector, *, own_steps: bool = True) -> Scan:
    """The selected items of `events`. `own_steps=False`: a steps selector names none of them
    (a fork's run of its parent's job: the steps were the parent's answers, not the fork's)."""
    found = Scan()
    for entry in events:
        kind, seq = entry_kind(entry), int(entry["seq"])
        found.last_seq = seq
        if kind == RESTORE:
            found.restores.append((seq, entry["tag"], int(entry["tag_seq"])))
        elif kind == TAG:
            found.tags[seq] = entry["tag"]
        elif kind == OBSERVE:
            if selector.kind == "steps" and not own_steps:
                continue
            hits = [(i, step) for i, text, step in items_of(entry) if selector.matches(text, step, entry.get("domain"))]
            if hits:
                found.matches[seq] = frozenset(i for i, _ in hits)
                found.count += len(hits)
                for i, step in hits[: max(0, DRY_RUN_ITEMS - len(found.listed))]:
                    found.listed.append({"seq": seq, "step": step, "text": entry["texts"][i],
                                         "domain": entry.get("domain")})
    return found


def choose_start(candidates: list[dict], found: Scan, loadable: Callable[[str, int], bool]) -> dict:
    """The newest candidate state logged before every selected item, from which every restore
    the replay will meet can be redone: a restore of a tag taken before the start needs that
    tag still stored (a tag deleted by an earlier forget moves the start before it)."""
    bound = found.first_seq
    while True:
        before = [c for c in candidates if int(c["seq"]) < bound]
        if not before:
            raise NotExact("no stored state is older than the first selected observation")
        start = max(before, key=lambda c: (int(c["seq"]), c.get("object_key") is not None))
        missing = [tag_seq for seq, tag, tag_seq in found.restores
                   if seq > start["seq"] and tag_seq <= start["seq"] and not loadable(tag, tag_seq)]
        if not missing:
            return start
        bound = min(missing)


class Rebuild:
    """Replays entries from a start state, dropping the selected items; collects the rewritten
    log, the history items and results, and the states to rebuild (tags, fork points)."""

    def __init__(self, memory, matches: dict[int, frozenset[int]], load_stored: Callable[[str], object],
                 keep_states: set[int], held: int = 0, logged_step: int | None = None) -> None:
        self.matches = matches
        self._load_stored = load_stored
        self._keep = keep_states  # seqs whose replayed state is needed (restores, fork points)
        self.replay = Replay(memory, self._load_tag, on_tag=self._on_tag)
        if logged_step is not None:  # the start replaces a state of another step (a fork's base)
            self.replay.logged_step = logged_step
        # How many selected items the old timeline's state holds here: `held` at the start (a
        # fork's base held what its parent's forget removed from it), then counted per entry.
        self.held = self.inherited = held
        self.held_at: dict[int, int] = {}  # seq -> held, for tags and kept states
        self.states: dict[int, dict] = {}  # seq -> replayed state as parts (tags, fork points)
        self.entries: list[dict] = []  # the rewritten log, in order
        self.items: list[dict] = []  # history items of the replayed observations
        self.results: list[tuple[str | None, dict, str]] = []  # (request id, answer, fingerprint)
        self.forgotten = 0  # selected items dropped from this log (the start's `inherited` aside)
        self.replayed = 0  # observations (items) the old log held in this replay
        self.domains: set[str] = set()  # of the kept observations
        self.forgotten_domains: set[str] = set()
        self.forgotten_texts: set[str] = set()  # kept in memory only: chunks holding them go too
        self.forgotten_writes: set[str] = set()  # request ids of the writes items were dropped from

    @property
    def memory(self):
        return self.replay.memory

    @property
    def tainted(self) -> bool:
        return self.held > 0

    @property
    def removed(self) -> int:
        """Selected items that left this memory's state: its log's and its start state's."""
        return self.forgotten + self.inherited

    def _load_tag(self, tag: str, tag_seq: int):
        if tag_seq in self.states:
            return from_parts(self.states[tag_seq])
        return self._load_stored(tag)

    def start_at(self, seq: int) -> None:
        """The start state is this memory's state at log position `seq`: a fork taken there
        holds what the start holds (a fork's base holds what its parent's forget took from it,
        so a fork made from it before it wrote anything is rebuilt too, not reported clean)."""
        if seq in self._keep:
            self.held_at[seq] = self.held
            self.states[seq] = to_parts(self.memory)

    def _on_tag(self, entry: dict, memory) -> None:
        self.held_at[int(entry["seq"])] = self.held

    def apply(self, entry: dict) -> None:
        seq, kind = int(entry["seq"]), entry_kind(entry)
        drop = self.matches.get(seq, frozenset())
        if kind == RESTORE:
            self.held = self.held_at.get(int(entry["tag_seq"]), 0)
        if drop:
            self.held += len(drop)
            self.forgotten += len(drop)
            self.forgotten_texts.update(entry["texts"][i] for i in drop)
            request_id = (entry.get("options") or {}).get("request_id")
            if request_id:
                self.forgotten_writes.add(request_id)
            if entry.get("domain"):
                self.forgotten_domains.add(entry["domain"])
        if kind == OBSERVE:
            self.replayed += len(entry.get("texts") or [])
        rewritten, result = self.replay.apply(entry, drop)
        if rewritten is not None:
            self.entries.append(rewritten)
        if result is not None:
            self._note(rewritten, result)
        if seq in self._keep or (kind == TAG and self.tainted):
            self.held_at[seq] = self.held
            self.states[seq] = to_parts(self.memory)  # immutable parts shared, not copied

    def _note(self, entry: dict, result: dict) -> None:
        _, texts, domain, learning_rate, request_id = entry_args(entry)
        result = {**result, "weight_hash": self.memory.weight_hash}
        fingerprint = write_fingerprint(texts, domain, learning_rate)
        items = history_items(result, texts, request_id, fingerprint)
        if "answered" in entry:  # renumbered: keep what observe answered beside it
            for item, answered in zip(items, entry["answered"]):
                if item["step"] != answered:
                    item["answered_step"] = int(answered)
            # a retry is told the steps observe answered (what a `steps` selector names)
            result["answered"] = [int(answered) for answered in entry["answered"]]
        self.items += [{**item, "at": entry.get("at")} for item in items]
        if domain:
            self.domains.add(domain)
        self.results.append((request_id, result, fingerprint))
