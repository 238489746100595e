"""data=matrix_inverse: conditioning per split, exact targets, determinism, metrics, bad options, one training step."""

import math

import pytest
import torch

from ebt.errors import ConfigError
from ebt.tasks.matrix_inverse import MatrixInverse, residuals
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config

SPLITS = ("train", "val", "ood", "test")


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("split", SPLITS)
def test_condition_numbers_fall_in_their_split_range(split, symmetric):
    task = MatrixInverse(n=6, cond=[2, 5], ood_cond=[20, 80], symmetric=symmetric, seed=3)
    batch = task.make_batch(split, 1, 64)
    a = batch["matrix"].double()
    cond = torch.linalg.cond(a)
    lo, hi = (20, 80) if split == "ood" else (2, 5)
    assert cond.min() >= lo * (1 - 1e-4) and cond.max() <= hi * (1 + 1e-4), (cond.min(), cond.max())
    assert torch.allclose(torch.linalg.matrix_norm(a, ord=2), torch.ones(64, dtype=a.dtype), atol=1e-5)  # ||A|| = 1
    if symmetric:  # symmetric positive definite
        assert torch.equal(a, a.transpose(1, 2))
        assert torch.linalg.eigvalsh(a).min() > 0


def test_fixed_condition_number_is_exact():
    a = MatrixInverse(n=5, cond=[7, 7], ood_cond=[30, 30]).make_batch("ood", 0, 16)["matrix"].double()
    torch.testing.assert_close(torch.linalg.cond(a), torch.full((16,), 30.0, dtype=a.dtype), rtol=1e-5, atol=0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_targets_are_the_inverses(symmetric):
    task = MatrixInverse(n=8, symmetric=symmetric)
    for split in ("val", "ood"):
        batch = task.make_batch(split, 0, 32)
        a, y = batch["matrix"].double(), batch["targets"].double()
        eye = torch.eye(8, dtype=a.dtype).expand(32, 8, 8)
        torch.testing.assert_close(a @ y, eye, atol=1e-4, rtol=0)
        assert batch["targets"].dtype == batch["inputs"].dtype == torch.float32
        assert batch["targets"].shape == (32, 8, 8)


def test_tokens_carry_the_chosen_features():
    n = 5
    for features, dim in ((["row"], n), (["row", "index"], 2 * n), (["col", "row", "index"], 3 * n)):
        task = MatrixInverse(n=n, symmetric=False, features=features)
        batch = task.make_batch("train", 0, 3)
        assert task.input_dim == dim and batch["inputs"].shape == (3, n, dim)
        a = batch["matrix"]
        parts = {"row": a, "col": a.transpose(1, 2), "index": torch.eye(n).expand(3, n, n)}
        torch.testing.assert_close(batch["inputs"], torch.cat([parts[f] for f in features], dim=-1))
    assert task.output_dim == task.max_len == n and not task.causal and task.kind == "continuous"


def test_deterministic_per_seed_split_index_and_fixed_per_sample():
    task = MatrixInverse(seed=1)
    for split in SPLITS:
        first, again = task.make_batch(split, 2, 8), task.make_batch(split, 2, 8)
        for key in first:
            assert torch.equal(first[key], again[key])
    val = task.make_batch("val", 0, 8)["matrix"]
    assert not torch.equal(val, task.make_batch("test", 0, 8)["matrix"])
    assert not torch.equal(val, task.make_batch("val", 1, 8)["matrix"])
    assert not torch.equal(val, MatrixInverse(seed=2).make_batch("val", 0, 8)["matrix"])
    # an evaluation set does not depend on the batch size it is cut into: sample j is sample j
    whole = task.make_batch("ood", 0, 8)["matrix"]
    halves = torch.cat([task.make_batch("ood", i, 4)["matrix"] for i in range(2)])
    assert torch.equal(whole, halves)


def test_metrics_on_hand_made_cases():
    n = 4
    task = MatrixInverse(n=n, solved_tol=0.1)
    eye = torch.eye(n).expand(2, n, n)
    batch = {"inputs": eye, "targets": eye.clone(), "matrix": eye.clone()}
    exact = task.metrics(eye.clone(), batch)
    assert exact["mse"] == 0 and exact["rel_mse"] == 0 and exact["residual"] == 0 and exact["solved"] == 1
    zero = task.metrics(torch.zeros(2, n, n), batch)
    assert zero["residual"].item() == pytest.approx(math.sqrt(n) / n)  # ||I||_F / n
    assert zero["mse"].item() == pytest.approx(1 / n) and zero["mse_zero"].item() == pytest.approx(1 / n)
    assert zero["rel_mse"].item() == pytest.approx(1.0) and zero["solved"] == 0
    assert zero["mse_exact"] == 0 and zero["residual_exact"] == 0
    assert zero["residual_zero"].item() == pytest.approx(0.5)
    # A = 2 I: target I / 2; predicting I leaves A Y - I = I
    half = task.metrics(eye.clone(), {"inputs": 2 * eye, "targets": eye / 2, "matrix": 2 * eye})
    assert half["mse"].item() == pytest.approx(0.25 / n) and half["residual"].item() == pytest.approx(0.5)
    assert all(v.dim() == 0 for v in half.values())


def test_per_sample_methods_and_metrics_on_generated_data():
    task = MatrixInverse(n=6, solved_tol=0.1)
    batch = task.make_batch("val", 0, 10)
    prediction = batch["targets"].clone()
    prediction[:3] += 0.5  # three samples wrong
    error, correct = task.sample_error(prediction, batch), task.sample_correct(prediction, batch)
    assert error.shape == correct.shape == (10,) and correct.dtype == torch.bool
    assert correct.tolist() == [False] * 3 + [True] * 7
    torch.testing.assert_close(error[:3], torch.full((3,), 0.25, dtype=error.dtype))
    metrics = task.metrics(prediction, batch)
    assert metrics["mse"].item() == pytest.approx(0.075, rel=1e-5) and metrics["solved"].item() == pytest.approx(0.7)
    assert metrics["residual_exact"] < 1e-5 and metrics["mse_exact"] < 1e-8
    torch.testing.assert_close(residuals(batch["matrix"], prediction).mean().float(), metrics["residual"])


@pytest.mark.parametrize(("options", "message"), [
    ({"n": 1}, r"data\.task\.n must be >= 2"),
    ({"cond": [0.5, 10]}, r"data\.task\.cond=\[0\.5, 10\] must satisfy 1 <= lo <= hi"),
    ({"cond": [10, 5]}, r"data\.task\.cond=\[10, 5\] must satisfy"),
    ({"ood_cond": [1, float("inf")]}, r"data\.task\.ood_cond=\[1, inf\] must satisfy"),
    ({"ood_cond": [1, 2, 3]}, r"data\.task\.ood_cond must be a pair"),
    ({"features": ["row", "diag"]}, r"data\.task\.features=\['row', 'diag'\] must be distinct parts"),
    ({"features": ["row", "row"]}, r"must be distinct parts"),
    ({"features": ["index"]}, r"must include row or col"),
    ({"solved_tol": 0}, r"data\.task\.solved_tol must be > 0"),
])
def test_bad_settings_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        MatrixInverse(**options)
    assert "\n" not in str(info.value)


def test_bad_setting_from_the_command_line_config(tmp_path):
    cfg = compose_config(["data=matrix_inverse", "data.task.cond=[0,3]"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.task\.cond=\[0, 3\]"):
        build_task(cfg)


@pytest.mark.parametrize("objective", ["predict", "ebt"])
def test_objective_trains_a_step(objective, tmp_path):
    cfg = compose_config(["data=matrix_inverse", f"model/objective={objective}", "model.dim=16",
                          "data.task.n=4", "data.batch_size=4"], tmp_path)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    batch = task.make_batch("train", 0, 4)
    loss, _ = model.objective.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    metrics = model.objective.evaluate(task.make_batch("val", 0, 4))
    assert {"mse", "residual", "solved", "mse_zero"} <= set(metrics) and torch.isfinite(metrics["mse"])
