"""Test-Time Training layers: TTT-Linear and TTT-MLP (Sun et al., arXiv 2407.04620).

The hidden state of a TTT layer is itself a model f(·; W) (its "fast weights"), and reading a
token is one step of self-supervised learning on it. Section numbers follow arXiv v1 of the paper:

    training view  x_K = θ_K x,  label view  x_V = θ_V x,  test view  x_Q = θ_Q x      (§2.3)
    inner loss     ℓ(W; x) = ‖f(x_K; W) − x_V‖²   (sum over features)                   (§2.3)
    output rule    z_t = f(x_Q,t; W_t)                                                   (§2.1)
    mini-batch     W_t = W_0 − η Σ_{s≤t} ∇ℓ_s(W_0)   for t inside a mini-batch that     (§2.4)
                   starts at W_0; the next mini-batch starts at that batch's last W_t.
    f (§2.7)       f(x; W) = x + LN(f_res(x; W)) when layer_norm=True, else f_res(x; W).

Row-vector convention throughout: f_res(x) = x @ W + b with W of shape (dim_in, dim_out).
Fast weights are a dict of tensors with a leading batch axis (one inner model per sequence);
they start from learned nn.Parameters (the outer loop trains the initial state W_0).

η is used exactly as written (no hidden 1/dim or 1/b scaling) and gradients are *summed* over a
mini-batch, so plain GD is stable only while η ≲ 1 / λ_max(X_Kᵀ X_K) for the mini-batch. LN's
output has norm ≈ sqrt(dim): with L2-normalised inputs use layer_norm=False or scale by sqrt(dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, grad_and_value, vmap

from memory.errors import InvalidInput

__all__ = ["TTTLinear", "TTTMLP"]

State = dict[str, torch.Tensor]


def ln_l2_grad(z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor, eps: float) -> torch.Tensor:
    """∂/∂z of ‖LN(z) − target‖² summed over the last dim, written out by hand.

    The dual form needs the inner gradient without autograd; having it explicit also lets the
    primal form be a plain loop of outer products. z, target: (..., dim) -> (..., dim).
    """
    mu = z.mean(-1, keepdim=True)
    std = (z.var(-1, keepdim=True, unbiased=False) + eps).sqrt()
    xhat = (z - mu) / std                                         # (..., dim)
    gx = 2.0 * (xhat * weight + bias - target) * weight           # ∂ℓ/∂x̂
    # LayerNorm backward: project out the mean and the x̂ direction, then undo the scale.
    return (gx - gx.mean(-1, keepdim=True) - xhat * (gx * xhat).mean(-1, keepdim=True)) / std


class _TTTBase(nn.Module):
    """Shared outer parts: the three views, LN of f, argument checks and the mini-batch scan."""

    def __init__(self, dim: int, inner_lr: float, mini_batch: int, layer_norm: bool):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise InvalidInput(f"dim must be a positive int, got {dim!r}")
        if not isinstance(mini_batch, int) or mini_batch < 1:
            raise InvalidInput(f"mini_batch must be a positive int, got {mini_batch!r}")
        self.dim, self.mini_batch, self.layer_norm = dim, mini_batch, layer_norm
        self.inner_lr = self._check_lr(inner_lr)
        self.theta_k = nn.Linear(dim, dim, bias=False)   # training view θ_K (§2.3)
        self.theta_v = nn.Linear(dim, dim, bias=False)   # label view θ_V
        self.theta_q = nn.Linear(dim, dim, bias=False)   # test view θ_Q
        self.ln = nn.LayerNorm(dim)                      # the LN inside f (§2.7); outer-loop params

    @staticmethod
    def _check_lr(lr: float) -> float:
        lr = float(lr)
        if not math.isfinite(lr) or lr < 0:
            raise InvalidInput(f"inner learning rate must be finite and >= 0, got {lr!r}")
        return lr

    def _check_items(self, name: str, t: torch.Tensor) -> None:
        if t.dim() != 3 or t.shape[-1] != self.dim:
            raise InvalidInput(f"{name} must have shape (batch, items, {self.dim}), "
                             f"got {tuple(t.shape)}")

    def _check_pair(self, keys: torch.Tensor, values: torch.Tensor, lr: float | None) -> float:
        """Validate step() arguments; returns the learning rate to use."""
        self._check_items("keys", keys)
        if values.shape != keys.shape or keys.shape[1] == 0:
            raise InvalidInput(f"values must match keys and hold at least one item, got keys "
                             f"{tuple(keys.shape)} and values {tuple(values.shape)}")
        return self.inner_lr if lr is None else self._check_lr(lr)

    def _out(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """f = x + LN(f_res(x)) (§2.7), or f_res itself; x, z: (..., dim)."""
        if not self.layer_norm:
            return z
        return x + F.layer_norm(z, (self.dim,), self.ln.weight, self.ln.bias, self.ln.eps)

    def forward(self, x: torch.Tensor, state: State | None = None,
                return_state: bool = False):
        """x: (batch, seq, dim) -> (batch, seq, dim); return_state=True adds the final state."""
        self._check_items("x", x)
        k, v, q = self.theta_k(x), self.theta_v(x), self.theta_q(x)   # (batch, seq, dim) each
        state = self.init_state(x.shape[0]) if state is None else state
        outs = []
        for i in range(0, x.shape[1], self.mini_batch):   # last mini-batch may be shorter
            part = slice(i, i + self.mini_batch)
            out, state = self._mini_batch(state, k[:, part], v[:, part], q[:, part])
            outs.append(out)
        y = torch.cat(outs, dim=1) if outs else q
        return (y, state) if return_state else y


class TTTLinear(_TTTBase):
    """TTT layer whose hidden state is a linear model W (dim x dim) plus optional bias b.

    form="dual" computes each mini-batch with matrices and a causal mask (§2.5);
    form="primal" loops over tokens with explicit outer-product gradients. Same numbers.
    """

    def __init__(self, dim: int, inner_lr: float = 0.01, mini_batch: int = 16,
                 layer_norm: bool = True, bias: bool = True, form: str = "dual"):
        super().__init__(dim, inner_lr, mini_batch, layer_norm)
        if form not in ("dual", "primal"):
            raise InvalidInput(f"form must be 'dual' or 'primal', got {form!r}")
        self.form, self.bias = form, bias
        # W_0 scaled so f_res(x_K) starts at the scale of x_K: a near-zero LN input would make
        # the first inner gradient (∝ 1/std of LN's input) blow the weights far off.
        self.W0 = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))   # initial fast weights
        if bias:
            self.b0 = nn.Parameter(torch.zeros(dim))
        else:   # keep a zero b so the state has one shape either way
            self.register_buffer("b0", torch.zeros(dim))

    def init_state(self, batch: int = 1) -> State:
        """Fresh fast weights: {"W": (batch, dim, dim), "b": (batch, dim)}."""
        return {"W": self.W0.expand(batch, -1, -1), "b": self.b0.expand(batch, -1)}

    def _z(self, x: torch.Tensor, s: State) -> torch.Tensor:
        """f_res(x; W) = x W + b; x: (batch, items, dim) -> (batch, items, dim)."""
        return x @ s["W"] + s["b"][:, None]

    def _grad_z(self, k: torch.Tensor, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """∂ℓ/∂z at z = f_res(x_K); ∇_W ℓ = x_Kᵀ g and ∇_b ℓ = g follow. (batch, items, dim)."""
        if self.layer_norm:   # ‖x_K + LN(z) − x_V‖² = ‖LN(z) − (x_V − x_K)‖²
            return ln_l2_grad(z, v - k, self.ln.weight, self.ln.bias, self.ln.eps)
        return 2.0 * (z - v)

    def _mini_batch(self, s: State, k, v, q):
        g = self._grad_z(k, v, self._z(k, s))   # (batch, n, dim), all taken at W_0 (§2.4)
        return self._dual(s, k, q, g) if self.form == "dual" else self._primal(s, k, q, g)

    def _primal(self, s: State, k, q, g):
        """Token loop: W_t = W_{t-1} − η x_K,tᵀ g_t, then z_t = f(x_Q,t; W_t) (§2.4)."""
        W, b, outs, lr = s["W"], s["b"], [], self.inner_lr
        for t in range(k.shape[1]):
            W = W - lr * k[:, t, :, None] * g[:, t, None, :]      # outer product, (batch, dim, dim)
            if self.bias:
                b = b - lr * g[:, t]                              # (batch, dim)
            z = torch.einsum("bi,bij->bj", q[:, t], W) + b        # f_res(x_Q,t; W_t), (batch, dim)
            outs.append(self._out(q[:, t], z))
        return torch.stack(outs, dim=1), {"W": W, "b": b}

    def _dual(self, s: State, k, q, g):
        """Whole mini-batch at once (§2.5), with G = [g_1..g_n] and M = lower-triangular ones:
        Z = X_Q W_0 + b_0 − η (M ⊙ X_Q X_Kᵀ) G − η M G,
        W_n = W_0 − η X_Kᵀ G,  b_n = b_0 − η Σ_s g_s."""
        n, lr = k.shape[1], self.inner_lr
        mask = torch.ones(n, n, dtype=q.dtype, device=q.device).tril()   # causal: s ≤ t
        attn = (q @ k.transpose(1, 2)) * mask                  # (batch, n, n): x_Q,t · x_K,s
        z = q @ s["W"] - lr * attn @ g                          # (batch, n, dim)
        W, b = s["W"] - lr * k.transpose(1, 2) @ g, s["b"]      # W_n, (batch, dim, dim)
        if self.bias:
            z = z + s["b"][:, None] - lr * mask @ g             # b_t = b_0 − η Σ_{s≤t} g_s
            b = b - lr * g.sum(dim=1)
        return self._out(q, z), {"W": W, "b": b}

    # ---- stateful API for callers with their own keys/values (e.g. the Titans memory) ----
    def step(self, state: State, keys: torch.Tensor, values: torch.Tensor,
             lr: float | None = None) -> tuple[State, torch.Tensor]:
        """One mini-batch TTT step: W − lr Σ_i ∇ℓ_i(W). keys/values: (batch, items, dim).
        Returns (new_state, loss) with loss (batch,) = mean_i ℓ_i measured *before* the update."""
        lr = self._check_pair(keys, values, lr)
        z = self._z(keys, state)
        loss = ((self._out(keys, z) - values) ** 2).sum(-1).mean(-1)    # (batch,)
        g = self._grad_z(keys, values, z)                               # (batch, items, dim)
        W = state["W"] - lr * keys.transpose(1, 2) @ g
        b = state["b"] - lr * g.sum(dim=1) if self.bias else state["b"]
        return {"W": W, "b": b}, loss

    def apply(self, state: State, queries: torch.Tensor) -> torch.Tensor:
        """f(queries; state): (batch, items, dim) -> (batch, items, dim)."""
        self._check_items("queries", queries)
        return self._out(queries, self._z(queries, state))


class TTTMLP(_TTTBase):
    """TTT layer whose hidden state is a 2-layer GELU MLP; inner gradients via torch.func.

    Primal form only: per-token gradients at W_0 (vmap of grad), then W_t as a cumulative sum.
    Memory per mini-batch is O(batch * mini_batch * dim * hidden).
    """

    def __init__(self, dim: int, hidden: int | None = None, inner_lr: float = 0.01,
                 mini_batch: int = 16, layer_norm: bool = True):
        super().__init__(dim, inner_lr, mini_batch, layer_norm)
        hidden = 4 * dim if hidden is None else hidden
        if not isinstance(hidden, int) or hidden < 1:
            raise InvalidInput(f"hidden must be a positive int, got {hidden!r}")
        self.hidden = hidden
        # initial fast weights, scaled as in TTTLinear (keep LN's input away from zero)
        self.W1 = nn.Parameter(torch.randn(dim, hidden) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.W2 = nn.Parameter(torch.randn(hidden, dim) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(dim))

    def init_state(self, batch: int = 1) -> State:
        """{"W1": (batch, dim, hidden), "b1": (batch, hidden),
            "W2": (batch, hidden, dim), "b2": (batch, dim)}."""
        names = ("W1", "b1", "W2", "b2")
        return {n: getattr(self, n).expand(batch, *getattr(self, n).shape) for n in names}

    def _f(self, p: State, x: torch.Tensor) -> torch.Tensor:
        """f(x; p) for ONE token x: (dim,) with unbatched params; vmap adds batch/item axes."""
        z = F.gelu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]   # f_res, (dim,)
        return self._out(x, z)

    def _token_loss(self, p: State, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ((self._f(p, k) - v) ** 2).sum()                 # ℓ(W; x) = ‖f(x_K; W) − x_V‖²

    def _mini_batch(self, s: State, k, v, q):
        # G_t = ∇ℓ_t(W_0) for every token, all at the mini-batch's start (§2.4).
        per_token = vmap(grad(self._token_loss), in_dims=(None, 0, 0))
        G = vmap(per_token)(s, k, v)                             # each (batch, n, *param_shape)
        # W_t = W_0 − η Σ_{s≤t} G_s: one set of fast weights per token.
        Wt = {n: s[n].unsqueeze(1) - self.inner_lr * G[n].cumsum(dim=1) for n in s}
        out = vmap(vmap(self._f))(Wt, q)      # z_t = f(x_Q,t; W_t), (batch, n, dim)
        return out, {n: Wt[n][:, -1] for n in Wt}

    def _batch_loss(self, p: State, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Σ_i ℓ_i for one sequence; k, v: (items, dim)."""
        return vmap(self._token_loss, in_dims=(None, 0, 0))(p, k, v).sum()

    def step(self, state: State, keys: torch.Tensor, values: torch.Tensor,
             lr: float | None = None) -> tuple[State, torch.Tensor]:
        """One mini-batch TTT step: W − lr Σ_i ∇ℓ_i(W). keys/values: (batch, items, dim).
        Returns (new_state, loss) with loss (batch,) = mean_i ℓ_i measured *before* the update."""
        lr = self._check_pair(keys, values, lr)
        G, total = vmap(grad_and_value(self._batch_loss))(state, keys, values)
        new = {n: state[n] - lr * G[n] for n in state}
        return new, total / keys.shape[1]

    def apply(self, state: State, queries: torch.Tensor) -> torch.Tensor:
        """f(queries; state): (batch, items, dim) -> (batch, items, dim)."""
        self._check_items("queries", queries)
        return vmap(vmap(self._f, in_dims=(None, 0)))(state, queries)
