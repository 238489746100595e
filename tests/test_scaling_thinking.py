"""Thinking against scale (``scripts/scaling.py ... thinking=true``, ebt.analysis.scaling.thinking): the val-chosen
gain of each size read from the think.py outputs of a grid's EBT jobs, its known trend with size recovered inside its
bootstrap interval, val marked in-sample, predictors ignored, and the refusals (nothing evaluated, a curve axis)."""

import csv
import json
import math

import pytest

from ebt.analysis.scaling import report
from ebt.analysis.scaling.thinking import thinking_tables
from ebt.commands import options_command
from ebt.options import read_options
from tests.test_scaling import DIMS, SEEDS, fake_grid

TREND = 2.0  # percentage points of bpb gain per decade of non-embedding parameters, on the held-out split
TRAINED = {"val": 3.0, "ood_far": 5.0}


def _gain(x: float, seed: int) -> float:
    """The true held-out gain (%) of a size: TREND per decade, plus a seed's offset (the same at every size)."""
    return TREND * math.log10(x / 1000) + 0.3 * (seed - 1)


def _write_thinking(job, x: float, seed: int) -> None:
    """A think.py output: bpb at 1, 2 (trained), 4 steps on val and ood_far; val's best is 4 steps."""
    folder = job / "thinking"
    folder.mkdir()
    rows = []
    for split, base in TRAINED.items():
        gain = 1.0 if split == "val" else _gain(x, seed)
        for steps, value in ((1, base * 1.05), (2, base), (4, base * (1 - gain / 100))):
            rows.append({"split": split, "mode": "fixed", "best_of": 1, "steps": steps, "steps_used": steps,
                         "forward_passes": steps, "bpb": value})
    with (folder / "thinking.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"metric": "bpb", "metric_mode": "min", "trained_steps": 2, "task": "byte-level LM"}
    (folder / "thinking.json").write_text(json.dumps(meta))


def thinking_grid(root, skip: int = 0):
    """A parameter grid (predictor and EBT) whose EBT jobs have think.py outputs, but for ``skip`` of them."""
    grid = fake_grid(root, "params")
    jobs = sorted(p for p in grid.iterdir() if "objective-ebt" in p.name)
    for job in jobs[skip:]:
        summary = json.loads((job / "summary.json").read_text())
        _write_thinking(job, summary["params_non_embedding"], int(summary["seed"]))
    return grid


def _run(argv: list[str]) -> None:
    assert report.main(read_options(argv, report.DEFAULTS)) == 0


def test_the_gain_of_each_size_and_its_trend_are_read_from_the_grid(tmp_path, capsys):
    grid = thinking_grid(tmp_path / "grid")
    _run([f"dirs={grid}", "x=params", "thinking=true", "draws=200"])
    out = grid / "scaling" / "thinking_params"
    assert {p.name for p in out.iterdir()} == {"thinking.csv", "thinking_trend.csv", "thinking.md", "thinking.png"}
    rows = list(csv.DictReader((out / "thinking.csv").open()))
    assert {r["split"] for r in rows} == {"val", "ood_far"} and len(rows) == 2 * len(DIMS)  # no predictor rows
    for r in rows:
        expected = 1.0 if r["split"] == "val" else sum(_gain(float(r["x"]), s) for s in SEEDS) / len(SEEDS)
        assert float(r["gain_pct"]) == pytest.approx(expected, rel=1e-3)
        assert float(r["gain_low"]) <= float(r["gain_pct"]) <= float(r["gain_high"])
        assert r["settings"] == "best-of-1, 4 steps" and r["held_out"] == str(r["split"] != "val")
    trends = {r["split"]: r for r in csv.DictReader((out / "thinking_trend.csv").open())}
    far = trends["ood_far"]
    assert float(far["trend_pp_per_decade"]) == pytest.approx(TREND, rel=1e-3)
    assert float(far["trend_low"]) <= TREND <= float(far["trend_high"])
    assert float(trends["val"]["trend_pp_per_decade"]) == pytest.approx(0.0, abs=1e-9)
    printed = capsys.readouterr().out
    assert "val (in-sample)" in printed
    read_back = thinking_tables(rows, list(trends.values()))  # docs/ tables are rendered from the CSVs
    assert read_back in printed and read_back in (out / "thinking.md").read_text()


def test_unevaluated_jobs_are_named_and_a_grid_without_any_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    grid = thinking_grid(tmp_path / "partial", skip=1)
    _run([f"dirs={grid}", "x=params", "thinking=true", "draws=20"])
    assert "left out: 1 ebt jobs without thinking/ (e.g. python scripts/think.py ckpt=" in capsys.readouterr().err
    bare = fake_grid(tmp_path / "bare", "params")
    for argv, message in ((["x=params"], "thinking=true: no job of the grid has a thinking/ folder"),
                          (["x=tokens"], "thinking=true reads one gain per job: x=params or x=depth")):
        with pytest.raises(SystemExit) as exit_info:
            options_command("ebt.analysis.scaling.report", argv=[f"dirs={bare}", "thinking=true", *argv])
        assert exit_info.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], errors
    assert not (bare / "scaling").exists()
