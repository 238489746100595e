"""Triton kernels vs their torch references: forward, every gradient, double backward (tiny, odd shapes).

Run under Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1) or on a GPU. Tolerance rule:
kernel error <= 2x the error of plain PyTorch in the same dtype, plus a small atol, both measured
against a float64 reference.
"""

import pytest
import torch

from ebt_kernels.candidate_update import candidate_update, candidate_update_reference
from ebt_kernels.dispatch import interpreter_on, resolve_backend, triton_status
from ebt_kernels.softmax_embed import SoftmaxEmbedFn, _double_backward, softmax_embed, softmax_embed_reference

USABLE, WHY = triton_status("cuda" if torch.cuda.is_available() and not interpreter_on() else "cpu")
needs_triton = pytest.mark.skipif(not USABLE, reason=f"Triton kernels cannot run here: {WHY}")
DEVICE = "cuda" if torch.cuda.is_available() and not interpreter_on() else "cpu"


def assert_kernel_close(kernel: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor, rel_atol: float = 1e-5):
    """|kernel - truth| <= 2 |ref - truth| + atol, elementwise; atol = rel_atol * max|truth|."""
    kernel, ref, truth = kernel.double(), ref.double(), truth.double()
    atol = rel_atol * truth.abs().max().clamp_min(1e-12)
    err_k = (kernel - truth).abs()
    bound = 2 * (ref - truth).abs() + atol
    assert torch.isfinite(kernel).all(), "kernel output has non-finite values"
    worst = (err_k - bound).argmax()
    assert (err_k <= bound).all(), (
        f"kernel error {err_k.flatten()[worst]:.3g} > bound {bound.flatten()[worst]:.3g} "
        f"(max kernel err {err_k.max():.3g}, max torch err {(ref - truth).abs().max():.3g})")


def _inputs(lead, V, D, dtype=torch.float32, scale=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = (scale * torch.randn(*lead, V, generator=gen, dtype=torch.float64))
    W = torch.randn(V, D, generator=gen, dtype=torch.float64) / D**0.5
    G = torch.randn(*lead, D, generator=gen, dtype=torch.float64)
    return y, W, G


def _leaf(t: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return t.to(DEVICE, dtype).requires_grad_()


# ------------------------------------------------------------------------------------------------ softmax_embed
@needs_triton
@pytest.mark.parametrize(("lead", "V", "D", "transposed_w"), [((5,), 257, 33, False), ((2, 3), 64, 16, True)])
def test_softmax_embed_forward_and_gradients(lead, V, D, transposed_w):
    y64, W64, G64 = _inputs(lead, V, D)
    outs = {}
    for name, dtype, fn in [("truth", torch.float64, softmax_embed_reference),
                            ("ref", torch.float32, softmax_embed_reference),
                            ("kernel", torch.float32, lambda y, W: softmax_embed(y, W, backend="triton"))]:
        y = _leaf(y64, dtype)
        W = _leaf(W64.t().contiguous(), dtype).t() if transposed_w else _leaf(W64, dtype)  # strided W (V, D)
        e = fn(y, W)
        dy, dW = torch.autograd.grad(e, (y, W), G64.to(DEVICE, dtype))
        outs[name] = (e, dy, dW)
    assert outs["kernel"][0].shape == (*lead, D)
    for k, r, t in zip(outs["kernel"], outs["ref"], outs["truth"], strict=True):
        assert_kernel_close(k, r, t)


@needs_triton
def test_softmax_embed_saves_logsumexp_and_is_stable_for_extreme_logits():
    y64, W64, _ = _inputs((5,), 257, 33, scale=80.0)
    y64[0, :100] = float("-inf")  # masked vocabulary entries
    y64[1, 7] = 1e4  # one dominant logit
    e, lse = SoftmaxEmbedFn.apply(y64.float().to(DEVICE), W64.float().to(DEVICE))
    torch.testing.assert_close(lse.double().cpu(), torch.logsumexp(y64, -1), rtol=1e-6, atol=1e-5)
    assert_kernel_close(e, softmax_embed_reference(y64.float(), W64.float()), softmax_embed_reference(y64, W64))


@needs_triton
def test_softmax_embed_grads_only_where_needed():
    y64, W64, _ = _inputs((5,), 40, 17)
    W = W64.float().to(DEVICE)  # frozen W: the dW kernel is skipped
    y = _leaf(y64)
    (dy,) = torch.autograd.grad(softmax_embed(y, W, backend="triton").sum(), y)
    y_ref = _leaf(y64)
    (dy_ref,) = torch.autograd.grad(softmax_embed_reference(y_ref, W).sum(), y_ref)
    torch.testing.assert_close(dy, dy_ref, rtol=1e-5, atol=1e-6)
    Wl = _leaf(W64)
    (dW,) = torch.autograd.grad(softmax_embed(y64.float().to(DEVICE), Wl, backend="triton").sum(), Wl)
    Wr = _leaf(W64)
    (dW_ref,) = torch.autograd.grad(softmax_embed_reference(y64.float().to(DEVICE), Wr).sum(), Wr)
    torch.testing.assert_close(dW, dW_ref, rtol=1e-5, atol=1e-6)


@needs_triton
def test_softmax_embed_bfloat16_matches_within_rule():
    y64, W64, G64 = _inputs((5,), 257, 33)
    outs = {}
    for name, dtype, fn in [("truth", torch.float64, softmax_embed_reference),
                            ("ref", torch.bfloat16, softmax_embed_reference),
                            ("kernel", torch.bfloat16, lambda y, W: softmax_embed(y, W, backend="triton"))]:
        y, W = _leaf(y64, dtype), _leaf(W64, dtype)
        e = fn(y, W)
        outs[name] = (e, *torch.autograd.grad(e, (y, W), G64.to(DEVICE, dtype)))
    for k, r, t in zip(outs["kernel"], outs["ref"], outs["truth"], strict=True):
        assert k.dtype == torch.bfloat16
        assert_kernel_close(k, r, t, rel_atol=1e-2)


def test_double_backward_formula_matches_autograd_in_float64():
    """The hand-derived double backward (used by the Triton path) equals autograd of the reference backward."""
    y, W, G = (t.requires_grad_() for t in _inputs((4,), 23, 7))
    gen = torch.Generator().manual_seed(1)
    U = torch.randn(4, 23, generator=gen, dtype=torch.float64)
    Z = torch.randn(23, 7, generator=gen, dtype=torch.float64)
    dy, dW = torch.autograd.grad(softmax_embed_reference(y, W), (y, W), G, create_graph=True)
    for u, z in [(U, Z), (U, None), (None, Z)]:
        inner = sum((a * b).sum() for a, b in [(dy, u), (dW, z)] if b is not None)
        expected = torch.autograd.grad(inner, (y, W, G), retain_graph=True, materialize_grads=True)
        got = _double_backward(y.detach(), W.detach(), G.detach(), u, z)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _thinking_loss(embed, update, y0, W, P, steps=2, clamp=None, alpha=None):
    """Unrolled EBT thinking with second-order training: E(y) = sum(tanh(e @ P)^2), e = embed(y, W)."""
    y = y0
    for _ in range(steps):
        energy = torch.tanh(embed(y, W) @ P).pow(2).sum()
        (g,) = torch.autograd.grad(energy, y, create_graph=True)
        y = update(y, g, alpha, grad_clamp=clamp)
    return torch.log_softmax(y, -1)[..., 0].sum().neg()


@needs_triton
@pytest.mark.parametrize("clamp", [None, 0.05])
def test_second_order_thinking_loop_matches_reference(clamp):
    y64, W64, _ = _inputs((5,), 257, 33)
    P64 = torch.randn(33, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = {}
    for name, dtype, backend in [("truth", torch.float64, "torch"), ("ref", torch.float32, "torch"),
                                 ("kernel", torch.float32, "triton")]:
        y0, W, P, alpha = _leaf(y64, dtype), _leaf(W64, dtype), _leaf(P64, dtype), _leaf(torch.tensor(5.0), dtype)
        loss = _thinking_loss(lambda y, W, b=backend: softmax_embed(y, W, backend=b),
                              lambda y, g, a, b=backend, **kw: candidate_update(y, g, a, backend=b, **kw),
                              y0, W, P, clamp=clamp, alpha=alpha)
        grads[name] = (loss, *torch.autograd.grad(loss, (y0, W, P, alpha)))
    for k, r, t in zip(grads["kernel"], grads["ref"], grads["truth"], strict=True):
        assert_kernel_close(k, r, t, rel_atol=1e-5)


@needs_triton
def test_softmax_embed_rejects_bad_input():
    with pytest.raises(ValueError, match="transpose W"):
        softmax_embed(torch.randn(3, 10), torch.randn(7, 10), backend="triton")
    with pytest.raises(TypeError, match="backend='torch'"):
        softmax_embed(torch.randn(3, 10, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64),
                      backend="triton")


# ------------------------------------------------------------------------------------------------ candidate_update
def _alphas(lead):
    return {"float": 0.3, "scalar_tensor": torch.tensor(0.2, dtype=torch.float64),
            "scalar_3d": torch.full((1, 1, 1), 0.25, dtype=torch.float64),
            "per_row": torch.rand(*lead, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
            "per_row_keepdim": torch.rand(*lead, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))}


@needs_triton
@pytest.mark.parametrize("alpha_kind", ["float", "scalar_tensor", "scalar_3d", "per_row", "per_row_keepdim"])
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_candidate_update_forward_and_gradients(alpha_kind, clamp):
    lead, V = (2, 3), 257
    y64, g64, G64 = (torch.randn(*lead, V, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
                     for i in range(3))
    outs = {}
    for name, fn in [("ref", candidate_update_reference),
                     ("kernel", lambda *a, **kw: candidate_update(*a, backend="triton", **kw))]:
        y, g = _leaf(y64), _leaf(g64)
        alpha = _alphas(lead)[alpha_kind]
        alpha = _leaf(alpha) if isinstance(alpha, torch.Tensor) else alpha
        out = fn(y, g, alpha, grad_clamp=clamp)
        inputs = (y, g, alpha) if isinstance(alpha, torch.Tensor) else (y, g)
        outs[name] = (out, *torch.autograd.grad(out, inputs, G64.to(DEVICE, torch.float32)))
    for k, r in zip(outs["kernel"], outs["ref"], strict=True):
        assert k.shape == r.shape
        torch.testing.assert_close(k, r, rtol=1e-6, atol=1e-5)


@needs_triton
def test_candidate_update_gradcheck_and_gradgradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    y, g = (torch.randn(2, 9, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_() for _ in range(2))
    alpha = torch.rand(2, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    fn = lambda y, g, a: candidate_update(y, g, a, grad_clamp=0.7, backend="triton")
    assert torch.autograd.gradcheck(fn, (y, g, alpha))
    assert torch.autograd.gradgradcheck(fn, (y, g, alpha))


@needs_triton
def test_candidate_update_is_the_deterministic_step_without_noise():
    """One noise implementation: the EBT adds Langevin noise before the energy; the kernel step has none."""
    y, g = torch.randn(2, 5, 257, device=DEVICE), torch.randn(2, 5, 257, device=DEVICE)
    out = candidate_update(y, g, 0.1, grad_clamp=0.5, backend="triton")
    assert torch.equal(candidate_update(y, g, 0.1, grad_clamp=0.5, backend="triton"), out)  # no hidden randomness
    torch.testing.assert_close(out, y - 0.1 * g.clamp(-0.5, 0.5))
    for backend in ("torch", "triton"):
        with pytest.raises(TypeError, match="noise_std"):
            candidate_update(y, g, 0.1, noise_std=0.3, backend=backend)


@needs_triton
def test_candidate_update_rejects_bad_input():
    y = torch.zeros(2, 3, 8)
    with pytest.raises(ValueError, match="alpha must be a scalar or have shape"):
        candidate_update(y, y, torch.ones(3), backend="triton")
    with pytest.raises(ValueError, match="shape of y"):
        candidate_update(y, y[..., :4], 0.1, backend="triton")
    with pytest.raises(ValueError, match="grad_clamp"):
        candidate_update(y, y, 0.1, grad_clamp=0.0, backend="triton")


# ------------------------------------------------------------------------------------------- in the EBT
@needs_triton
def test_tiny_ebt_trains_the_same_with_triton_kernels_and_with_the_reference(tmp_path):
    """A few AdamW steps of a tiny AR EBT (second-order thinking) give the same losses on both backends."""
    from ebt.training.build import build_lit_model, build_task
    from tests.utils import compose_config

    losses = {}
    for backend in ("torch", "triton"):
        cfg = compose_config(["model/objective=ebt", "model.dim=16", "model.backbone.n_layers=1",
                              "model.objective.alpha_jitter=1", f"kernels={backend}"], tmp_path)
        task = build_task(cfg)
        torch.manual_seed(0)
        ebt = build_lit_model(cfg, task).objective.to(DEVICE)
        # the kernels really run, no silent fallback
        assert resolve_backend(ebt.config.speed.kernels, DEVICE) == backend
        optimizer = torch.optim.AdamW(ebt.parameters(), lr=3e-3)
        losses[backend] = []
        for i in range(3):
            torch.manual_seed(100 + i)  # same initial candidates on both backends
            batch = {k: v.to(DEVICE) for k, v in task.make_batch("train", i, 4).items()}
            loss, _ = ebt.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[backend].append(float(loss.detach()))
    torch.testing.assert_close(losses["triton"], losses["torch"], atol=1e-4, rtol=1e-4)
