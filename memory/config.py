"""`MemoryConfig`: everything needed to rebuild a memory, saved inside every checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from memory.errors import IncompatibleState, InvalidInput

# Calibration of the episodic (pattern book) familiarity per encoder: the cosine at which an
# input is "half familiar", and how sharp that transition is. For MiniLM, paraphrases sit at
# cosine >= 0.75, same-topic facts at 0.4-0.6 and unrelated text below 0.3 (measured on the
# seed suite's sentences).
ENCODER_CALIBRATION = {"minilm": (0.55, 0.08), "minilm-int8": (0.55, 0.08), "hash": (0.45, 0.08)}
ENCODER_DIMS = {"minilm": 384, "minilm-int8": 384, "hash": 384}
MAX_PARAMETERS = 16_000_000  # one actor's weights + momentum + EWC state stay under ~256 MB
MAX_EXEMPLARS = 262_144  # pattern-book exemplar vectors (~200 MB at dim 384 in float16)
MAX_REPLAY = 8_192  # exemplar updates per consolidate() (~3 s of one core at the default size)


@dataclass(frozen=True)
class Bound:
    """The allowed values of one numeric config field. `low_open`: the low end is excluded."""

    kind: type  # int (bool refused) or float (int accepted); never NaN or infinite
    low: float
    high: float
    low_open: bool = False
    optional: bool = False  # None allowed (means: the encoder's default)

    def check(self, name: str, value: object) -> str | None:
        """None if `value` is allowed, else what to fix (naming the field)."""
        if value is None and self.optional:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int and not (number and isinstance(value, int)):
            return f"{name} must be an integer {self._range()} (got {_show(value)})"
        if not number or (isinstance(value, float) and not math.isfinite(value)):  # an int is finite, however large
            return f"{name} must be a finite number {self._range()} (got {_show(value)})"
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            return f"{name} must be {self._range()} (got {_show(value)})"
        return None

    def _range(self) -> str:
        low = "(" if self.low_open else "["
        text = f"in {low}{_number(self.low)}, {_number(self.high)}]"
        return text + " or null" if self.optional else text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _show(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int is slow, or refused
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


# Every numeric field's range, in one place: ranges that keep the arithmetic finite (no
# division by ~0, no overflow in exp or the weights) and each call's cost bounded. A test
# checks that every field of MemoryConfig is either here or one of the named string fields.
BOUNDS: dict[str, Bound] = {
    "dim": Bound(int, 1, 4096),
    "memory_depth": Bound(int, 1, 8),
    "memory_width": Bound(int, 1, 16384),
    "key_scale": Bound(float, 0, 100, low_open=True),
    "value_dim": Bound(int, 1, 4096),
    "value_bandwidth": Bound(float, 0, 100, low_open=True),
    # above 2 each step overshoots; below 1e-6 nothing is learned, and an observe's
    # learning_rate (≤ 2) over a subnormal lr overflowed to inf
    "lr": Bound(float, 1e-6, 2),
    "momentum": Bound(float, 0, 0.99),  # 1 would carry past surprise forever (no friction)
    "forget": Bound(float, 0, 1),
    "max_grad_norm": Bound(float, 0, 1e6, low_open=True),
    "chunk_size": Bound(int, 1, 1024),  # a chunk's coefficients are a chunk x chunk matrix
    "ewc_lambda": Bound(float, 0, 1e4),
    "fisher_decay": Bound(float, 0, 1),
    "replay_items": Bound(int, 1, MAX_REPLAY),
    "replay_passes": Bound(int, 1, 16),
    "pattern_slots": Bound(int, 1, 65536),
    "exemplars_per_slot": Bound(int, 1, 64),
    "episode_chunk": Bound(int, 1, 1 << 16),  # records per immutable part of the episodic store
    "shortlist": Bound(int, 1, 4096),  # sign-bit candidates ranked by exact cosine per lookup
    "reinforce_below": Bound(float, 0, 1),
    "merge_similarity": Bound(float, 0, 1),
    "familiar_cos": Bound(float, -1, 1, optional=True),
    "familiar_width": Bound(float, 0.01, 1, optional=True),  # exp(2 / width) must not overflow
    "recall_neural_weight": Bound(float, 0, 1),
    "surprise_ema": Bound(float, 0, 1),
    "seed": Bound(int, 0, 2**32 - 1),  # torch seeds seed * 7919 + k, which must fit in 64 bits
}
STRING_FIELDS = ("encoder", "dtype")  # checked by name in MemoryConfig.__post_init__


@dataclass(frozen=True)
class MemoryConfig:
    # --- encoder -------------------------------------------------------------------------
    encoder: str = "minilm"  # text encoder name ("minilm" or "hash"); fixes `dim`
    dim: int = 384  # encoder output size = key size of the neural memory
    # --- the neural memory M: keys -> values (Titans, arXiv 2501.00663) --------------------
    memory_depth: int = 2  # layers of the MLP memory (1 = a linear memory)
    memory_width: int = 1024  # hidden width of the MLP memory
    key_scale: float = 2.0  # std of first-layer weights on unit keys: higher = more local, less crosstalk
    value_dim: int = 128  # size of the content (value) view, a random-Fourier map of the input
    value_bandwidth: float = 2.5  # beta of that map: values of different texts are ~orthogonal
    lr: float = 0.1  # base step: share of the output error the output layer removes per item
    momentum: float = 0.25  # eta: how much past surprise carries into the next update (eq. 10)
    forget: float = 2e-5  # alpha: weight decay per item, scaled by how surprising the item was
    max_grad_norm: float = 500.0 # per-item gradient clip, keeps a pathological input from blowing up M
    chunk_size: int = 32  # items per mini-batch when observing a batch (all graded at chunk start)
    # --- consolidation (online EWC, Schwarz et al. 2018) ---------------------------------
    ewc_lambda: float = 50.0  # strength of the pull back towards the consolidated weights
    fisher_decay: float = 0.7  # how much of the previous Fisher estimate each consolidation keeps
    replay_items: int = 512  # pattern-book exemplars replayed into the weights per consolidate()
    replay_passes: int = 2  # passes over them
    # --- episodic store (every distinct text, searchable; decodes the network into text) ---
    episode_chunk: int = 1024  # records per immutable state part (the newest go in the head)
    shortlist: int = 64  # candidates (by sign-bit Hamming distance) ranked by exact cosine per query
    # --- hot set (statistics of the most recently active patterns) -------------------------
    pattern_slots: int = 4096  # patterns tracked; when full the least recently seen leaves it
    exemplars_per_slot: int = 4  # newest records listed per pattern (all stay in the store)
    reinforce_below: float = 0.25  # an input less surprising than this reinforces its pattern
    merge_similarity: float = 0.85  # consolidate() merges patterns whose centroids are this close
    # --- scoring ----------------------------------------------------------------------------
    familiar_cos: float | None = None  # episodic half-familiar cosine (None: encoder default)
    familiar_width: float | None = None  # sharpness of that transition (None: encoder default)
    recall_neural_weight: float = 0.3  # share of the network's recall in infer's ranking
    surprise_ema: float = 0.05  # smoothing of the running average surprise in stats()
    seed: int = 0  # seeds the fixed random maps and the initial weights
    dtype: str = "float32"  # "float64" for exactness tests

    def __post_init__(self) -> None:
        problems = [problem for name, bound in BOUNDS.items()
                    if (problem := bound.check(name, getattr(self, name))) is not None]
        if not isinstance(self.encoder, str) or self.encoder not in ENCODER_DIMS:
            problems.append(f"encoder must be one of {sorted(ENCODER_DIMS)}, not {self.encoder!r}")
        elif self.dim != ENCODER_DIMS[self.encoder]:
            problems.append(f"dim must be {ENCODER_DIMS[self.encoder]} for encoder {self.encoder!r}")
        if self.dtype not in ("float32", "float64"):
            problems.append("dtype must be 'float32' or 'float64'")
        if not problems:  # the joint limits need every field's own range to hold first
            problems += self._cost_problems()
        if problems:
            raise InvalidInput("invalid memory config: " + "; ".join(problems))

    def _cost_problems(self) -> list[str]:
        """Limits on what one memory may cost: weights, pattern-book size, consolidation work."""
        problems = []
        if self.parameter_estimate > MAX_PARAMETERS:
            problems.append(f"memory too large: ~{self.parameter_estimate:,} weights (limit "
                            f"{MAX_PARAMETERS:,}); lower memory_width or memory_depth")
        if self.pattern_slots * self.exemplars_per_slot > MAX_EXEMPLARS:
            problems.append(f"pattern_slots x exemplars_per_slot must be <= {MAX_EXEMPLARS:,} "
                            "(the pattern book's memory)")
        if self.replay_items * self.replay_passes > MAX_REPLAY:
            problems.append(f"replay_items x replay_passes must be <= {MAX_REPLAY:,} (the work of "
                            "one consolidate)")
        return problems

    @property
    def parameter_estimate(self) -> int:
        sizes = [self.dim] + [self.memory_width] * (self.memory_depth - 1) + [self.value_dim]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def calibration(self) -> tuple[float, float]:
        mid, width = ENCODER_CALIBRATION[self.encoder]
        return (self.familiar_cos if self.familiar_cos is not None else mid,
                self.familiar_width if self.familiar_width is not None else width)

    def require_compatible(self, expected: "MemoryConfig") -> None:
        """IncompatibleState unless a memory built with this config can take the vectors of
        `expected`'s encoder (the one check, used by `NeuralMemory.from_bytes` and the actor)."""
        if (expected.encoder, expected.dim) != (self.encoder, self.dim):
            raise IncompatibleState(
                f"state was made with encoder {self.encoder!r} (dim {self.dim}); this memory "
                f"uses {expected.encoder!r} (dim {expected.dim})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "MemoryConfig":
        """Build from a (possibly partial) dict; unknown fields are an error, not ignored."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown memory config field(s) {unknown}; known: {sorted(known)}")
        if "dim" not in data and isinstance(data.get("encoder"), str) and data["encoder"] in ENCODER_DIMS:
            data["dim"] = ENCODER_DIMS[data["encoder"]]
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidInput(f"invalid memory config: {exc}") from exc
