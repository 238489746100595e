"""In-context regression task and its baselines: determinism, prompt layout, metrics, baseline correctness."""

import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ebt.analysis.task_eval import icl_eval
from ebt.errors import ConfigError
from ebt.options import read_options
from ebt.tasks import icl_baselines as B
from ebt.tasks.icl import FAMILIES, ICLRegression
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config


def linear_prompts(b=16, k=12, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    w = torch.randn(b, d, generator=g, dtype=torch.float64)
    return xs, torch.einsum("bkd,bd->bk", xs, w), w


def test_least_squares_is_exact_once_k_reaches_d():
    xs, ys, w = linear_prompts(d=5)
    preds = B.least_squares(xs, ys)
    torch.testing.assert_close(preds[:, 5:], ys[:, 5:], atol=1e-8, rtol=1e-8)
    assert (preds[:, 0] == 0).all()
    assert (preds[:, 1:5] - ys[:, 1:5]).abs().max() > 1e-3  # underdetermined: not exact before d examples
    # min-norm solution with 2 examples: w_hat lies in span(x_1, x_2) and fits them
    w_hat = torch.linalg.pinv(xs[:, :2]) @ ys[:, :2, None]  # (B, d, 1)
    torch.testing.assert_close(preds[:, 2], (xs[:, 2:3] @ w_hat)[:, 0, 0])
    torch.testing.assert_close((xs[:, :2] @ w_hat)[..., 0], ys[:, :2])


def test_least_squares_on_task_batches_float32():
    task = ICLRegression(n_dims=4, n_points=9)
    batch = task.make_batch("val", 0, 32)
    errors = task.normalized_errors(B.least_squares(batch["xs"], batch["ys"]), batch)
    assert errors[:, 4:].max() < 1e-6 and errors[:, 0].mean() > 0.5


def test_averaging_matches_its_definition():
    xs, ys, _ = linear_prompts(b=3, k=6, d=4)
    preds = B.averaging(xs, ys)
    for i in range(1, 6):
        w_hat = (ys[:, :i, None] * xs[:, :i]).mean(dim=1)
        torch.testing.assert_close(preds[:, i], (w_hat * xs[:, i]).sum(-1))
    assert (preds[:, 0] == 0).all()


def test_nearest_neighbours_on_a_line():
    xs = torch.tensor([[[0.0], [10.0], [1.0], [2.0], [11.0], [0.4]]])
    ys = torch.tensor([[1.0, 5.0, 2.0, 3.0, 7.0, 0.0]])
    preds = B.nearest_neighbours(xs, ys)
    assert preds[0, 1] == 1.0  # one earlier example
    assert preds[0, 2] == pytest.approx(3.0)  # x=1: neighbours 0 and 10 (only two earlier)
    assert preds[0, 4] == pytest.approx((5.0 + 3.0 + 2.0) / 3)  # x=11: 10, 2, 1
    assert preds[0, 5] == pytest.approx((1.0 + 2.0 + 3.0) / 3)  # x=0.4: 0, 1, 2


def test_lasso_beats_least_squares_on_sparse_prompts_with_few_examples():
    task = ICLRegression(family="sparse_linear", n_dims=8, sparsity=1, n_points=5)
    batch = task.make_batch("val", 0, 4)
    lasso = task.normalized_errors(B.lasso(batch["xs"], batch["ys"]), batch)[:, 3:].mean()
    ls = task.normalized_errors(B.least_squares(batch["xs"], batch["ys"]), batch)[:, 3:].mean()
    assert lasso < 0.5 * ls
    assert set(B.baselines_for("sparse_linear")) == {"least_squares", "averaging", "3-nn", "lasso"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", ["interleaved", "paired"])
def test_batches_are_deterministic(family, fmt):
    task = ICLRegression(family=family, format=fmt, n_dims=3, n_points=5, seed=1)
    a, b = task.make_batch("train", 7, 4), task.make_batch("train", 7, 4)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["ys"], task.make_batch("train", 8, 4)["ys"])
    assert not torch.equal(a["ys"], ICLRegression(family=family, format=fmt, n_dims=3, n_points=5,
                                                   seed=2).make_batch("train", 7, 4)["ys"])
    assert not torch.equal(a["xs"], task.make_batch("val", 7, 4)["xs"])


def test_prompt_layouts_hold_the_same_examples_causally():
    inter = ICLRegression(format="interleaved", n_dims=3, n_points=4).make_batch("val", 0, 2)
    paired = ICLRegression(format="paired", n_dims=3, n_points=4).make_batch("val", 0, 2)
    xs, ys = inter["xs"], inter["ys"]
    torch.testing.assert_close(paired["xs"], xs)
    assert inter["inputs"].shape == (2, 8, 4) and paired["inputs"].shape == (2, 4, 4)
    torch.testing.assert_close(inter["inputs"][:, 0::2, :3], xs)  # x tokens
    torch.testing.assert_close(inter["inputs"][:, 1::2, 3], ys)  # y tokens
    assert (inter["inputs"][:, 0::2, 3] == 0).all() and (inter["inputs"][:, 1::2, :3] == 0).all()
    assert inter["target_mask"][:, 0::2].all() and not inter["target_mask"][:, 1::2].any()
    torch.testing.assert_close(inter["targets"][:, 0::2, 0], ys)
    torch.testing.assert_close(paired["inputs"][:, :, :3], xs)
    torch.testing.assert_close(paired["inputs"][:, 1:, 3], ys[:, :-1])  # y_{i-1}, never y_i
    assert (paired["inputs"][:, 0, 3] == 0).all() and paired["target_mask"].all()


def test_decision_tree_matches_a_naive_traversal():
    task = ICLRegression(family="decision_tree", n_dims=4, depth=3)
    xs = np.random.default_rng(0).standard_normal((3, 7, 4))
    ys = task.sample_functions(np.random.default_rng(5), xs)
    rng = np.random.default_rng(5)
    features, leaves = rng.integers(0, 4, size=(3, 7)), rng.standard_normal((3, 8))
    for b in range(3):
        for k in range(7):
            node = 0
            for _ in range(3):
                node = 2 * node + (2 if xs[b, k, features[b, node]] > 0 else 1)
            assert ys[b, k] == leaves[b, node - 7]


def test_metrics_and_ood_split():
    task = ICLRegression(n_dims=5, n_points=11, ood_x_scale=3.0, ood_points=15)
    batch = task.make_batch("val", 0, 512)
    perfect = task.metrics(batch["targets"], batch)
    assert perfect["err"] == 0 and {"err_k1", "err_k2", "err_k5", "err_k10", "err_last"} <= set(perfect)
    zero = task.metrics(torch.zeros_like(batch["targets"]), batch)
    assert 0.85 < zero["err"] < 1.15  # predicting 0 scores ~1 (normalised by Var y = d)
    ood = task.make_batch("ood", 0, 512)
    assert ood["xs"].shape[1] == 15 and 7.5 < ood["xs"].std() ** 2 < 10.5
    assert 0.85 < task.metrics(torch.zeros_like(ood["targets"]), ood)["err"] < 1.15
    with pytest.raises(ValueError, match="shape"):
        task.metrics(torch.zeros(512, 11, 1), batch)


def test_bad_options_fail_clearly():
    with pytest.raises(ConfigError, match="family"):
        ICLRegression(family="quadratic")
    with pytest.raises(ConfigError, match="sparsity"):
        ICLRegression(family="sparse_linear", n_dims=3, sparsity=4)
    with pytest.raises(ConfigError, match="format"):
        ICLRegression(format="stacked")


def test_eval_script_reads_a_checkpoint_and_writes_csv_and_png(tmp_path):
    cfg = compose_config(["data=icl_regression", "model/backbone=looped", "model.dim=16",
                          "model.mixer.n_heads=2", "data.task.n_points=4", "data.task.n_dims=2"], tmp_path)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    config = OmegaConf.to_container(cfg, resolve=True)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"config": config}}, ckpt)
    rows = icl_eval.main(read_options([f"ckpt={ckpt}", "batches=1", "batch_size=4", "eval_loops=3"], icl_eval.DEFAULTS))
    with open(tmp_path / "icl_eval.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 4 * 4  # 2 splits x (model + 3 baselines) x 4 positions
    assert (tmp_path / "icl_eval.png").stat().st_size > 0
    ls = [r for r in rows if r["method"] == "least_squares" and r["split"] == "val"]
    assert ls[3]["err"] < 1e-6  # k = 3 >= d = 2
    assert {r["method"] for r in rows} == {"Looped (tmp_path) T=3".replace("tmp_path", tmp_path.name),
                                           "least_squares", "averaging", "3-nn"}
