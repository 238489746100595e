"""scripts/think_seeds.py: settings selected on val and read on ood, mean ± std over seeds, clear errors."""

import csv
import json
import math

import pytest

from ebt.analysis.thinking.think_seeds import DEFAULTS, main, summarise
from ebt.commands import options_command
from ebt.errors import DataError
from ebt.options import read_options

FIELDS = ["split", "mode", "best_of", "steps", "steps_used", "forward_passes", "loops", "acc", "loss"]


def write_seed(folder, rows, trained_steps=2, task="toy"):
    folder.mkdir(parents=True)
    with (folder / "thinking.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "thinking.json").write_text(json.dumps({"metric": "acc", "metric_mode": "max", "task": task,
                                                      "trained_steps": trained_steps}))
    return folder


def rows(val_2, val_8, ood_2, ood_8, predictor=0.5, looped=(0.4, 0.45)):
    out = []
    for split, at2, at8 in (("val", val_2, val_8), ("ood", ood_2, ood_8)):
        out += [{"split": split, "mode": "fixed", "best_of": 1, "steps": 2, "forward_passes": 2, "acc": at2},
                {"split": split, "mode": "fixed", "best_of": 1, "steps": 8, "forward_passes": 8, "acc": at8},
                {"split": split, "mode": "predictor", "best_of": 1, "steps": 0, "forward_passes": 1, "acc": predictor},
                {"split": split, "mode": "loops", "loops": 1, "best_of": 1, "steps": 0, "forward_passes": 1,
                 "acc": looped[0]},
                {"split": split, "mode": "loops", "loops": 4, "best_of": 1, "steps": 0, "forward_passes": 2,
                 "acc": looped[1] if split == "val" else looped[0] - 0.1}]
    return out


def test_the_setting_is_chosen_on_val_and_read_on_ood(tmp_path):
    # seed a: 8 steps is better on val, worse on ood; seed b: 8 steps better on both
    a = write_seed(tmp_path / "a", rows(0.6, 0.7, 0.3, 0.2))
    b = write_seed(tmp_path / "b", rows(0.6, 0.8, 0.3, 0.5))
    _, per_setting, headline, text = summarise([a, b])
    ood = next(h for h in headline if h["split"] == "ood")
    assert ood["trained"] == "0.3 ± 0"
    assert ood["selected"].startswith("0.35 ± 0.21")  # 0.2 and 0.5 (the val choice, not the ood best)
    assert ood["oracle"].startswith("0.4 ± 0.14")  # 0.3 and 0.5 (tuned on ood itself: an upper bound)
    assert ood["improvement"].startswith("+16.7%")  # mean of -33.3 % and +66.7 %
    val = next(h for h in headline if h["split"] == "val")
    assert val["improvement"].endswith("(in-sample)") and "in-sample" not in ood["improvement"]
    assert ood["selected settings"] == "best-of-1, 8 steps"
    assert ood["looped"] == "0.3 ± 0" and ood["looped loops"] == "4"  # 4 loops chosen on val, read on ood
    assert ood["predictor"] == "0.5 ± 0"
    setting = next(r for r in per_setting if (r["split"], r["mode"], r["steps"]) == ("ood", "fixed", 8))
    assert math.isclose(setting["acc_mean"], 0.35) and setting["seeds"] == 2
    assert "settings selected on val" in text


def test_another_metric_column_with_its_direction(tmp_path):
    a = write_seed(tmp_path / "a", rows(0.6, 0.7, 0.3, 0.2))
    meta, _, headline, _ = summarise([a], metric=("loss", "min"))  # no loss values in these rows: all NaN
    assert meta["metric"] == "loss" and headline[0]["trained"] == ""
    meta, _, headline, _ = summarise([a], metric=("acc", "min"))  # minimised, 2 steps beats 8 on val
    assert next(h for h in headline if h["split"] == "ood")["selected"] == "0.3"


def test_command_line_writes_tables_and_plot(tmp_path, capsys):
    a = write_seed(tmp_path / "run_a" / "thinking", rows(0.6, 0.7, 0.3, 0.2))
    assert main(read_options([f"runs={tmp_path / 'run_a'}", f"out={tmp_path / 'out'}"], DEFAULTS)) == 0
    for name in ("seeds.csv", "headline.csv", "headline.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert (tmp_path / "out" / "thinking_seeds.png").read_bytes()[:4] == b"\x89PNG"
    assert a.is_dir() and "| ood |" in capsys.readouterr().out


def test_mixed_experiments_missing_outputs_and_unknown_splits_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the command's one error line, not a traceback
    a = write_seed(tmp_path / "a", rows(0.6, 0.7, 0.3, 0.2))
    other = write_seed(tmp_path / "b", rows(0.6, 0.7, 0.3, 0.2), trained_steps=4)
    with pytest.raises(DataError, match="another experiment"):
        summarise([a, other])
    with pytest.raises(DataError, match="no such split"):
        summarise([a], select_on="test")
    with pytest.raises(DataError, match="no column 'cell_acc'; its metrics: acc, loss"):
        summarise([a], metric=("cell_acc", "max"))
    with pytest.raises(SystemExit) as exited:
        options_command("ebt.analysis.thinking.think_seeds", [f"runs=[{tmp_path / 'missing'}]",
                                                               f"out={tmp_path / 'out'}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run scripts/think.py" in err and len(err.strip().splitlines()) == 1


def test_the_mean_final_energy_is_kept_beside_the_metric(tmp_path):
    def with_energy(energies):
        return [{**r, "energy": energies.get((r["split"], r["steps"]), "")} for r in rows(0.6, 0.7, 0.3, 0.2)]

    FIELDS.append("energy")
    try:
        a = write_seed(tmp_path / "a", with_energy({("val", 2): 1.0, ("val", 8): 0.5}))
        b = write_seed(tmp_path / "b", with_energy({("val", 2): 3.0, ("val", 8): 0.7}))
    finally:
        FIELDS.remove("energy")
    _, per_setting, _, _ = summarise([a, b])
    at = {(r["split"], r["mode"], r["steps"]): r for r in per_setting}
    assert at["val", "fixed", 2]["energy_mean"] == 2.0 and at["val", "fixed", 8]["energy_mean"] == 0.6
    assert math.isnan(at["val", "predictor", 0]["energy_mean"])  # no energy: not a number, not 0
