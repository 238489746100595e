"""Closed-loop policy evaluation on nav2d: fit checks, compute counting, determinism, outputs, the entry point."""

import json
import math

import pytest
import torch

import ebt.analysis.task_eval.policy_eval as policy_eval_module
from ebt.analysis.doc_tables import fill_doc
from ebt.analysis.plotting import write_csv
from ebt.analysis.task_eval.policy_eval import (
    Options,
    Setting,
    check_fits,
    evaluate_policy,
    markdown,
    plot,
    policy_eval,
    read_previous,
    run_episodes,
    select,
    summarize,
    t_interval,
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


def test_rollouts_run_in_the_world_of_their_split(tmp_path, monkeypatch):
    policy, task = _policy(tmp_path, "predict", "data.task.ood_radius=0.45")
    radii, original = [], policy_eval_module.rollout

    def record(scene, planner, world, **kwargs):
        radii.append(world.radius)
        return original(scene, planner, world, **kwargs)

    monkeypatch.setattr(policy_eval_module, "rollout", record)
    for split in ("val", "ood"):
        run_episodes(policy, task, Setting("predict", "predictor"), split, 2)
    assert radii == [0.3, 0.45]


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
    assert len(summary) == 6 and all(r["runs"] == 2 for r in summary)  # 2 settings x val, test, ood
    assert summary[0]["success_std"] == 0.0 and summary[0]["success_ci95"] == 0.0  # same model, same episodes
    text = markdown(summary, {"ebt": []}, {"diffusion": 1}, "cmd")
    assert "diffusion DDIM, 2 steps" in text and "95 % t-interval" in text
    plot(summary, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_entry_point_reports_a_bad_run_in_one_line(tmp_path):
    result = run_cli("policy_eval.py", f"runs=[{tmp_path / 'missing'}]", f"out={tmp_path / 'out'}", cwd=tmp_path,
                     timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr



def test_intervals_are_t_intervals_over_seeds():
    assert t_interval([0.8, 0.9, 1.0]) == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(t_interval([0.5]))
    rows = [{"config": "predict", "policy": "predict", "mode": "predictor", "steps": 0, "best_of": 1,
             "gate_quantile": math.nan, "split": "test", "success": v, "collision": 1 - v, "timeout": 0.0,
             "above": 0.5, "path_length": 2.0, "passes": 1.0} for v in (0.8, 0.9, 1.0)]
    (row,) = summarize(rows)
    assert row["success"] == pytest.approx(0.9) and row["success_ci95"] == pytest.approx(0.24842, rel=1e-4)


def _row(config, seed, mode, steps, split, success, passes=None):
    return {"run": f"{config}_s{seed}", "seed": float(seed), "config": config, "policy": "diffusion", "mode": mode,
            "steps": steps, "best_of": 1, "gate_quantile": math.nan, "split": split, "success": success,
            "collision": 1 - success, "timeout": 0.0, "above": 0.5, "path_length": 2.0,
            "passes": float(steps if passes is None else passes)}


def test_selection_is_made_on_val_only():
    """The configuration (seed-0 val) and the setting (mean val) are chosen on val, and reported on
    the held-out splits; what the held-out splits say chooses nothing."""
    rows = []
    for seed in (0, 1, 2):  # configuration A: 10 steps best on val, 3 steps best on test
        rows += [_row("A", seed, "ddpm", 10, "val", 0.80), _row("A", seed, "ddpm", 10, "test", 0.70 + 0.01 * seed),
                 _row("A", seed, "ddpm", 3, "val", 0.75), _row("A", seed, "ddpm", 3, "test", 0.99)]
    rows += [_row("B", 0, "ddpm", 10, "val", 0.79), _row("B", 0, "ddpm", 10, "test", 1.0)]  # B: better on test only
    selection = select(rows, summarize(rows))
    chosen = [s for s in selection if s["chosen"]]
    assert [s["config"] for s in chosen] == ["A"] and chosen[0]["steps"] == 10
    assert chosen[0]["test_success"] == pytest.approx(0.71) and chosen[0]["test_success_ci95"] > 0
    assert {s["config"]: s["seed0_val_success"] for s in selection} == {"A": 0.80, "B": 0.79}
    # a tie on val goes to the cheaper setting
    tie = [_row("A", 0, "ddpm", 10, "val", 0.8), _row("A", 0, "ddpm", 3, "val", 0.8)]
    assert select(tie, summarize(tie))[0]["steps"] == 3


def test_doc_blocks_are_written_by_the_script(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- policy_eval:results -->\nold table\n<!-- /policy_eval:results -->\nmiddle\n"
                   "<!-- policy_eval:plain-results -->\nkeep\n<!-- /policy_eval:plain-results -->\n")
    policy_eval([], tmp_path / "out", Options(), command="cmd", merge=[_merged(tmp_path)], doc=doc)
    text = doc.read_text()
    assert "old table" not in text and "| diffusion DDPM, 10 steps [A] |" in text and "\nkeep\n" in text
    policy_eval([], tmp_path / "out", Options(), command="cmd", merge=[_merged(tmp_path)], doc=doc, doc_prefix="plain")
    assert "keep" not in doc.read_text()
    (tmp_path / "none.md").write_text("no blocks\n")
    with pytest.raises(ConfigError, match="none of the blocks <!-- policy_eval:results -->"):
        policy_eval([], tmp_path / "out", Options(), command="cmd", merge=[_merged(tmp_path)],
                    doc=tmp_path / "none.md")
    assert fill_doc(doc, {"energy": "x", "results": "y"}, tag="policy_eval", missing_ok=True)  # energy: skipped


def test_rows_written_before_configs_and_seeds_merge(tmp_path):
    (tmp_path / "policy_eval.csv").write_text(
        "run,policy,mode,steps,best_of,gate_quantile,split,success,collision,timeout,above,path_length,passes,plans,"
        "seconds\nr,predict,predictor,0,1,nan,val,0.5,0.5,0.0,0.5,2.0,1.0,5.0,0.4\n")
    (tmp_path / "policy_eval.json").write_text('{"ebt": [], "params": {}}')
    rows, _ = read_previous(tmp_path)
    assert rows[0]["config"] == "predict" and math.isnan(rows[0]["seed"]) and rows[0]["steps"] == 0
    assert summarize(rows)[0]["config"] == "predict"
    assert select(rows, summarize(rows))[0]["chosen"]  # the one configuration, though no row names its seed


def _merged(tmp_path):
    rows = [_row("A", seed, "ddpm", steps, split, 0.6 + 0.01 * steps + 0.01 * seed)
            for seed in (0, 1, 2) for steps in (3, 10) for split in ("val", "test", "ood")]
    write_csv(rows, tmp_path / "in" / "policy_eval.csv")
    (tmp_path / "in" / "policy_eval.json").write_text(
        '{"ebt": [], "params": {"A": 7}, "offline": [{"run": "r", "config": "A", "metrics": {"val/mode_mse": 0.03}}, '
        '{"run": "r", "config": "A", "metrics": {"val/mode_mse": 0.05}}]}')
    return tmp_path / "in"


def test_merge_writes_the_selection_and_the_doc_tables(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- policy_eval:results -->\n<!-- /policy_eval:results -->\n"
                   "<!-- policy_eval:selection -->\n<!-- /policy_eval:selection -->\n"
                   "<!-- policy_eval:offline -->\n<!-- /policy_eval:offline -->\n")
    policy_eval([], tmp_path / "out", Options(), command="cmd", merge=[_merged(tmp_path)], doc=doc)
    assert (tmp_path / "out" / "policy_selection.csv").is_file()
    text = doc.read_text()
    assert "| diffusion DDPM, 10 steps [A] | 3 |" in text and "test success" in text and "`cmd`" in text
    assert "A (chosen)" in text and "0.710 ± " in text  # the setting chosen on val, its test success over 3 seeds
    assert "| A | 2 | 0.0400 ± 0.1271 |" in text  # offline metrics of the training summaries, merged


def test_a_trained_run_is_evaluated_with_its_seed_and_offline_metrics(tmp_path):
    from ebt.training.train import train

    run = tmp_path / "run"
    train(compose_config([*TINY, "model/objective=predict", "data.batch_size=8", "data.eval_batch_size=16",
                          "data.eval_batches=1", "trainer.max_steps=2", "trainer.val_check_interval=2",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "seed=4"], run))
    policy_eval([run], tmp_path / "out", Options(episodes=4), command="cmd")
    rows = (tmp_path / "out" / "policy_eval.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].startswith(f"{run},4,predict,predict,predictor,")  # val, test, ood
    offline = json.loads((tmp_path / "out" / "policy_eval.json").read_text())["offline"]
    assert offline[0]["config"] == "predict" and 0 <= offline[0]["metrics"]["val/mode_mse"] < 10
