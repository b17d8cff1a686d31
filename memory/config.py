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
        problems = []
        if self.encoder not in ENCODER_DIMS:
            problems.append(f"encoder must be one of {sorted(ENCODER_DIMS)}, not {self.encoder!r}")
        elif self.dim != ENCODER_DIMS[self.encoder]:
            problems.append(f"dim must be {ENCODER_DIMS[self.encoder]} for encoder {self.encoder!r}")
        for name in ("memory_depth", "memory_width", "value_dim", "chunk_size", "pattern_slots",
                     "exemplars_per_slot", "replay_passes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer")
        if self.memory_width > 16384 or self.value_dim > 4096 or self.memory_depth > 8:
            problems.append("memory_width <= 16384, value_dim <= 4096, memory_depth <= 8")
        elif self.parameter_estimate > MAX_PARAMETERS:
            problems.append(f"memory too large: ~{self.parameter_estimate:,} weights (limit "
                            f"{MAX_PARAMETERS:,}); lower memory_width or memory_depth")
        if self.pattern_slots > 65536 or self.exemplars_per_slot > 64:
            problems.append("pattern_slots <= 65536 and exemplars_per_slot <= 64")
        if not (isinstance(self.episode_chunk, int) and 1 <= self.episode_chunk <= 1 << 16):
            problems.append("episode_chunk must be an integer from 1 to 65536")
        if not (isinstance(self.shortlist, int) and 1 <= self.shortlist <= 4096):
            problems.append("shortlist must be an integer from 1 to 4096")
        for name in ("lr", "key_scale", "value_bandwidth", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive finite number")
        for name in ("momentum", "forget", "fisher_decay", "reinforce_below", "merge_similarity",
                     "recall_neural_weight", "surprise_ema"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                problems.append(f"{name} must be between 0 and 1")
        if self.lr > 2:
            problems.append("lr must be <= 2 (above that each step overshoots)")
        if self.dtype not in ("float32", "float64"):
            problems.append("dtype must be 'float32' or 'float64'")
        if problems:
            raise InvalidInput("invalid memory config: " + "; ".join(problems))

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
        if "encoder" in data and "dim" not in data and data["encoder"] in ENCODER_DIMS:
            data["dim"] = ENCODER_DIMS[data["encoder"]]
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidInput(f"invalid memory config: {exc}") from exc
