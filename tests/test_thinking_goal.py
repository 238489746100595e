"""scripts/thinking_goal.py: per-seed relative changes chosen on val, bootstrap intervals, the goal's rules."""

import csv
import math

import numpy as np
import pytest

from ebt.analysis.thinking.goal import DEFAULTS, bootstrap_interval, goal_rows, main, met
from ebt.errors import ConfigError
from ebt.options import read_options
from tests.test_think_seeds import write_seed


def seed_rows(val, ood, *, best_of_16=0.95, predictor=1.0, looped=(1.2, 0.9)):
    """Error (minimise) at steps 2 / 8 / 32 per split (dicts step -> value); best-of-16 = factor x best-of-1;
    looped at 1 and 16 loops (16 loops cost more passes than 8 steps)."""
    out = []
    for split, curve in (("val", val), ("ood", ood)):
        for steps, value in curve.items():
            out += [{"split": split, "mode": "fixed", "best_of": 1, "steps": steps, "forward_passes": steps,
                     "acc": value},
                    {"split": split, "mode": "fixed", "best_of": 16, "steps": steps, "forward_passes": 16 * steps,
                     "acc": best_of_16 * value}]
        out += [{"split": split, "mode": "predictor", "best_of": 1, "steps": 0, "forward_passes": 1,
                 "acc": predictor},
                {"split": split, "mode": "loops", "loops": 1, "best_of": 1, "steps": 0, "forward_passes": 1,
                 "acc": looped[0]},
                {"split": split, "mode": "loops", "loops": 64, "best_of": 1, "steps": 0, "forward_passes": 64,
                 "acc": looped[1]}]
    return out


def write(tmp_path, name, **kw):
    folder = write_seed(tmp_path / name, seed_rows(**kw))
    meta = (folder / "thinking.json").read_text().replace('"max"', '"min"')
    (folder / "thinking.json").write_text(meta)
    return folder


def by_test(rows):
    return {(r["split"], r["test"]): r for r in rows}


def test_a_converging_recipe_meets_every_test_and_a_drifting_one_fails(tmp_path):
    converging = [write(tmp_path, f"c{i}", val={2: 1.0, 8: 0.8, 32: 0.8 + 0.01 * i}, ood={2: 1.0, 8: 0.7 - 0.02 * i,
                                                                                            32: 0.75})
                  for i in range(5)]
    _, rows = goal_rows(converging)
    found = by_test(rows)
    ood = {t: found["ood", t] for t in ("longest", "chosen_steps", "best_of", "vs_predictor", "vs_looped")}
    assert ood["chosen_steps"]["met"] == "yes" and ood["chosen_steps"]["detail"] == "best-of-1, 8 steps vs 2 steps"
    assert math.isclose(ood["chosen_steps"]["mean"], np.mean([0.3 + 0.02 * i for i in range(5)]))
    assert ood["longest"]["met"] == "yes" and ood["best_of"]["met"] == "yes"  # 5 % lower with 16 candidates
    # the EBT's chosen setting is best-of-16 at 8 steps (128 passes): the looped model may use all its 64 loops
    assert ood["vs_looped"]["detail"] == "EBT best-of-16, 8 steps vs 64 loops"
    assert ood["vs_predictor"]["met"] == "yes"
    assert found["val", "chosen_steps"]["met"] == "yes (in-sample)"
    drifting = [write(tmp_path, f"d{i}", val={2: 1.0, 8: 1.5, 32: 3.0 + i}, ood={2: 1.0, 8: 1.6, 32: 4.0},
                      best_of_16=1.1) for i in range(5)]
    _, rows = goal_rows(drifting)
    found = by_test(rows)
    assert found["ood", "longest"]["met"] == "no" and math.isclose(found["ood", "longest"]["mean"], -3.0)
    assert found["ood", "chosen_steps"]["mean"] == 0 and found["ood", "chosen_steps"]["met"] == "no"
    assert found["ood", "best_of"]["met"] == "no"


def test_the_looped_model_is_held_to_the_ebts_forward_passes(tmp_path):
    runs = [write(tmp_path, f"s{i}", val={2: 1.0, 8: 1.2, 32: 1.3}, ood={2: 1.0, 8: 1.1, 32: 1.2}, best_of_16=1.05)
            for i in range(3)]
    _, rows = goal_rows(runs)
    looped = by_test(rows)["ood", "vs_looped"]
    assert looped["detail"] == "EBT best-of-1, 2 steps vs 1 loop"  # 64 loops would cost more than the EBT's 2
    assert math.isclose(looped["mean"], (1.2 - 1.0) / 1.2)


def test_bootstrap_interval_brackets_the_mean_and_needs_three_seeds():
    low, high = bootstrap_interval([0.1, 0.2, 0.3, 0.4, 0.5], draws=5000, level=0.95, seed=0)
    assert 0.1 <= low < 0.3 < high <= 0.5
    assert bootstrap_interval([0.2, 0.2, 0.2], draws=500, level=0.95, seed=0) == pytest.approx((0.2, 0.2))
    assert all(math.isnan(v) for v in bootstrap_interval([0.1, 0.2], draws=500, level=0.95, seed=0))
    assert met("longest", -0.5, -0.9, 0.01, 0.1) == "yes" and met("longest", -0.5, -0.9, -0.01, 0.1) == "no"
    assert met("chosen_steps", 0.05, 0.01, 0.1, 0.1) == "no"  # interval above 0 but under the 10 % gain
    assert met("best_of", 0.0, math.nan, math.nan, 0.1) == "n/a"


def test_the_command_writes_goal_csv_and_refuses_bad_options(tmp_path):
    runs = [write(tmp_path, f"s{i}", val={2: 1.0, 8: 0.9, 32: 0.9}, ood={2: 1.0, 8: 0.8, 32: 0.85}) for i in range(3)]
    cfg = read_options([f"runs=[{','.join(map(str, runs))}]", f"out={tmp_path / 'out'}"], DEFAULTS)
    assert main(cfg) == 0
    with (tmp_path / "out" / "goal.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["test"] for r in rows} == {"longest", "chosen_steps", "best_of", "vs_predictor", "vs_looped"}
    assert "bootstrap interval" in (tmp_path / "out" / "goal.md").read_text()
    with pytest.raises(ConfigError, match="out= is required"):
        main(read_options([f"runs=[{runs[0]}]"], DEFAULTS))
    with pytest.raises(ConfigError, match="level=1.5"):
        main(read_options([f"runs=[{runs[0]}]", "out=x", "level=1.5"], DEFAULTS))


def test_tables_read_the_csv_strings_back(tmp_path):
    from ebt.analysis.thinking.goal import ablation_table, goal_table

    row = {"split": "ood", "test": "chosen_steps", "mean": "0.271", "low": "0.22", "high": "0.319", "seeds": "5",
           "met": "yes", "detail": "best-of-1, 8 steps vs 2 steps"}
    one_seed = {**row, "test": "longest", "low": "nan", "high": "nan", "met": "n/a"}
    assert "| ood | chosen_steps | +27.1% [+22.0%, +31.9%] | 5 | yes |" in goal_table([row])
    table = ablation_table([row, one_seed], [row], labels=("recipe", "without replay"))
    assert "| recipe | +27.1% (n/a) | +27.1% [+22.0%, +31.9%] (yes) |" in table  # one seed: no interval
    assert "| without replay |  | +27.1% [+22.0%, +31.9%] (yes) |" in table
