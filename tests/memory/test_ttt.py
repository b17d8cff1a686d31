"""TTT layers: dual == primal, equality with an independent autograd reference, test-time
learning, outer parameters untouched by forward, stability, and argument checks."""

import pytest
import torch
import torch.nn.functional as F

from memory.ttt import TTTLinear, TTTMLP, ln_l2_grad

DIM = 6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: extra intra-op threads only add sync cost on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(cls, seed=0, **kw):
    """A float64 layer with non-trivial LN parameters, so every term of f is exercised."""
    torch.manual_seed(seed)
    layer = cls(DIM, **kw).double()
    with torch.no_grad():
        layer.ln.weight.uniform_(0.5, 1.5)
        layer.ln.bias.normal_(0, 0.1)
    return layer


def views(layer, x):
    return layer.theta_k(x), layer.theta_v(x), layer.theta_q(x)


def reference(layer, f, params, x, mini_batch):
    """Mini-batch TTT (§2.4) straight from the definition, with autograd for the gradients:
    inside each mini-batch, z_t = f(x_Q,t; W_0 − η Σ_{s≤t} ∇ℓ_s(W_0)). One sequence at a time."""
    k, v, q = views(layer, x)
    outs = []
    for i in range(x.shape[0]):
        w0 = {n: p.detach().clone() for n, p in params.items()}
        seq_out = []
        for start in range(0, x.shape[1], mini_batch):
            acc = {n: torch.zeros_like(p) for n, p in w0.items()}
            for t in range(start, min(start + mini_batch, x.shape[1])):
                leaf = {n: p.clone().requires_grad_() for n, p in w0.items()}
                loss = ((f(leaf, k[i, t]) - v[i, t]) ** 2).sum()
                grads = torch.autograd.grad(loss, list(leaf.values()))
                acc = {n: acc[n] + g for n, g in zip(leaf, grads)}
                wt = {n: w0[n] - layer.inner_lr * acc[n] for n in w0}
                seq_out.append(f(wt, q[i, t]))
            w0 = wt
        outs.append(torch.stack(seq_out))
    return torch.stack(outs)


def f_linear(layer):
    def f(p, x):
        return x + F.layer_norm(x @ p["W"] + p["b"], (DIM,), layer.ln.weight, layer.ln.bias)
    return f, {"W": layer.W0, "b": layer.b0}


def f_mlp(layer):
    def f(p, x):
        z = F.gelu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return x + F.layer_norm(z, (DIM,), layer.ln.weight, layer.ln.bias)
    return f, {n: getattr(layer, n) for n in ("W1", "b1", "W2", "b2")}


# ---- TTT-Linear: dual form ----------------------------------------------------------------

@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mini_batch,seq", [(1, 7), (4, 16), (5, 13), (16, 40), (16, 3)])
def test_dual_equals_primal_float64(mini_batch, seq, bias, layer_norm):
    kw = dict(mini_batch=mini_batch, bias=bias, layer_norm=layer_norm, inner_lr=0.3)
    dual, primal = make(TTTLinear, form="dual", **kw), make(TTTLinear, form="primal", **kw)
    primal.load_state_dict(dual.state_dict())
    x = torch.randn(3, seq, DIM, dtype=torch.float64)
    with torch.no_grad():
        yd, sd = dual(x, return_state=True)
        yp, sp = primal(x, return_state=True)
    assert yd.shape == (3, seq, DIM)
    torch.testing.assert_close(yd, yp, atol=1e-10, rtol=0)
    torch.testing.assert_close(sd["W"], sp["W"], atol=1e-10, rtol=0)
    torch.testing.assert_close(sd["b"], sp["b"], atol=1e-10, rtol=0)
    assert not torch.allclose(sd["W"], dual.init_state(3)["W"])   # the state really moved


def test_dual_matches_closed_form_without_ln_or_bias():
    """Z = X_Q W_0 − η · tril(X_Q X_Kᵀ) · 2(X_K W_0 − X_V) for one mini-batch, plain f."""
    layer = make(TTTLinear, mini_batch=32, bias=False, layer_norm=False, inner_lr=0.2)
    x = torch.randn(2, 9, DIM, dtype=torch.float64)
    with torch.no_grad():
        k, v, q = views(layer, x)
        W0 = layer.W0
        expected = q @ W0 - 0.2 * torch.tril(q @ k.transpose(1, 2)) @ (2 * (k @ W0 - v))
        torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


def test_ln_l2_grad_matches_autograd():
    torch.manual_seed(1)
    z = torch.randn(4, 5, DIM, dtype=torch.float64, requires_grad=True)
    target, w, b = (torch.randn(4, 5, DIM, dtype=torch.float64), torch.rand(DIM).double() + 0.5,
                    torch.randn(DIM, dtype=torch.float64))
    loss = ((F.layer_norm(z, (DIM,), w, b, 1e-5) - target) ** 2).sum()
    (auto,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(ln_l2_grad(z, target, w, b, 1e-5), auto, atol=1e-12, rtol=0)


# ---- both layers against the definition ----------------------------------------------------

CASES = [(TTTLinear, f_linear, {"form": "dual"}), (TTTLinear, f_linear, {"form": "primal"}),
         (TTTMLP, f_mlp, {"hidden": 10})]


@pytest.mark.parametrize("cls,f_of,kw", CASES, ids=["linear-dual", "linear-primal", "mlp"])
@pytest.mark.parametrize("mini_batch", [1, 4])
def test_matches_autograd_reference(cls, f_of, kw, mini_batch):
    """mini_batch=1 is plain token-by-token online gradient descent; 4 checks the mini-batch
    rule (all gradients at the batch's start) with a ragged last mini-batch (seq 11)."""
    layer = make(cls, mini_batch=mini_batch, inner_lr=0.2, **kw)
    x = torch.randn(2, 11, DIM, dtype=torch.float64)
    f, params = f_of(layer)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, reference(layer, f, params, x, mini_batch), atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_step_equals_one_forward_mini_batch(cls):
    """The stateful API and forward agree: one whole mini-batch == one step on its views."""
    layer = make(cls, mini_batch=16, inner_lr=0.1)
    x = torch.randn(2, 8, DIM, dtype=torch.float64)
    with torch.no_grad():
        _, after_forward = layer(x, return_state=True)
        k, v, q = views(layer, x)
        after_step, loss = layer.step(layer.init_state(2), k, v)
    assert loss.shape == (2,)
    for name in after_step:
        torch.testing.assert_close(after_forward[name], after_step[name], atol=1e-10, rtol=0)
    assert layer.apply(after_step, q).shape == (2, 8, DIM)


# ---- learning at test time -----------------------------------------------------------------

@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_inner_loss_falls_on_repeated_sequence(cls):
    layer = make(cls, inner_lr=0.003)
    x = torch.randn(1, 16, DIM, dtype=torch.float64)
    with torch.no_grad():
        k, v, _ = views(layer, x)
        state, losses = layer.init_state(1), []
        for _ in range(30):
            state, loss = layer.step(state, k, v)
            losses.append(loss.item())
        # forward over the sequence repeated 4 times leaves weights that fit it better
        _, final = layer(x.repeat(1, 4, 1), return_state=True)
        _, loss_init = layer.step(layer.init_state(1), k, v)
        _, loss_final = layer.step(final, k, v)
    assert losses[-1] < 0.5 * losses[0]
    decades = [sum(losses[i:i + 10]) for i in (0, 10, 20)]   # GD on an LN-MLP may wobble,
    assert decades[0] > decades[1] > decades[2]              # but keeps falling on average
    assert loss_final.item() < loss_init.item()


def test_mlp_fast_weights_change_outer_parameters_do_not():
    layer = make(TTTMLP, hidden=12, mini_batch=4)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    x = torch.randn(2, 10, DIM, dtype=torch.float64)
    y, state = layer(x, return_state=True)
    assert y.shape == (2, 10, DIM)
    assert state["W1"].shape == (2, DIM, 12) and state["W2"].shape == (2, 12, DIM)
    for name, initial in layer.init_state(2).items():
        assert not torch.allclose(state[name], initial), name
    for name, p in layer.named_parameters():
        assert torch.equal(p, before[name]), name


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_outer_gradients_flow_through_inner_loop(cls):
    layer = make(cls, mini_batch=4)
    layer(torch.randn(2, 9, DIM, dtype=torch.float64)).square().sum().backward()
    for name in ("theta_k.weight", "theta_v.weight", "theta_q.weight", "ln.weight"):
        g = dict(layer.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_no_nan_over_1000_random_steps(cls):
    torch.manual_seed(0)
    layer = cls(16, mini_batch=8, inner_lr=0.05)
    state, losses = layer.init_state(2), []
    with torch.no_grad():
        for _ in range(1000):
            k = F.normalize(torch.randn(2, 4, 16), dim=-1)
            state, loss = layer.step(state, k, torch.randn(2, 4, 16))
            losses.append(loss)
        y = layer.apply(state, k)
    assert all(torch.isfinite(t).all() for t in [*state.values(), y, *losses])
    assert max(l.max().item() for l in losses) < 1e3


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{"dim": 0}, {"mini_batch": 0}, {"inner_lr": float("nan")},
                                {"inner_lr": -1.0}, {"form": "fast"}])
def test_bad_constructor_args(kw):
    args = {"dim": 4, **kw}
    with pytest.raises(ValueError):
        TTTLinear(**args)


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_bad_shapes_and_lr(cls):
    layer = cls(4)
    state = layer.init_state(1)
    with pytest.raises(ValueError, match="batch, items, 4"):
        layer(torch.randn(3, 4))
    with pytest.raises(ValueError, match="values must match"):
        layer.step(state, torch.randn(1, 2, 4), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="learning rate"):
        layer.step(state, torch.randn(1, 2, 4), torch.randn(1, 2, 4), lr=float("inf"))
