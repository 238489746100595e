"""Candidate spaces for large vocabularies (``model.objective.candidate=topk|embedding``): the sparse read is the
exact ``softmax(y) @ W``, only the support moves, the embedding candidate decodes to logits, both train every
parameter, stay causal, and bad combinations are refused."""

import pytest
import torch

from ebt.errors import ConfigError
from ebt.objectives.candidates import SparseSupport
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config, perturb_after

TINY = ["model/objective=ebt", "model.dim=16", "model.backbone.n_layers=1", "model.mixer.n_heads=2", "kernels=torch"]


def make(tmp_path, *extra: str, batch_size: int = 2):
    cfg = compose_config([*TINY, *extra], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    return build_lit_model(cfg, task).objective, task.make_batch("train", 0, batch_size)


def test_the_sparse_read_is_the_exact_softmax_read_and_does_not_overflow():
    torch.manual_seed(0)
    y, weight = torch.randn(3, 5, 40, dtype=torch.float64), torch.randn(40, 8, dtype=torch.float64)
    support = SparseSupport(y, weight, k=6)
    assert (support.index == y.topk(6, dim=-1).indices).all()
    top = support.top(y)
    torch.testing.assert_close(support.full(top), y)
    torch.testing.assert_close(support.read(top), torch.softmax(y, -1) @ weight)
    moved = top + 300 * torch.randn_like(top)  # past exp's range
    read = support.read(moved)
    assert torch.isfinite(read).all()
    torch.testing.assert_close(read, torch.softmax(support.full(moved), -1) @ weight)


def test_topk_thinks_exactly_first_then_moves_only_the_support_with_exact_energies(tmp_path):
    exact, batch = make(tmp_path)
    sparse, _ = make(tmp_path, "model.objective.candidate=topk", "model.objective.candidate_k=5")
    sparse.load_state_dict(exact.state_dict())
    init = exact.initial_candidate(batch)
    a = exact.think(batch, steps=3, init=init, final_energy=True)
    b = sparse.think(batch, steps=3, init=init, final_energy=True)
    torch.testing.assert_close(b.candidates[1], a.candidates[1])  # step 0 is exact
    support = b.candidates[1].topk(5, dim=-1).indices
    frozen = torch.ones_like(init, dtype=torch.bool).scatter(-1, support, False)
    for later in b.candidates[2:]:
        assert torch.equal(later[frozen], b.candidates[1][frozen])
        assert not torch.equal(later, b.candidates[1])
    energy = exact.energy_function(batch)
    for k, candidate in enumerate(b.candidates):  # every energy along the sparse trajectory is the exact energy
        torch.testing.assert_close(b.energies[k], energy(candidate.detach(), k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("candidate", ["topk", "embedding"])
@pytest.mark.parametrize("extra", [[], ["model.objective.detach_steps=false"], ["model.objective.thinking_grad=func"],
                                   ["model.objective.tie_candidate_projection=true"]])
def test_every_parameter_learns_under_each_candidate_space(candidate, extra, tmp_path):
    model, batch = make(tmp_path, f"model.objective.candidate={candidate}", "model.objective.candidate_k=4",
                        "model.objective.steps=3", *extra)
    loss, logs = model.loss(batch)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, silent
    assert torch.isfinite(loss) and "acc" in logs


@pytest.mark.parametrize("candidate", ["topk", "embedding"])
def test_func_gradients_equal_autograd_under_each_candidate_space(candidate, tmp_path):
    results = []
    for grad in ("autograd", "func"):
        model, batch = make(tmp_path, f"model.objective.candidate={candidate}", "model.objective.candidate_k=4",
                            f"model.objective.thinking_grad={grad}")
        torch.manual_seed(1)
        loss, _ = model.loss(batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_embedding_candidate_has_d_numbers_and_decodes_to_logits(tmp_path):
    model, batch = make(tmp_path, "model.objective.candidate=embedding")
    vocab, dim = model.output_size, 16
    y = model.initial_candidate(batch)
    assert y.shape == (*batch["targets"].shape, dim)
    torch.testing.assert_close(model.decode(y), y @ model.read_matrix().t())
    assert model.predict(batch).shape == (*batch["targets"].shape, vocab)
    metrics = model.evaluate(batch)
    assert {"acc", "loss", "acc_step0", "energy_step2"} <= metrics.keys()


@pytest.mark.parametrize("candidate", ["topk", "embedding"])
def test_later_tokens_change_no_earlier_prediction(candidate, tmp_path):
    model, _ = make(tmp_path, f"model.objective.candidate={candidate}", "model.objective.candidate_k=4")
    model.eval()
    batch = model.task.make_batch("val", 0, 3)
    t = batch["targets"].shape[1] // 2
    torch.manual_seed(1)
    before = model.predict(batch)
    torch.manual_seed(1)
    after = model.predict(perturb_after(batch, t))
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :])


def test_langevin_noise_moves_only_the_support_under_topk(tmp_path):
    model, batch = make(tmp_path, "model.objective.candidate=topk", "model.objective.candidate_k=3")
    thought = model.think(batch, steps=2, langevin_std=0.5)
    support = thought.candidates[1].topk(3, dim=-1).indices
    frozen = torch.ones_like(thought.candidates[1], dtype=torch.bool).scatter(-1, support, False)
    assert torch.equal(thought.candidates[2][frozen], thought.candidates[1][frozen])


@pytest.mark.parametrize("extra, message", [
    (["model.objective.candidate=dense"], "is not one of simplex, topk, embedding"),
    (["model.objective.candidate=topk", "model.objective.candidate_k=100000"], "candidate_k=100000 must be in"),
    (["model.objective.candidate=embedding", "data=icl_regression"], "needs a discrete task"),
    (["model.objective.candidate=embedding", "model.objective.contrastive_weight=1"], "IRED"),
    (["model.objective.candidate=topk", "model.objective.candidate_k=4", "compile=thinking_step"],
     "compile=thinking_step"),
])
def test_impossible_candidate_settings_are_refused(extra, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        make(tmp_path, *extra)
