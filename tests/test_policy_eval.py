"""Closed-loop policy evaluation on nav2d: fit checks, compute counting, determinism, outputs, the entry point."""

import math

import pytest
import torch

from ebt.analysis.policy_eval import (
    Options,
    Setting,
    check_fits,
    evaluate_policy,
    markdown,
    plot,
    run_episodes,
    summarize,
)
from ebt.errors import ConfigError
from ebt.tasks.nav2d import Nav2D
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config, run_cli

TINY = ["experiment=nav2d", "model.dim=16", "model.backbone.n_layers=1", "data.task.max_steps=12"]


def _policy(tmp_path, objective, *overrides):
    torch.manual_seed(0)  # the weights, whatever ran before
    cfg = compose_config([*TINY, f"model/objective={objective}", *overrides], tmp_path)
    task = build_task(cfg)
    return build_lit_model(cfg, task).objective.eval(), task


def test_a_chunk_that_does_not_fit_is_one_clear_error(tmp_path):
    objective, task = _policy(tmp_path, "predict")
    with pytest.raises(ConfigError, match="a chunk of 4 actions does not fit the model: it reads chunks of 8") as e:
        check_fits(objective, Nav2D(horizon=4, execute=2))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="execute=9"):
        check_fits(objective, task, execute=9)


def test_a_run_on_another_task_is_refused(tmp_path):
    cfg = compose_config(["model.dim=16", "model/objective=predict", "data=matrix_inverse"], tmp_path)
    task = build_task(cfg)
    with pytest.raises(ConfigError, match="needs a nav2d run"):
        check_fits(build_lit_model(cfg, task).objective, task)


@pytest.mark.parametrize(("objective", "setting", "passes"), [
    ("predict", Setting("predict", "predictor"), 1.0),
    ("diffusion", Setting("diffusion", "ddim", 3, 1, 3.0), 3.0),
    ("diffusion", Setting("diffusion", "ddpm", 2, 1, 2.0), 2.0),
    ("ebt", Setting("ebt", "best_of", 2, 3, 9.0), 9.0),
])
def test_rollouts_count_passes_and_are_deterministic(tmp_path, objective, setting, passes):
    policy, task = _policy(tmp_path, objective)
    first = run_episodes(policy, task, setting, "ood", 8, seed=3)
    again = run_episodes(policy, task, setting, "ood", 8, seed=3)
    assert first == again or all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in
                                 zip(first.values(), again.values(), strict=True))
    assert first["passes"] == pytest.approx(passes)
    assert first["success"] + first["collision"] + first["timeout"] == pytest.approx(1.0)


def test_ebt_evaluation_has_energy_scores_and_gated_rows(tmp_path):
    policy, task = _policy(tmp_path, "ebt")
    options = Options(episodes=8, ebt_steps=(1,), best_of=(1,), gate_min=1, gate_max=2, gate_best_of=2,
                      gate_quantiles=(0.0, 1.0))
    rows, info = evaluate_policy(policy, task, options, run="r")
    assert 0.0 <= info["auroc_starts_1"] <= 1.0 and 0.0 <= info["auroc_demos_2"] <= 1.0  # 1 evaluated, 2 trained
    gated = {r["gate_quantile"]: r for r in rows if r["mode"] == "gated" and r["split"] == "val"}
    # q=1: no plan thinks again (1 step + its energy); q=0: most do (+ best-of-2 at 2 steps: 2*2 + 2 passes)
    assert gated[1.0]["passes"] == pytest.approx(2.0)
    assert gated[0.0]["passes"] > 4.0


def test_summary_table_and_plot(tmp_path):
    policy, task = _policy(tmp_path, "diffusion")
    options = Options(episodes=4, diffusion_steps=(1, 2), samplers=("ddim",))
    rows = evaluate_policy(policy, task, options, run="a")[0] + evaluate_policy(policy, task, options, run="b")[0]
    summary = summarize(rows)
    assert len(summary) == 4 and all(r["runs"] == 2 for r in summary)
    assert summary[0]["success_std"] == 0.0  # same model, same seed: same episodes
    text = markdown(summary, {"ebt": []}, {"diffusion": 1}, "cmd")
    assert "diffusion DDIM, 2 steps" in text
    plot(summary, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_entry_point_reports_a_bad_run_in_one_line(tmp_path):
    result = run_cli("policy_eval.py", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), cwd=tmp_path,
                     timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr

