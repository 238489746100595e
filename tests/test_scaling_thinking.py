"""Thinking against scale (``scripts/scaling.py ... thinking=true``, ebt.analysis.scaling.thinking): the val-chosen
gain of each size read from the think.py outputs of a grid's EBT jobs, its known trend with size recovered inside its
bootstrap interval, val marked in-sample, predictors ignored, and the refusals (nothing evaluated, a curve axis)."""

import csv
import json
import math
import statistics

import pytest
from scipy import stats

from ebt.analysis.scaling import report
from ebt.analysis.scaling.thinking import thinking_tables
from ebt.commands import options_command
from ebt.options import read_options
from tests.test_scaling import DIMS, SEEDS, fake_grid

TREND = 2.0  # percentage points of bpb gain per decade of non-embedding parameters, on the held-out split
TRAINED = {"val": 3.0, "ood_far": 5.0}
SPREAD = {16: 0.2, 32: 0.5, 64: 0.3}  # per width, seed 0's gain is this much above the line and seed 1's below


def _gain(dim: int, x: float, seed: int, shift: float) -> float:
    """The held-out gain (%) of one job: on the line TREND * log10(X / 1000) + shift in the mean over SEEDS."""
    return TREND * math.log10(x / 1000) + shift + (SPREAD[dim] if seed == 0 else -SPREAD[dim])


def _write_thinking(job, gain: float, trained: dict[str, float] = TRAINED, steps: tuple[int, ...] = (1, 2, 4)) -> None:
    """A think.py output: bpb at ``steps`` (trained: 2) on val and ood_far; val's best is 4 steps (1 % better),
    where ood_far's bpb is ``gain`` % below its trained value."""
    folder = job / "thinking"
    folder.mkdir()
    rows = []
    for split, base in trained.items():
        change = 1.0 if split == "val" else gain
        values = {1: base * 1.05, 2: base, 4: base * (1 - change / 100)}
        rows += [{"split": split, "mode": "fixed", "best_of": 1, "steps": k, "steps_used": k, "forward_passes": k,
                  "bpb": values[k]} for k in steps]
    with (folder / "thinking.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"metric": "bpb", "metric_mode": "min", "trained_steps": 2, "task": "byte-level LM"}
    (folder / "thinking.json").write_text(json.dumps(meta))


def _ebt_jobs(grid) -> list:
    return sorted(p for p in grid.iterdir() if "objective-ebt" in p.name)


def thinking_grid(root, shift: float = 0.0, skip: int = 0):
    """A parameter grid (predictor and EBT) whose EBT jobs have think.py outputs, but for the first ``skip``."""
    grid = fake_grid(root, "params")
    for job in _ebt_jobs(grid)[skip:]:
        summary = json.loads((job / "summary.json").read_text())
        dim = int(job.name.split("model.dim-")[1].split("__")[0])
        _write_thinking(job, _gain(dim, summary["params_non_embedding"], int(summary["seed"]), shift))
    return grid


def _outputs(grid) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    out = grid / "scaling" / "thinking_params"
    return (list(csv.DictReader((out / "thinking.csv").open())),
            {r["split"]: r for r in csv.DictReader((out / "thinking_trend.csv").open())})


def _run(argv: list[str]) -> None:
    assert report.main(read_options(argv, report.DEFAULTS)) == 0


def test_the_gain_of_each_size_and_its_trend_are_read_from_the_grid(tmp_path, capsys):
    grid = thinking_grid(tmp_path / "grid")
    _run([f"dirs={grid}", "x=params", "thinking=true", "draws=200"])
    out = grid / "scaling" / "thinking_params"
    assert {p.name for p in out.iterdir()} == {"thinking.csv", "thinking_trend.csv", "thinking.md", "thinking.png"}
    rows, trends = _outputs(grid)
    assert {r["split"] for r in rows} == {"val", "ood_far"} and len(rows) == 2 * len(DIMS)  # no predictor rows
    t = stats.t.ppf(0.975, len(SEEDS) - 1)
    for r, dim in zip(rows, [*DIMS, *DIMS], strict=True):
        assert r["settings"] == "best-of-1, 4 steps" and r["held_out"] == str(r["split"] != "val")
        if r["split"] == "val":
            assert float(r["gain_pct"]) == pytest.approx(1.0, rel=1e-3) and r["gain_low"] == r["gain_high"]
            continue
        assert float(r["gain_pct"]) == pytest.approx(TREND * math.log10(float(r["x"]) / 1000), rel=1e-3)
        half = t * statistics.stdev([SPREAD[dim], -SPREAD[dim]]) / math.sqrt(len(SEEDS))  # the 95 % t-interval
        assert float(r["gain_high"]) - float(r["gain_pct"]) == pytest.approx(half, rel=1e-3)
        assert float(r["gain_pct"]) - float(r["gain_low"]) == pytest.approx(half, rel=1e-3)
    far = trends["ood_far"]
    assert float(far["trend_pp_per_decade"]) == pytest.approx(TREND, rel=1e-3)
    assert float(far["trend_low"]) < TREND < float(far["trend_high"])  # the seeds' spread widens the interval
    assert float(trends["val"]["trend_pp_per_decade"]) == pytest.approx(0.0, abs=1e-9)
    printed = capsys.readouterr().out
    assert "val (in-sample)" in printed
    read_back = thinking_tables(rows, list(trends.values()))  # docs/ tables are rendered from the CSVs
    assert read_back in printed and read_back in (out / "thinking.md").read_text()


def test_negative_gains_get_the_same_trend_interval_as_positive_ones(tmp_path):
    """A shift of every gain moves no slope: the bootstrap of a gain has no floor at 0 (a loss's fit has one)."""
    intervals = []
    for shift in (-20.0, 20.0):  # every held-out gain negative, then every one positive
        grid = thinking_grid(tmp_path / f"shift{shift}", shift=shift)
        _run([f"dirs={grid}", "x=params", "thinking=true", "draws=200"])
        far = _outputs(grid)[1]["ood_far"]
        intervals.append((float(far["trend_low"]), float(far["trend_high"])))
    assert intervals[0] == pytest.approx(intervals[1], rel=1e-3)


def test_an_undefined_gain_leaves_its_job_out_of_that_split_only(tmp_path, capsys):
    grid = thinking_grid(tmp_path / "grid", skip=1)
    first = _ebt_jobs(grid)[0]  # dim 16, seed 0: its ood_far trained value is 0, so its relative gain is undefined
    _write_thinking(first, 1.0, trained={"val": 3.0, "ood_far": 0.0})
    _run([f"dirs={grid}", "x=params", "thinking=true", "draws=50"])
    assert f"left out: no gain (the chosen setting missing, or a trained value of 0) for {first.name} on ood_far" in (
        capsys.readouterr().err)
    rows, trends = _outputs(grid)
    seeds = {(r["split"], r["size"]): r["seeds"] for r in rows}
    assert seeds[("ood_far", "dim=16")] == "1" and seeds[("val", "dim=16")] == "2"
    far = next(r for r in rows if (r["split"], r["size"]) == ("ood_far", "dim=16"))
    assert float(far["gain_pct"]) == pytest.approx(_gain(16, float(far["x"]), 1, 0.0), rel=1e-3)
    assert far["gain_low"] == "" or math.isnan(float(far["gain_low"]))  # one seed: no interval
    assert math.isfinite(float(trends["ood_far"]["trend_low"]))


def test_unevaluated_jobs_are_named_and_a_grid_that_cannot_be_read_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    grid = thinking_grid(tmp_path / "partial", skip=1)
    _run([f"dirs={grid}", "x=params", "thinking=true", "draws=20"])
    assert "left out: 1 ebt jobs without thinking/ (e.g. python scripts/think.py ckpt=" in capsys.readouterr().err
    bare = fake_grid(tmp_path / "bare", "params")
    untrained = thinking_grid(tmp_path / "untrained", skip=len(DIMS) * len(SEEDS))
    _write_thinking(_ebt_jobs(untrained)[0], 1.0, steps=(1, 4))  # no row at the trained 2 steps
    for folder, argv, message in (
            (bare, ["x=params"], "thinking=true: no job of the grid has a thinking/ folder"),
            (bare, ["x=tokens"], "thinking=true reads one gain per job: x=params or x=depth"),
            (untrained, ["x=params"], "no val row at the trained setting (best-of-1, 2 steps); rerun")):
        with pytest.raises(SystemExit) as exit_info:
            options_command("ebt.analysis.scaling.report", argv=[f"dirs={folder}", "thinking=true", *argv])
        assert exit_info.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], errors
        assert not (folder / "scaling").exists()
