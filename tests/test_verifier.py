"""ebt.analysis.thinking.verifier: rank statistics, per-sample energy / error / correctness, the trajectory sentence."""

import math
from types import SimpleNamespace

import pytest
import torch

from ebt.analysis.thinking.thinking_eval import trajectory_summary
from ebt.analysis.thinking.verifier import (
    VerifierStats,
    auroc,
    rankdata,
    right_rule,
    sample_correct,
    sample_energy,
    sample_error,
    spearman,
)
from ebt.tasks.base import IGNORE_INDEX

T = torch.tensor


def test_ranks_share_the_average_rank_of_ties():
    assert rankdata(T([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert rankdata(T([3.0, 3.0, 3.0])).tolist() == [2.0, 2.0, 2.0]


def test_auroc_hand_cases():
    wrong = T([False, False, True, True])
    assert auroc(T([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0  # wrong samples have the higher energies
    assert auroc(T([0.8, 0.9, 0.1, 0.2]), wrong) == 0.0  # reversed
    assert auroc(T([0.5, 0.5, 0.5, 0.5]), wrong) == 0.5  # all tied
    # pairs (wrong, right): (2, 1) 1, (2, 2) 1/2, (3, 1) 1, (3, 2) 1 -> 3.5 / 4
    assert auroc(T([1.0, 2.0, 2.0, 3.0]), T([False, True, False, True])) == pytest.approx(0.875)
    assert math.isnan(auroc(T([1.0, 2.0]), T([True, True])))
    assert math.isnan(auroc(T([1.0, 2.0]), T([False, False])))


def test_spearman_hand_cases():
    x = T([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x.exp()) == pytest.approx(1.0)  # any monotone relation
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert spearman(x, T([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    assert math.isnan(spearman(x, torch.ones(5))) and math.isnan(spearman(T([1.0]), T([2.0])))


def test_spearman_and_auroc_agree_with_scipy_on_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 5, (200,), generator=g).float(), torch.randint(0, 7, (200,), generator=g).float()
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x.numpy(), y.numpy())[0], abs=1e-12)
    positive = y > 3
    u = stats.mannwhitneyu(x[positive].numpy(), x[~positive].numpy()).statistic
    assert auroc(x, positive) == pytest.approx(u / (int(positive.sum()) * int((~positive).sum())), abs=1e-12)


def test_per_position_energy_is_the_mean_over_scored_positions():
    energy = T([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [1.0, 1.0, 1.0, 5.0]])
    targets = T([[IGNORE_INDEX, 1, 2, IGNORE_INDEX], [3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
                 [IGNORE_INDEX] * 4])
    tokens = SimpleNamespace(kind="tokens")
    # row 3 scores nothing: the mean over all its positions
    assert sample_energy(energy, tokens, {"targets": targets}).tolist() == [2.5, 5.0, 2.0]
    mask = targets != IGNORE_INDEX
    continuous = SimpleNamespace(kind="continuous")
    assert sample_energy(energy, continuous, {"targets": energy[..., None], "target_mask": mask}).tolist() == \
        [2.5, 5.0, 2.0]
    assert sample_energy(energy, continuous, {"targets": energy[..., None]}).tolist() == [2.5, 6.5, 2.0]
    per_sample = T([0.5, -1.0])
    assert sample_energy(per_sample, tokens, {"targets": targets[:2]}).tolist() == [0.5, -1.0]


def test_default_errors_and_correctness_per_task_kind():
    tokens = SimpleNamespace(kind="tokens")
    targets = T([[IGNORE_INDEX, 1, 0], [0, IGNORE_INDEX, 1]])
    logits = torch.zeros(2, 3, 2)
    logits[0, 1, 1] = logits[0, 2, 0] = 5.0  # row 0: both scored tokens right
    logits[1, 0, 0] = logits[1, 2, 0] = 5.0  # row 1: the last scored token wrong
    batch = {"targets": targets}
    assert sample_correct(tokens, logits, batch).tolist() == [True, False]
    ce = torch.nn.functional.cross_entropy(T([[0.0, 5.0], [5.0, 0.0]]), T([1, 1]), reduction="none")
    torch.testing.assert_close(sample_error(tokens, logits, batch), T([ce[0], (ce[0] + ce[1]) / 2]))
    classes = SimpleNamespace(kind="classes")
    assert sample_correct(classes, T([[2.0, 1.0], [0.0, 1.0]]), {"targets": T([0, 0])}).tolist() == [True, False]
    continuous = SimpleNamespace(kind="continuous")
    prediction, target = T([[[1.0], [3.0]], [[0.0], [0.0]]]), torch.zeros(2, 2, 1)
    assert sample_error(continuous, prediction, {"targets": target}).tolist() == [5.0, 0.0]
    masked = {"targets": target, "target_mask": T([[True, False], [True, True]])}
    assert sample_error(continuous, prediction, masked).tolist() == [1.0, 0.0]
    assert sample_correct(continuous, prediction, masked) is None
    assert right_rule(continuous) == "right = below-median error"


def test_a_task_s_own_error_and_correctness_are_used():
    task = SimpleNamespace(kind="continuous", sample_error=lambda p, b: p.sum(dim=(1, 2)),
                           sample_correct=lambda p, b: p.sum(dim=(1, 2)) < 1)
    prediction = T([[[0.5]], [[2.0]], [[3.0]]])
    assert sample_error(task, prediction, {}).tolist() == [0.5, 2.0, 3.0]
    assert sample_correct(task, prediction, {}).tolist() == [True, False, False]
    assert right_rule(task) == "right = SimpleNamespace.sample_correct"


def test_continuous_right_is_below_the_median_error_of_the_whole_setting():
    stats = VerifierStats(SimpleNamespace(kind="continuous"))
    target = torch.zeros(2, 1, 1)
    stats.add(T([1.0, 4.0]), T([[[1.0]], [[4.0]]]), {"targets": target})  # errors 1, 16
    stats.add(T([2.0, 3.0]), T([[[2.0]], [[3.0]]]), {"targets": target})  # errors 4, 9
    out = stats.summary()
    assert out["samples"] == 4 and out["right"] == 0.5  # below the median 6.5: errors 1 and 4
    assert out["energy_auroc"] == 1.0 and out["energy_error_rho"] == pytest.approx(1.0)
    assert out["energy_scored"] == 2.5 and out["right_rule"] == "right = below-median error"
    assert out["verifier_note"] == ""


def test_undefined_statistics_come_with_a_note():
    stats = VerifierStats(SimpleNamespace(kind="classes"))
    stats.add(T([1.0, 1.0, 1.0]), T([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]), {"targets": T([0, 0, 0])})
    out = stats.summary()
    assert out["right"] == 1.0 and math.isnan(out["energy_auroc"]) and math.isnan(out["energy_error_rho"])
    assert out["verifier_note"] == "all right: AUROC undefined; energies all equal: rho undefined"


def _rows(split: str, steps: list[int], metric: list[float], energy: list[float], best_of: int = 1):
    return [{"split": split, "mode": "fixed", "best_of": best_of, "steps": s, "acc": m, "energy": 0.0,
             "energy_scored": e} for s, m, e in zip(steps, metric, energy, strict=True)]


def test_trajectory_sentences_follow_the_numbers():
    rows = (_rows("val", [1, 2, 4, 16], [0.5, 0.9, 0.8, 0.6], [1.0, 0.8, 0.7, 0.58])
            + _rows("ood", [1, 2, 4], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
            + _rows("train", [1, 4], [0.1, 0.3], [1.0, 0.5]) + _rows("train", [1], [0.0], [0.0], best_of=4)
            + _rows("test", [1, 4], [0.4, 0.4], [1.0, 1.5]))
    out = trajectory_summary(rows, "acc", "max", train_steps=2)
    assert out["val"] == ("val: energy falls 1->16 steps (-0.42) while acc worsens after 2 steps (0.9 -> 0.6 at 16) "
                          "(over-optimised landscape: lower energy, worse answers past the trained step count)")
    assert out["ood"].startswith("ood: energy flat 1->4 steps") and "acc improves (0.1 -> 0.3)" in out["ood"]
    assert "step size problem?" in out["ood"]
    assert out["train"] == ("train: energy falls 1->4 steps (-0.5), acc improves (0.1 -> 0.3) "
                            "(lower energy, better answers)")
    assert out["test"].startswith("test: energy rises 1->4 steps (+0.5), acc unchanged (0.4 -> 0.4)")
    loss = trajectory_summary(_rows("val", [1, 2], [0.5, 0.7], [1.0, 0.5]), "acc", "min", train_steps=2)
    assert "acc worsens after 1 step (0.5 -> 0.7 at 2)" in loss["val"] and "past 1 steps" in loss["val"]
