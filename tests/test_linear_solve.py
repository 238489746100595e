"""The linear-solve task: systems in their condition range, b = A x, fixed evaluation sets, metrics, training."""

import pytest
import torch

from ebt.errors import ConfigError
from ebt.tasks.linear_solve import LinearSolve
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config


@pytest.mark.parametrize("split", ["train", "val", "ood"])
def test_systems_are_consistent_and_in_their_condition_range(split):
    task = LinearSolve(n=6, cond=(2, 5), ood_cond=(20, 30))
    batch = task.make_batch(split, 3, 32)
    a, b, x = batch["matrix"].double(), batch["rhs"].double(), batch["targets"].double().squeeze(-1)
    torch.testing.assert_close(torch.einsum("bij,bj->bi", a, x), b, atol=1e-5, rtol=1e-5)
    cond = torch.linalg.cond(a)
    lo, hi = (20, 30) if split == "ood" else (2, 5)
    assert (cond > lo * 0.999).all() and (cond < hi * 1.001).all()
    torch.testing.assert_close(torch.linalg.matrix_norm(a, ord=2), torch.ones(32, dtype=a.dtype), atol=1e-5, rtol=0)
    assert batch["inputs"].shape == (32, 6, 13) and batch["targets"].shape == (32, 6, 1)
    torch.testing.assert_close(batch["inputs"][..., :6], batch["matrix"])  # token i: row i of A, b_i, e_i
    torch.testing.assert_close(batch["inputs"][..., 6], batch["rhs"])
    torch.testing.assert_close(batch["inputs"][..., 7:], torch.eye(6).expand(32, -1, -1))


def test_answers_are_on_one_scale_in_every_split_and_samples_are_fixed():
    task = LinearSolve()
    scales = [task.make_batch(split, 0, 512)["targets"].square().mean() for split in ("val", "ood")]
    assert all(0.85 < float(s) < 1.15 for s in scales)  # x ~ N(0, I): predicting zeros scores about 1 everywhere
    whole = task.make_batch("val", 0, 8)
    torch.testing.assert_close(task.make_batch("val", 1, 4)["targets"], whole["targets"][4:])  # per-sample streams
    assert not torch.equal(LinearSolve(seed=1).make_batch("val", 0, 8)["targets"], whole["targets"])


def test_metrics_on_exact_zero_and_scaled_answers():
    task = LinearSolve(n=4)
    batch = task.make_batch("val", 0, 16)
    exact = task.metrics(batch["targets"], batch)
    assert float(exact["mse"]) == 0 and float(exact["solved"]) == 1 and float(exact["residual"]) < 1e-5
    zero = task.metrics(torch.zeros_like(batch["targets"]), batch)
    assert float(zero["rel_error"]) == pytest.approx(1) and float(zero["residual"]) == pytest.approx(1)
    assert float(zero["mse"]) == pytest.approx(float(zero["mse_zero"])) and float(zero["solved"]) == 0
    off = task.metrics(1.05 * batch["targets"], batch)  # 5 % off: solved at tol 0.1, residual 0.05
    assert float(off["solved"]) == 1 and float(off["rel_error"]) == pytest.approx(0.05, abs=1e-5)
    assert float(off["residual"]) == pytest.approx(0.05, abs=1e-5)
    assert task.sample_correct(1.2 * batch["targets"], batch).sum() == 0


@pytest.mark.parametrize(("options", "message"), [({"cond": (0.5, 3)}, r"data\.task\.cond"),
                                                  ({"ood_cond": (30, 10)}, r"data\.task\.ood_cond"),
                                                  ({"solved_tol": 0}, r"data\.task\.solved_tol")])
def test_bad_settings_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        LinearSolve(**options)


@pytest.mark.parametrize("objective", ["predict", "ebt", "ebt_converge"])
def test_objectives_train_a_step(objective, tmp_path):
    cfg = compose_config(["experiment=linear_solve", f"model/objective={objective}", "model.dim=16",
                          "data.task.n=4", "data.batch_size=8"], tmp_path)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    loss, _ = model.objective.loss(task.make_batch("train", 0, 8))
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    metrics = model.objective.evaluate(task.make_batch("ood", 0, 8))
    assert {"mse", "rel_error", "residual", "solved"} <= set(metrics) and torch.isfinite(metrics["mse"])
