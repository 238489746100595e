"""scripts/collect.py on bad input: an unknown metric is an error, an unreadable job is skipped with one line."""

import json

from tests.utils import run_cli


def _job(root, name: str, summary: str):
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text(f"- seed={name[-1]}\n")
    (root / name / "summary.json").write_text(summary)


def _grid(tmp_path):
    grid = tmp_path / "grid"
    for seed in (0, 1):
        _job(grid, f"seed-{seed}", json.dumps({"metric": "acc", "metrics": {"val/acc": 0.5 + seed, "val/loss": 1.0}}))
    return grid


def test_a_metric_no_job_has_is_an_error(tmp_path):
    grid = _grid(tmp_path)
    result = run_cli("collect.py", f"dirs={grid}", "metrics=[val/acc,val/nope]", cwd=tmp_path,
                     env={"MPLBACKEND": "Agg"})
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "val/nope" in errors[0] and "available: val/acc, val/loss" in errors[0]
    assert "Traceback" not in result.stderr and not (grid / "collect").exists()


def test_a_truncated_summary_is_skipped_with_one_line(tmp_path):
    grid = _grid(tmp_path)
    _job(grid, "seed-2", '{"metric": "acc", "metr')
    result = run_cli("collect.py", f"dirs={grid}", cwd=tmp_path, env={"MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and str(grid / "seed-2" / "summary.json") in skipped[0]
    assert "Traceback" not in result.stderr
    assert "| done | 0 | 0.5 |" in result.stdout and "| done | 1 | 1.5 |" in result.stdout
    assert "| all | 2 | 1 ± 0.7071 |" in result.stdout  # two jobs collected, the third skipped


def test_the_default_columns_cover_every_evaluated_split():
    """Named OOD splits (the text task's ``ood_<name>`` corpora) get their own columns, after val and ood."""
    from pathlib import Path

    from ebt.analysis.tools.collect import Job, headline

    metrics = {"train/bpb": 3.0, "val/bpb": 2.5, "ood_prose/bpb": 3.6, "ood_c/bpb": 3.5, "val/bpb_step2": 2.6}
    job = Job(path=Path("j"), overrides={}, status="done", metrics=metrics, metric="bpb")
    assert headline([job]) == ["val/bpb", "ood_prose/bpb", "ood_c/bpb"]
