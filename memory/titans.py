"""Titans neural long-term memory (arXiv 2501.00663), pure torch, with hand-written gradients.

The memory M is a small MLP from keys to values, trained online on the associative loss
ℓ(M; k, v) = ‖M(k) − v‖² (eq. 12). Each observed item takes one step of

    S_t = η S_{t−1} − θ_t ∇ℓ(M_{t−1}; k_t, v_t)        (eq. 10: momentum = past surprise)
    M_t = (1 − α_t) M_{t−1} + S_t                       (eq. 13: adaptive forgetting)

where θ_t is surprise-scaled and normalised by the input's feature energy (so `lr` is the share
of the output error one step removes), and α_t grows with surprise. A batch is processed in
chunks: within a chunk every gradient is taken at the chunk-start weights (Titans' mini-batch
form), which lets the recurrence above collapse into one weighted sum per chunk. With chunk
size 1 this is exactly item-by-item streaming.

Keys are the unit-length text embedding (the cue view); values are a fixed random-Fourier map
of it (the content view). With k = v the network would learn the identity and soon find
everything familiar; with random-Fourier values, different texts have near-orthogonal targets.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from memory.config import MemoryConfig
from memory.errors import InvalidInput

Params = list[torch.Tensor]  # [W0, b0, W1, b1, ...]; W_l: (out, in), b_l: (out,)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_grad(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


class ValueMap:
    """Fixed random-Fourier features: the content view v(x), unit length. Never trained (and
    shared between memories, see `value_map`: nothing may write to its tensors)."""

    def __init__(self, seed: int, value_dim: int, dim: int, bandwidth: float, dtype: torch.dtype):
        gen = torch.Generator().manual_seed(seed * 7919 + 1)
        self.weight = torch.randn(value_dim, dim, generator=gen, dtype=torch.float64)
        self.weight = (self.weight * bandwidth).to(dtype)  # (value_dim, dim)
        self.phase = (torch.rand(value_dim, generator=gen, dtype=torch.float64) * 2 * math.pi).to(dtype)

    def __call__(self, keys: torch.Tensor) -> torch.Tensor:  # (n, dim) -> (n, value_dim)
        v = torch.cos(keys @ self.weight.T + self.phase)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


@functools.lru_cache(maxsize=8)
def value_map(seed: int, value_dim: int, dim: int, bandwidth: float, dtype: torch.dtype) -> "ValueMap":
    """The ValueMap of these settings, made once per process and shared by every memory that
    uses them: it is a pure function of them and never written to, and drawing it costs a
    few ms per memory started (a fork burst starts hundreds)."""
    return ValueMap(seed, value_dim, dim, bandwidth, dtype)


def init_params(config: MemoryConfig, dtype: torch.dtype, *, random: bool = True) -> Params:
    """Random first layers (they start as random features), zero output layer (M(k) = 0:
    a new memory knows nothing, so everything is fully surprising). `random=False`: tensors of
    the same shapes, left uninitialised, for a loaded state to overwrite (drawing the random
    ones costs ~5-10 ms, which a fork or a wake-up would throw away)."""
    gen = torch.Generator().manual_seed(config.seed * 7919 + 2)
    sizes = [config.dim] + [config.memory_width] * (config.memory_depth - 1) + [config.value_dim]
    params: Params = []
    if not random:
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            params += [torch.empty(fan_out, fan_in, dtype=dtype), torch.empty(fan_out, dtype=dtype)]
        return params
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = layer == len(sizes) - 2
        if last:
            weight = torch.zeros(fan_out, fan_in, dtype=torch.float64)
        elif layer == 0:
            weight = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) * config.key_scale
        else:
            weight = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
        bias = torch.zeros(fan_out, dtype=torch.float64)
        if not last:
            # uniform phases for the sin features of the first layer
            bias = (torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        params += [weight.to(dtype), bias.to(dtype)]
    return params


def activation(layer: int, x: torch.Tensor) -> torch.Tensor:
    """sin on the first layer (random-Fourier-like features: zero mean, so one item's update
    barely leaks into unrelated items' outputs — GELU's positive mean leaked ~40% into every
    other item and the network remembered nothing past a few hundred items); GELU deeper."""
    return torch.sin(x) if layer == 0 else gelu(x)


def activation_grad(layer: int, x: torch.Tensor) -> torch.Tensor:
    return torch.cos(x) if layer == 0 else gelu_grad(x)


def forward(params: Params, keys: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """M(keys) and the per-layer (input, pre-activation) cache that `backprop` needs."""
    cache = []
    x = keys  # (n, dim)
    n_layers = len(params) // 2
    for layer in range(n_layers):
        weight, bias = params[2 * layer], params[2 * layer + 1]
        pre = torch.addmm(bias, x, weight.T)  # x Wᵀ + b, (n, out)
        cache.append((x, pre))
        x = pre if layer == n_layers - 1 else activation(layer, pre)
    return x, cache


def output_error(params: Params, keys: torch.Tensor, values: torch.Tensor):
    pred, cache = forward(params, keys)
    return pred - values, cache  # (n, value_dim)


def layer_deltas(params: Params, err: torch.Tensor, cache) -> list[torch.Tensor]:
    """dℓ_i/d(pre-activation) of every layer for every item, (n, out_l): the backward pass
    shared by the gradient norms (clipping) and the weighted gradients (the update)."""
    n_layers = len(params) // 2
    deltas: list[torch.Tensor] = [torch.empty(0)] * n_layers
    delta = 2.0 * err  # dℓ/dM(k), (n, out)
    for layer in reversed(range(n_layers)):
        _, pre = cache[layer]
        if layer != n_layers - 1:
            delta = delta * activation_grad(layer, pre)
        deltas[layer] = delta
        if layer:
            delta = delta @ params[2 * layer]  # back through W to the previous activation
    return deltas


def weighted_grads(deltas: list[torch.Tensor], cache, coeffs: torch.Tensor) -> list[Params]:
    """For each column c of coeffs (n, k): Σ_i coeffs_ic · ∇ℓ_i; one matmul per layer each."""
    grads: list[Params] = []
    for column in range(coeffs.shape[1]):
        out: Params = []
        for delta, (x, _) in zip(deltas, cache):
            weighted = delta * coeffs[:, column : column + 1]
            out += [weighted.T @ x, weighted.sum(0)]  # (out, in), (out,)
        grads.append(out)
    return grads


def grad_norms(deltas: list[torch.Tensor], cache) -> torch.Tensor:
    """‖∇ℓ_i‖ for each item without forming per-item gradients (outer products: ‖a bᵀ‖ = ‖a‖‖b‖)."""
    total = torch.zeros(deltas[0].shape[0], dtype=deltas[0].dtype)
    for delta, (x, _) in zip(deltas, cache):
        total += (delta * delta).sum(1) * ((x * x).sum(1) + 1.0)
    return total.sqrt()


def backprop(params: Params, err: torch.Tensor, cache, coeffs: torch.Tensor) -> list[Params]:
    """For each column c of coeffs (n, k): Σ_i coeffs_ic · ∇ℓ_i, ℓ_i = ‖M(k_i) − v_i‖²."""
    return weighted_grads(layer_deltas(params, err, cache), cache, coeffs)


def squared_grad_means(deltas: list[torch.Tensor], cache) -> Params:
    """Mean over items of each parameter's squared per-item gradient (the diagonal Fisher).
    For a layer with input x and output delta δ: Σ_i (δ_i x_iᵀ)² = (δ²)ᵀ x², no per-item grads."""
    n = deltas[0].shape[0]
    out: Params = []
    for delta, (x, _) in zip(deltas, cache):
        out += [(delta * delta).T @ (x * x) / n, (delta * delta).mean(0)]
    return out


def feature_energy(cache) -> torch.Tensor:
    """‖h‖² + 1 of the output layer's input, per item: the NLMS normaliser for the step size."""
    x, _ = cache[-1]
    return (x * x).sum(1) + 1.0


class TitansMemory:
    """The learnable part of a memory: MLP weights, momentum, and the EWC anchor."""

    def __init__(self, config: MemoryConfig, *, loading: bool = False):
        """`loading`: the weights are about to be overwritten by a saved state (not drawn)."""
        self.config = config
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.values = value_map(config.seed, config.value_dim, config.dim, config.value_bandwidth, self.dtype)
        self.params: Params = init_params(config, self.dtype, random=not loading)
        self.momentum: Params = [torch.zeros_like(p) for p in self.params]
        # Online EWC: diagonal Fisher and the weights it anchors to (empty until consolidate()).
        self.fisher: Params = []
        self.anchor: Params = []
        # Writer-only scratch for a chunk's step M_C − M_0: a fresh few-MB tensor per chunk cost
        # page faults (the allocator hands freed blocks back to the OS) about as long as the
        # step's own arithmetic. Single items allocate instead: for them the extra 2 MB of
        # working set measured slower (observe p50 ~2.5 vs ~2.9 ms).
        self._steps: Params = [torch.empty_like(p) for p in self.params]

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.params)

    def neural_surprise(self, keys: torch.Tensor) -> torch.Tensor:
        """Relative recall error ‖M(k) − v(k)‖ / ‖v(k)‖ in [0, 1] per key (values are unit)."""
        err, _ = output_error(self.params, keys, self.values(keys))
        return err.norm(dim=1).clamp(max=1.0)

    def diagonal_fisher(self, keys: torch.Tensor) -> Params:
        """Diagonal Fisher of the recall loss on `keys`, scaled to mean 1 over all parameters
        (so `ewc_lambda` reads as a relative strength). Squared and summed in float64: in float32
        the squares of a deep network's large gradients overflowed to inf, the scaling made them
        NaN, and every later step (pulled by a NaN Fisher) was refused. InvalidInput if even so
        the gradients are not finite."""
        err, cache = output_error(self.params, keys, self.values(keys))
        deltas = [d.double() for d in layer_deltas(self.params, err, cache)]
        fisher = squared_grad_means(deltas, [(x.double(), h) for x, h in cache])
        mean = sum(float(f.sum()) for f in fisher) / sum(f.numel() for f in fisher)
        if not math.isfinite(mean):
            raise InvalidInput("consolidate cannot anchor this memory: its network's gradients overflow "
                               "(its weights have grown too large); restore an earlier checkpoint, or use a "
                               "memory with a smaller lr or momentum")
        return [(f / max(mean, 1e-30)).to(self.dtype) for f in fisher]

    def recall(self, keys: torch.Tensor) -> torch.Tensor:
        """What the memory returns for each cue: its predicted content view, (n, value_dim)."""
        return forward(self.params, keys)[0]

    def update(self, keys: torch.Tensor, lr_scale: float = 1.0) -> dict:
        """Learn one chunk of keys (n, dim): one Titans step per item, graded at chunk start.

        Returns the per-item neural surprise measured before the update and the weight delta.
        InvalidInput if the step overflows: the weights stay as they were, but the momentum
        (updated in place) does not, so the caller rebuilds the memory (an actor does, from
        its checkpoint and log, as for any write that failed while being applied).
        """
        cfg = self.config
        params = self.params  # readers keep using this list until the swap below
        err, cache = output_error(params, keys, self.values(keys))
        surprise = err.norm(dim=1).clamp(max=1.0)  # (n,)
        deltas = layer_deltas(params, err, cache)
        grad_norm = grad_norms(deltas, cache)
        clip = (cfg.max_grad_norm / grad_norm.clamp_min(1e-12)).clamp(max=1.0)
        # θ_j: surprise-scaled, normalised so the output layer alone removes `lr` of the error.
        theta = cfg.lr * lr_scale * (0.25 + 0.75 * surprise) * clip / (2.0 * feature_energy(cache))
        alpha = cfg.forget * surprise  # α_j: forget more when the input is new
        single = keys.shape[0] == 1
        if single:  # a chunk of one: c_1 = θ_1, A = 1 − α_1, B = η (M's and S's sums coincide)
            coeff_m = coeff_s = theta
            decay_m, carry_s, carry_m = 1.0 - float(alpha[0]), cfg.momentum, cfg.momentum
        else:
            coeff_m, coeff_s, decay_m, carry_s, carry_m = _chunk_coefficients(theta, alpha, cfg.momentum)
        if single and not self.fisher:
            new_params, delta = self._step_one(params, deltas, cache, float(theta[0]), float(alpha[0]))
        else:
            new_params, delta = self._step_chunk(params, deltas, cache, coeff_m, coeff_s, decay_m, carry_s, carry_m)
        if not math.isfinite(delta):  # an overflow anywhere in the step shows in its norm
            raise InvalidInput("this write would make the memory's network diverge (its step overflows to "
                               "infinity) and was refused; send it with a smaller learning_rate, or use a "
                               "memory with a smaller lr or momentum")
        self.params = new_params  # atomic swap: readers holding the old list see old weights
        return {"surprise": surprise, "weight_delta": delta}

    def _step_chunk(self, params: Params, deltas, cache, coeff_m, coeff_s, decay_m: float,
                    carry_s: float, carry_m: float) -> tuple[Params, float]:
        """Apply one chunk's collapsed recurrence (see `_chunk_coefficients`), reading and writing
        each weight tensor as few times as possible (they are a few MB: every pass costs):

            step = M_C − M_0 = B·S_0 − Σ_j c_j g_j + (A − 1)·M_0     one addmm from S_0, one add
            S_C = η^C·S_0 − Σ_j η^{C−j} θ_j g_j                      one addmm into S in place

        The gradient of a weight matrix over the chunk is Σ_j w_j δ_j x_jᵀ = (w·δ)ᵀ X, so each
        weighted sum is an addmm's product term. S is writer-only, so it is updated in place;
        M_C is a new tensor (readers holding the old list keep a consistent set). Returns M_C
        and ‖M_C − M_0‖, taken with a dot product (torch.dist was the slowest pass here)."""
        if self.fisher:  # EWC pull strength: the chunk's whole weight on M, h, times lambda
            pull_m = self.config.ewc_lambda * float(coeff_m.sum())
        new_params, delta_sq = [], 0.0
        for layer, (delta, (x, _)) in enumerate(zip(deltas, cache)):
            weighted_m = delta * -coeff_m[:, None]  # negated weights hand back the minus sign
            weighted_s = delta * -coeff_s[:, None]
            for offset in (0, 1):  # weight matrix, then bias
                i = 2 * layer + offset
                param, momentum = params[i], self.momentum[i]
                if offset == 0:
                    step = torch.addmm(momentum, weighted_m.T, x, beta=carry_m, out=self._steps[i])
                else:
                    step = torch.add(weighted_m.sum(0), momentum, alpha=carry_m, out=self._steps[i])
                if decay_m != 1.0:
                    step.add_(param, alpha=decay_m - 1.0)
                if self.fisher:  # EWC: pull M towards the anchor
                    # The pull λh·F·(M − anchor) damped by 1/(1 + λh·F): the same for a small
                    # λh·F, never past the anchor for a large one (an implicit step). Fisher is
                    # mean 1 but peaks far higher and grows over consolidations: undamped, the
                    # weights oscillated out to inf. Applied to M only, decoupled from the
                    # momentum S: through S each chunk's pull was carried into every later one
                    # (1/(1 − η) times over), which overshot the anchor again for η near 1.
                    drift = param - self.anchor[i]
                    damped = self.fisher[i] / (1.0 + self.fisher[i] * pull_m)
                    step.addcmul_(drift, damped, value=-pull_m)
                if offset == 0:
                    momentum.addmm_(weighted_s.T, x, beta=carry_s)
                else:
                    momentum.mul_(carry_s).add_(weighted_s.sum(0))
                flat = step.view(-1)
                delta_sq += float(torch.dot(flat, flat))
                new_params.append(param + step)
        return new_params, math.sqrt(delta_sq)

    def _step_one(self, params: Params, deltas, cache, theta: float, alpha: float) -> tuple[Params, float]:
        """One item without EWC, in fewer passes over the weights: S ← η·S − θ·∇ℓ in place (the
        gradient of a weight matrix is the outer product δ xᵀ, so this is one addr_ pass), then
        M ← M + (S − α·M). Returns the new M and ‖step‖. Same result as the general path."""
        eta = self.config.momentum
        new_params, delta_sq = [], 0.0
        for layer, (delta, (x, _)) in enumerate(zip(deltas, cache)):
            weight_momentum, bias_momentum = self.momentum[2 * layer], self.momentum[2 * layer + 1]
            weight_momentum.addr_(delta[0], x[0], beta=eta, alpha=-theta)  # momentum: writer-only
            bias_momentum.mul_(eta).add_(delta[0], alpha=-theta)
            for i in (2 * layer, 2 * layer + 1):
                param, momentum = params[i], self.momentum[i]
                step = torch.add(momentum, param, alpha=-alpha)  # S − α·M
                flat = step.view(-1)
                delta_sq += float(torch.dot(flat, flat))
                new_params.append(param + step)  # new tensors: readers holding `params` see old weights
        return new_params, math.sqrt(delta_sq)


def _chunk_coefficients(theta: torch.Tensor, alpha: torch.Tensor, eta: float):
    """Collapse the per-item recurrence (eqs. 10, 13) over one chunk into weights on each g_j.

    With gradients taken at the chunk start: M_C = A·M_0 + B·S_0 − Σ_j c_j g_j and
    S_C = η^C·S_0 − Σ_j η^{C−j} θ_j g_j, where β_t = Π_{s>t}(1 − α_s), A = Π_s (1 − α_s),
    B = Σ_t β_t η^t and c_j = θ_j Σ_{t≥j} β_t η^{t−j}. Float64 numpy: a chunk is a few dozen
    numbers, where torch's per-op overhead cost more than the arithmetic.
    """
    n = theta.shape[0]
    theta64 = theta.numpy().astype(np.float64)
    keep = 1.0 - alpha.numpy().astype(np.float64)
    beta = np.ones(n)  # β_t = Π_{s>t} keep_s: a reversed cumulative product, shifted by one
    beta[:-1] = np.cumprod(keep[1:][::-1])[::-1]
    powers = eta ** np.arange(n + 1, dtype=np.float64)
    offsets = np.arange(n)[None, :] - np.arange(n)[:, None]  # t − j
    toeplitz = np.where(offsets >= 0, eta ** np.maximum(offsets, 0).astype(np.float64), 0.0)
    coeff_m = (toeplitz @ beta) * theta64  # c_j = θ_j Σ_{t≥j} β_t η^{t−j}
    coeff_s = theta64 * powers[:n][::-1]  # η^{C−j} θ_j
    decay_m = float(keep.prod())
    carry_m = float((beta * powers[1 : n + 1]).sum())
    carry_s = eta ** n
    dtype = theta.dtype
    return torch.from_numpy(coeff_m).to(dtype), torch.from_numpy(coeff_s).to(dtype), decay_m, carry_s, carry_m
