"""Named out-of-distribution corpora of the text task (``data.task.ood_paths``), their random streams, the
legacy ``ood_path``, clear errors for a missing corpus, and ``ebt.analysis.thinking.ood_curve`` (improvement against OOD
gap)."""

import math
import zlib

import numpy as np
import pytest
import torch

from ebt.analysis.plotting import write_csv
from ebt.analysis.thinking.ood_curve import curve_points, ood_curve, read_rows
from ebt.commands import options_command
from ebt.errors import ConfigError, DataError
from ebt.tasks.addition import Addition
from ebt.tasks.text import Text, default_corpus
from ebt.training.train import train
from tests.utils import compose_config, run_cli

WINDOW = 17  # seq_len 16 + 1


@pytest.fixture
def corpora(tmp_path):
    """A training folder of .py files and OOD folders of .txt / .c files (nested: globs at any depth)."""
    rng = np.random.default_rng(0)
    train_dir = tmp_path / "code"
    for i in range(8):
        (train_dir / f"pkg{i % 2}").mkdir(parents=True, exist_ok=True)
        (train_dir / f"pkg{i % 2}" / f"m{i}.py").write_bytes(bytes(rng.integers(32, 127, 300).astype(np.uint8)))
    other = tmp_path / "other"
    (other / "docs" / "deep").mkdir(parents=True)
    (other / "docs" / "a.txt").write_bytes(b"plain english prose, " * 20)
    (other / "docs" / "deep" / "b.txt").write_bytes(b"more words in a nested folder. " * 20)
    (other / "src.c").write_bytes(b"int main(void) { return 0; }\n" * 20)
    return train_dir, other


def text(train_dir, **options) -> Text:
    return Text(path=str(train_dir), seq_len=WINDOW - 1, val_every=3, **options)


def test_named_ood_splits_are_deterministic_with_distinct_streams(corpora):
    train_dir, other = corpora
    spec = {"prose": {"path": str(other), "glob": "*.txt"}, "prose2": {"path": str(other), "glob": "*.txt"},
            "c": str(other / "*.c")}
    a, b = text(train_dir, ood_paths=spec), text(train_dir, ood_paths=spec)
    assert a.eval_splits == ("val", "ood_prose", "ood_prose2", "ood_c")
    for split in a.eval_splits:
        for i in range(3):
            torch.testing.assert_close(a.make_batch(split, i, 4), b.make_batch(split, i, 4))
    # same files, other name: another stream (crc32 of the name), and not any fixed split's stream
    assert not torch.equal(a.make_batch("ood_prose", 0, 8)["input_ids"], a.make_batch("ood_prose2", 0, 8)["input_ids"])
    draws = {s: a.rng(s, 0).random() for s in ("train", "val", "ood", "test", "ood_prose", "ood_prose2", "ood_c")}
    assert len(set(draws.values())) == len(draws)
    assert a.rng("ood_c", 5).random() == np.random.default_rng([0, zlib.crc32(b"ood_c"), 5]).random()


def test_old_splits_keep_their_streams_and_unknown_splits_are_errors(corpora):
    train_dir, other = corpora
    task = text(train_dir, seed=7, ood_paths={"c": str(other / "*.c")})
    for split, split_id in {"train": 0, "val": 1, "ood": 2, "test": 3}.items():  # fixed ids, never change
        assert task.rng(split, 4).random() == np.random.default_rng([7, split_id, 4]).random()
    adding = Addition(seed=3)
    assert adding.rng("ood", 2).random() == np.random.default_rng([3, 2, 2]).random()
    with pytest.raises(ValueError, match="unknown split 'ood_c'"):
        adding.rng("ood_c", 0)  # a name the task does not evaluate
    with pytest.raises(ValueError, match="unknown split 'ood' of the text task"):
        task.make_batch("ood", 0, 2)  # no ood_path: no ood split
    with pytest.raises(ValueError, match="unknown split 'ood_typo'"):
        task.make_batch("ood_typo", 0, 2)


def test_old_ood_path_gives_the_same_batches_as_before(corpora, tmp_path):
    """``ood_path`` -> split ``ood``, drawn with ``default_rng([seed, 2, index])`` as it always was: a single file's
    windows are one uniform draw for the file (one file: always it) and one integer offset per row."""
    train_dir, _ = corpora
    single = tmp_path / "single.txt"
    data = bytes(np.random.default_rng(1).integers(0, 256, 500).astype(np.uint8))
    single.write_bytes(data)
    task = text(train_dir, seed=5, ood_path=str(single))
    assert task.eval_splits == ("val", "ood")
    for index in range(3):
        rng = np.random.default_rng([5, 2, index])
        rng.random(4)  # which file each row reads (only one here)
        offsets = [int(rng.integers(0, len(data) - WINDOW + 1)) for _ in range(4)]
        expected = torch.tensor([list(data[o:o + WINDOW]) for o in offsets])
        batch = task.make_batch("ood", index, 4)
        torch.testing.assert_close(batch["input_ids"], expected[:, :-1])
        torch.testing.assert_close(batch["targets"], expected[:, 1:])


def test_globs_lists_and_wildcard_paths(corpora):
    train_dir, other = corpora
    task = text(train_dir, ood_paths={
        "any_depth": {"path": str(other), "glob": "*.txt"},  # a bare name: any depth
        "anchored": {"path": str(other), "glob": "docs/*.txt"},  # with a slash: relative to the folder
        "several": {"path": str(other), "glob": ["docs/deep/*.txt", "*.c"]},
        "wild": str(other / "**" / "*.txt"), "top": str(other / "*.c"), "file": str(other / "src.c")})
    names = {s: sorted(f.name for f, _, _ in task.corpora[s].files) for s in task.eval_splits if s != "val"}
    assert names == {"ood_any_depth": ["a.txt", "b.txt"], "ood_anchored": ["a.txt"],
                     "ood_several": ["b.txt", "src.c"], "ood_wild": ["a.txt", "b.txt"], "ood_top": ["src.c"],
                     "ood_file": ["src.c"]}
    with pytest.raises(DataError, match=r"no file under .* matches '\*\*/\*.py'"):  # a folder: data.task.glob
        text(train_dir, ood_paths={"folder": str(other)})


def test_stdlib_corpora_never_share_a_file_with_training(corpora):
    train_dir, other = corpora
    with pytest.raises(DataError, match=r"data.task.ood_paths.code: \d+ of its files belong to the training corpus"):
        text(train_dir, ood_paths={"code": {"path": str(train_dir), "glob": "pkg1/*.py"}})
    task = Text(ood_paths={"license": {"glob": "LICENSE.txt"}})  # path null: the standard library
    assert [f.parent for f, _, _ in task.corpora["ood_license"].files] == [default_corpus()]


@pytest.mark.parametrize(("spec", "message"), [
    ({"path": "/no/such/folder", "glob": "*.txt"}, r"^data.task.ood_paths.gone: /no/such/folder does not exist; "
     r"point it elsewhere with data.task.ood_paths.gone.path=<folder> .*~data.task.ood_paths.gone$"),
    ({"glob": "test/no_such_dir/*.decTest"}, r"^data.task.ood_paths.gone: no file under .* matches "
     r"'test/no_such_dir/\*.decTest' \(some Python distributions leave out .*test/ folder\); point it elsewhere"),
])
def test_a_missing_corpus_is_a_one_line_data_error(spec, message):
    with pytest.raises(DataError, match=message) as error:
        Text(ood_paths={"gone": spec})
    assert "\n" not in str(error.value)


def test_bad_specs_are_config_errors(corpora):
    train_dir, other = corpora
    with pytest.raises(ConfigError, match=r"data.task.ood_paths.x.pattern is not an option .* valid keys: path, glob"):
        text(train_dir, ood_paths={"x": {"path": str(other), "pattern": "*.txt"}})
    with pytest.raises(ConfigError, match="letters, digits and _ only"):
        text(train_dir, ood_paths={"a/b": str(other)})
    with pytest.raises(ConfigError, match="data.task.ood_paths must be a mapping"):
        text(train_dir, ood_paths=[str(other)])


def test_the_experiment_fails_in_one_line_when_a_corpus_is_missing(tmp_path):
    result = run_cli("train.py", "experiment=thinking_text", "data.task.ood_paths.dectest.path=/no/such/place",
                     f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.task.ood_paths.dectest: /no/such/place does not exist"), last
    assert "Traceback" not in result.stderr


def test_named_splits_are_evaluated_and_logged_in_training(corpora, tmp_path):
    train_dir, other = corpora
    metrics = train(compose_config([
        "data=text", f"data.task.path={train_dir}", "data.task.seq_len=16", "+data.task.val_every=3",
        f"+data.task.ood_paths.prose={other}/**/*.txt", f"+data.task.ood_paths.c={other}/src.c",
        "debug=fdr", "model/objective=predict", "model.dim=32", "data.batch_size=4", "data.eval_batches=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"], tmp_path / "run"))
    assert {"val/bpb", "ood_prose/bpb", "ood_c/bpb"} <= set(metrics)


# ------------------------------------------------------------------------------------------------------ ood_curve
def thinking_rows() -> list[dict]:
    """A hand-made thinking.csv: trained at 2 steps; on val best-of-1 at 4 steps is best (4.0 -> 3.9), on far
    best-of-4 at 4 steps (6.0 -> 5.4) but the val choice reads 5.7 there."""
    rows = []
    for split, values in {"val": {1: 4.2, 2: 4.0, 4: 3.9}, "far": {1: 6.3, 2: 6.0, 4: 5.7}}.items():
        for steps, bpb in values.items():
            rows.append({"split": split, "mode": "fixed", "best_of": 1, "steps": steps, "steps_used": steps,
                         "forward_passes": steps, "bpb": bpb, "loss": bpb * math.log(2), "energy": -1.0})
        rows.append({"split": split, "mode": "fixed", "best_of": 4, "steps": 4, "steps_used": 4,
                     "forward_passes": 20, "bpb": values[4] - (0.3 if split == "far" else -0.1), "loss": 0.0,
                     "energy": -2.0})
    rows += [{"split": "val", "mode": "predictor", "best_of": 1, "steps": 0, "steps_used": 0, "forward_passes": 1,
              "bpb": 3.0, "loss": 0.0, "energy": ""},
             {"split": "far", "mode": "predictor", "best_of": 1, "steps": 0, "steps_used": 0, "forward_passes": 1,
              "bpb": 4.5, "loss": 0.0, "energy": ""}]
    return rows


def test_ood_curve_improvement_and_gap(tmp_path):
    path = tmp_path / "thinking.csv"
    write_csv(thinking_rows(), path)
    points = {p["split"]: p for p in curve_points(read_rows(path, "bpb"), "bpb", "min", 2)}
    assert points["val"]["improvement_pct"] == pytest.approx(100 * 0.1 / 4.0) and points["val"]["in_sample"]
    # the setting is chosen on val (best-of-1, 4 steps) and read on far: 6.0 -> 5.7, not far's own best (5.4, +10 %)
    assert points["far"]["improvement_pct"] == pytest.approx(100 * 0.3 / 6.0) and not points["far"]["in_sample"]
    assert points["far"]["selected_setting"] == "best-of-1, 4 steps" and points["far"]["selected"] == 5.7
    assert points["far"]["longer_pct"] == pytest.approx(5.0)  # the same choice among settings >= the trained 2
    assert points["val"]["longer_pct"] == pytest.approx(100 * 0.1 / 4.0)  # 4 steps, best-of-1: 3.9
    assert points["far"]["longest_pct"] == pytest.approx(100 * 0.3 / 6.0)  # 4 steps best-of-1 (5.7) vs 6.0
    assert points["far"]["steps2x_pct"] == pytest.approx(5.0) and math.isnan(points["far"]["steps4x_pct"])
    assert (points["val"]["gap"], points["far"]["gap"]) == (0.0, pytest.approx(1.5))  # predictor 4.5 - 3.0
    assert points["far"]["gap_from"] == "predictor"
    ebt_only = [r for r in read_rows(path, "bpb") if r["mode"] != "predictor"]
    assert curve_points(ebt_only, "bpb", "min", 2)[1]["gap"] == pytest.approx(2.0)  # the EBT's own 6.0 - 4.0
    # two runs: mean and spread; files written
    write_csv(thinking_rows()[:4] + [{**r, "bpb": r["bpb"] + 0.1} for r in thinking_rows()[4:]],
              tmp_path / "b.csv")
    summary = {r["split"]: r for r in ood_curve([path, tmp_path / "b.csv"], tmp_path / "out", train_steps=2)}
    assert summary["far"]["runs"] == 2 and summary["far"]["gap"] == pytest.approx(1.5)
    assert summary["far"]["improvement_pct"] == pytest.approx((5.0 + 100 * 0.3 / 6.1) / 2)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"ood_curve.csv", "ood_curve_runs.csv", "ood_curve.md",
                                                              "ood_curve.png"}
    table = (tmp_path / "out" / "ood_curve.md").read_text()
    val_line = next(line for line in table.splitlines() if line.startswith("| val |"))
    far_line = next(line for line in table.splitlines() if line.startswith("| far |"))
    assert "(in-sample)" in val_line and "(in-sample)" not in far_line
    assert "setting chosen on val" in table and "4 steps (2x), best-of-1" in table


def test_ood_curve_refuses_a_bad_csv(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the command's one error line, not a traceback
    bad = tmp_path / "bad.csv"
    write_csv([{"split": "val", "steps": 2, "acc": 0.5}], bad)
    with pytest.raises(ConfigError, match=r"lacks the column\(s\) mode, best_of, bpb"):
        read_rows(bad, "bpb")
    with pytest.raises(SystemExit) as exited:
        options_command("ebt.analysis.thinking.ood_curve", [f"csvs={bad}", "train_steps=2"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "lacks the column(s)" in err[0]
    good = tmp_path / "good.csv"
    write_csv(thinking_rows(), good)
    with pytest.raises(ConfigError, match="no fixed best-of-1 row at the trained 3 steps"):
        ood_curve([good], tmp_path, train_steps=3)
    with pytest.raises(ConfigError, match="pass train_steps="):
        ood_curve([good], tmp_path)  # not inside a run folder: the trained steps are unknown
