"""What of a `NeuralMemory` goes into its bytes, and how it comes back (layout: `memory.codec`).

A memory is saved as named parts (`to_parts`):
- `head` — the only part that changes between checkpoints: the config, counters, domain
  names, the network's weights and momentum, the hot set, the episodic store's manifest and
  its newest records (the tail, after the last full chunk);
- `ewc/<generation>` — the EWC Fisher and anchor, rewritten only by `consolidate()`;
- `chunk/<first id>` — `episode_chunk` records: vectors (float16), texts, steps, domains, patterns.
Every part but `head` is immutable: the same name always holds the same bytes, so a
content-addressed store writes, per checkpoint, the head plus the chunks filled since the last.
`to_blob` packs all parts into one self-describing object (format 2); `from_blob` also reads
format 1 (the network plus the old bounded pattern book), converting its exemplars to records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from memory import codec
from memory.config import MemoryConfig
from memory.decoded import DecodedParts
from memory.episodes import EpisodicStore, bytes_of
from memory.errors import IncompatibleState, InvalidInput
from memory.titans import TitansMemory


def weight_hash(memory) -> str:
    return codec.weight_hash([(f"w{i}", p) for i, p in enumerate(memory.net.params)])


def ewc_name(generation: int) -> str:
    return f"ewc/{generation:06d}"


def to_parts(memory) -> dict[str, bytes]:
    net, store = memory.net, memory.store
    parts = store.parts()
    if net.fisher:
        parts[ewc_name(memory.ewc_generation)] = codec.pack(
            "ewc", {"generation": memory.ewc_generation},
            {**{f"f{i}": f for i, f in enumerate(net.fisher)}, **{f"a{i}": a for i, a in enumerate(net.anchor)}})
    fields = {"config": memory.config.to_dict(), "step": memory.step, "avg_surprise": memory.avg_surprise,
              "domain_names": memory.domain_names, "domain_counts": dict(memory.domain_counts),
              "ewc": ewc_name(memory.ewc_generation) if net.fisher else None,
              "ewc_generation": memory.ewc_generation, "store": store.manifest(),
              "weight_hash": memory.weight_hash}
    arrays = {f"w{i}": p for i, p in enumerate(net.params)}
    arrays.update({f"m{i}": m for i, m in enumerate(net.momentum)})
    arrays.update(memory.hot.arrays())
    arrays.update({f"tail_{name}": column for name, column in store.tail_columns().items()})
    parts["head"] = codec.pack("head", fields, arrays)
    return parts


def non_finite(parts: Mapping[str, bytes]) -> list[str]:
    """Where a state's numbers hold NaN or infinity ("part/array", or "part/field"): such a
    state can neither learn nor answer (its weights only stay finite when it learns itself;
    an image made by hand need not have)."""
    found = []
    for part, data in sorted(parts.items()):
        fields, arrays = codec.arrays_of(data)
        found += [f"{part}/{name}" for name, array in arrays.items()
                  if array.dtype.kind in "fc" and not np.isfinite(array).all()]
        found += [f"{part}/{name}" for name, value in fields.items()
                  if isinstance(value, float) and not np.isfinite(value)]
    return found


def overflows(memory) -> str | None:
    """Why a state whose numbers are all finite still cannot learn or answer, or None: weights
    (or momentum) so large that one recall or one step on a probe key overflows, as in an image
    made by hand. Tried on a copy of the network, so the memory itself is not changed."""
    net = memory.net
    trial = TitansMemory(memory.config, loading=True)
    trial.params = [p.clone() for p in net.params]
    trial.momentum = [m.clone() for m in net.momentum]
    trial.fisher, trial.anchor = net.fisher, net.anchor  # read, never written, by a step
    probes = torch.nn.functional.normalize(
        torch.randn(3, memory.config.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1
    ).to(net.dtype)
    if not torch.isfinite(trial.recall(probes)).all():
        return "a recall overflows to infinity"
    try:
        trial.update(probes[:1])  # one item, then a chunk: the two paths of a step
        trial.update(probes[1:])
    except InvalidInput:
        return "a learning step overflows to infinity"
    return None


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    copy = torch.from_numpy(np.array(array))  # writable: the memory learns into it
    if copy.dtype != dtype:  # the head's weight hash was checked on the stored dtype
        raise IncompatibleState(f"memory state holds {copy.dtype} weights; its config says {dtype}")
    return copy


@dataclass(frozen=True)
class Head:
    """A `head` part, verified: its payload sha256 and its weights against their hash."""

    fields: dict
    arrays: dict[str, np.ndarray]  # read-only views of the part's bytes: copy before writing
    weights: int  # w0, w1, ...: the network's weight tensors the hash covers


def _verified_head(data: bytes) -> Head:
    fields, arrays = codec.unpack(data, "head")
    weights = sorted((name for name in arrays if name[0] == "w" and name[1:].isdigit()), key=lambda n: int(n[1:]))
    if codec.weight_hash([(name, arrays[name]) for name in weights]) != fields["weight_hash"]:
        raise IncompatibleState("memory state is inconsistent: its weights do not match their hash")
    return Head(fields, arrays, len(weights))


# Heads this process verified (memory.decoded): a fork burst loads one base's head per fork.
HEADS: DecodedParts[Head] = DecodedParts(_verified_head, 16 * 1024 * 1024)


def _new_memory(cls, config: dict, expected: MemoryConfig | None):
    """An empty memory of the saved config, its weights to be set from the state
    (IncompatibleState if `expected` differs in kind)."""
    restored = MemoryConfig.from_dict(config)
    if expected is not None:
        restored.require_compatible(expected)
    return cls(restored, loading=True)


def _set_network(net, saved: Mapping[str, Any], ewc: Mapping[str, Any] | None, tensor) -> None:
    """Weights and momentum (w0.., m0..), and the EWC Fisher and anchor (f0.., a0..) if saved."""
    n = len(net.params)
    net.params = [tensor(saved[f"w{i}"]) for i in range(n)]
    net.momentum = [tensor(saved[f"m{i}"]) for i in range(n)]
    if ewc is not None:
        net.fisher = [tensor(ewc[f"f{i}"]) for i in range(n)]
        net.anchor = [tensor(ewc[f"a{i}"]) for i in range(n)]


def from_parts(cls, parts: Mapping[str, bytes], expected: MemoryConfig | None = None):
    head = HEADS.get(bytes_of(parts, "head"))
    fields, arrays = head.fields, head.arrays
    memory = _new_memory(cls, fields["config"], expected)
    if head.weights != len(memory.net.params):
        raise IncompatibleState(f"memory state holds {head.weights} weight tensors; its config makes "
                                f"{len(memory.net.params)}")
    ewc = codec.unpack(bytes_of(parts, fields["ewc"]), "ewc")[1] if fields["ewc"] else None
    _set_network(memory.net, arrays, ewc, lambda a: _tensor(a, memory.net.dtype))
    memory.hot.load(arrays)
    tail = {name.removeprefix("tail_"): a for name, a in arrays.items() if name.startswith("tail_")}
    config = memory.config
    memory.store = EpisodicStore.restore(config.dim, config.episode_chunk, config.shortlist,
                                         fields["store"], parts, tail)
    memory.step, memory.avg_surprise = fields["step"], fields["avg_surprise"]
    memory.domain_names = list(fields["domain_names"])
    memory.domain_counts = Counter(fields["domain_counts"])
    memory.ewc_generation = fields["ewc_generation"]
    memory._hash = fields["weight_hash"]  # of exact copies of the weights `_verified_head` checked
    return memory


def to_blob(memory) -> bytes:
    parts = to_parts(memory)
    return codec.pack("neural-memory", {"parts": sorted(parts)},
                      {name: np.frombuffer(parts[name], dtype=np.uint8) for name in sorted(parts)})


def from_blob(cls, data: bytes, expected: MemoryConfig | None = None):
    if codec.format_version(data) == 1:
        return from_v1(cls, data, expected)
    fields, arrays = codec.unpack(data, "neural-memory")
    return from_parts(cls, {name: arrays[name].tobytes() for name in fields["parts"]}, expected)


def from_v1(cls, data: bytes, expected: MemoryConfig | None = None):
    """A format-1 state: same network (and weight_hash); each pattern-book exemplar becomes a
    record (slots oldest-seen first, stored at the slot's last-seen step), each slot a hot
    pattern with its count. The book's centroids are not needed any more."""
    header, tensors = codec.decode_v1(data)
    memory = _new_memory(cls, header["config"], expected)
    _set_network(memory.net, tensors, tensors if header["ewc"] else None, lambda t: t)
    memory.ewc_generation = 1 if header["ewc"] else memory.ewc_generation
    book = header["book"]
    for domain in book["domains"]:
        memory._domain_id(domain)
    last_seen, counts = tensors["last_seen"].tolist(), tensors["counts"].tolist()
    exemplars = tensors["exemplars"].to(torch.float32).numpy()
    for slot in sorted(range(book["used"]), key=lambda s: last_seen[s]):
        domain = memory._domain_id(book["domains"][slot])
        pattern = None
        for col, text in enumerate(book["texts"][slot]):
            record = memory.store.append(exemplars[slot, col], text, last_seen[slot], domain, pattern)
            pattern = record if pattern is None else pattern
            memory.hot.touch(pattern, record, last_seen[slot], domain)
        memory.hot.count[memory.hot.slot(pattern)] = counts[slot]
    memory.step, memory.avg_surprise = header["step"], header["avg_surprise"]
    memory.domain_counts = Counter(header["domain_counts"])
    return memory
