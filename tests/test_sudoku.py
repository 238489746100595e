"""Sudoku 9x9: unique puzzles, difficulty splits, transforms, determinism, the cache, metrics, group embeddings."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ebt.errors import ConfigError
from ebt.objectives.base import GroupedEncoder, input_encoder
from ebt.tasks import sudoku as sudoku_module
from ebt.tasks.addition import Addition
from ebt.tasks.base import IGNORE_INDEX
from ebt.tasks.metrics import MetricSums
from ebt.tasks.sudoku import (
    GENERATOR_VERSION,
    Sudoku,
    apply_transforms,
    build_base_puzzles,
    load_or_build_cache,
    random_transforms,
)
from ebt.tasks.sudoku_solver import BOX, COL, ROW, count_solutions, is_valid_solution, solve
from ebt.training.build import build_task
from ebt.training.train import train
from tests.utils import compose_config

SIZE = 24  # a tiny cache: train 17, val 2, test 1, ood 4 base puzzles
SPLITS = ("train", "val", "test", "ood")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sudoku-cache")


@pytest.fixture(scope="module")
def task(cache_dir):
    return Sudoku(cache_dir=str(cache_dir), cache_size=SIZE)


def cache_file(folder, size=SIZE, seed=0):
    return folder / f"sudoku_v{GENERATOR_VERSION}_seed{seed}_n{size}.npz"


def full_boards(batch):
    x, y = batch["input_ids"].numpy(), batch["targets"].numpy()
    return np.where(x > 0, x, y)


@pytest.mark.parametrize("split", SPLITS)
def test_puzzles_are_valid_unique_and_agree_with_their_solutions(task, split):
    batch = task.make_batch(split, 3, 32)
    x, y = batch["input_ids"], batch["targets"]
    assert x.shape == y.shape == (32, 81) and x.dtype == y.dtype == torch.int64
    assert ((x == 0) == (y != IGNORE_INDEX)).all(), "targets are scored exactly at the blanks"
    assert x.min() >= 0 and x.max() <= 9 and y[y != IGNORE_INDEX].min() >= 1
    assert is_valid_solution(full_boards(batch)).all()
    for board, solution in zip(x[:6].tolist(), full_boards(batch)[:6], strict=True):
        assert count_solutions(board, 2) == 1
        np.testing.assert_array_equal(solve(board), solution)


def test_base_puzzles_are_minimal_and_unique(task):
    for puzzle, solution in zip(task.puzzles[:3], task.solutions[:3], strict=True):
        assert count_solutions(puzzle.tolist(), 2) == 1
        np.testing.assert_array_equal(solve(puzzle.tolist()), solution)
        for cell in np.flatnonzero(puzzle)[:5]:  # minimal: removing any given breaks uniqueness
            fewer = puzzle.tolist()
            fewer[cell] = 0
            assert count_solutions(fewer, 2) == 2
    counts = (task.puzzles > 0).sum(axis=1)
    assert counts.min() >= 17 and counts.max() <= 30


@pytest.mark.parametrize("split", SPLITS)
def test_givens_follow_the_split_ranges(task, split):
    lo, hi = task.givens_range(split)
    givens = (task.make_batch(split, 0, 256)["input_ids"] > 0).sum(-1)
    assert givens.min() >= lo and givens.max() <= max(hi, int(task.pool_counts[split][0]))
    if split != "ood":
        assert givens.min() == lo and givens.max() == hi  # 256 draws of 12 values: every value (whp) at the ends
    assert (lo, hi) == ((23, 27) if split == "ood" else (34, 45))


def test_exact_givens_and_sparse_requests(cache_dir, capsys):
    task = Sudoku(cache_dir=str(cache_dir), cache_size=SIZE, givens=(60, 60), ood_givens=(17, 17))
    assert ((task.make_batch("train", 0, 16)["input_ids"] > 0).sum(-1) == 60).all()
    ood = (task.make_batch("ood", 0, 16)["input_ids"] > 0).sum(-1)
    assert (ood == int(task.pool_counts["ood"][0])).all(), "no base has 17 givens: the sparsest ones are used as is"
    err = capsys.readouterr().err
    assert "ood_givens starts at 17" in err and len(err.strip().splitlines()) == 1


def test_transforms_preserve_validity_and_uniqueness(task):
    rng = np.random.default_rng(0)
    n = 8
    positions, digits = random_transforms(rng, n)
    assert (np.sort(positions, axis=1) == np.arange(81)).all() and (digits[:, 0] == 0).all()
    puzzles, solutions = task.puzzles[:n], task.solutions[:n]
    new_puzzles, new_solutions = apply_transforms(puzzles, positions, digits), apply_transforms(solutions, positions,
                                                                                                digits)
    assert is_valid_solution(new_solutions).all()
    assert not (new_solutions == solutions).all(axis=1).any()
    np.testing.assert_array_equal((new_puzzles > 0).sum(1), (puzzles > 0).sum(1))
    for puzzle, solution in zip(new_puzzles[:3].tolist(), new_solutions[:3], strict=True):
        assert count_solutions(puzzle, 2) == 1
        np.testing.assert_array_equal(solve(puzzle), solution)
    transposed = rng.random(1000) < 0.5  # every transform kind is used: transposes in about half the samples
    assert 400 < transposed.sum() < 600


def test_batches_are_deterministic_per_seed_split_and_index(cache_dir, task):
    again = Sudoku(cache_dir=str(cache_dir), cache_size=SIZE)
    other_seed = Sudoku(cache_dir=str(cache_dir), cache_size=SIZE, seed=1)
    np.testing.assert_array_equal(other_seed.puzzles, task.puzzles)  # the cache depends on cache_seed only
    for split in SPLITS:
        a, b = task.make_batch(split, 5, 8), again.make_batch(split, 5, 8)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["input_ids"], task.make_batch(split, 6, 8)["input_ids"])
        assert not torch.equal(a["input_ids"], other_seed.make_batch(split, 5, 8)["input_ids"])
    assert not torch.equal(task.make_batch("val", 0, 8)["input_ids"], task.make_batch("test", 0, 8)["input_ids"])


def test_split_pools_are_disjoint_and_batches_use_their_own(task, monkeypatch):
    pools = [set(task.pools[s].tolist()) for s in SPLITS]
    assert sum(map(len, pools)) == SIZE and set().union(*pools) == set(range(SIZE))
    assert all(not (a & b) for i, a in enumerate(pools) for b in pools[i + 1:])

    def identity(rng, n):
        positions, digits = random_transforms(rng, n)  # same draws, no effect
        return np.tile(np.arange(81), (n, 1)), np.tile(np.arange(10), (n, 1))

    monkeypatch.setattr(sudoku_module, "random_transforms", identity)
    bases = {tuple(s) for s in task.solutions.tolist()}
    for split, pool in zip(SPLITS, pools, strict=True):
        own = {tuple(task.solutions[i].tolist()) for i in pool}
        used = {tuple(s) for s in full_boards(task.make_batch(split, 0, 64)).tolist()}
        assert used <= bases and used <= own, f"{split} samples a base outside its pool"


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "tampered", "other_size"])
def test_bad_cache_files_are_rebuilt_with_one_warning(cache_dir, task, tmp_path, damage, capsys):
    size = SIZE - 4 if damage == "other_size" else SIZE  # other_size: the SIZE file under the name of SIZE - 4
    target = cache_file(tmp_path, size)
    if damage != "missing":
        shutil.copy(cache_file(cache_dir), target)
    if damage == "garbage":
        target.write_bytes(b"\x00not a zip file\xff" * 10)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "tampered":  # valid npz, a given changed, checksum recomputed: the consistency check finds it
        with np.load(target) as npz:
            data = dict(npz)
        cell = int(np.flatnonzero(data["puzzles"][0])[0])
        data["puzzles"][0, cell] = data["puzzles"][0, cell] % 9 + 1
        data["checksum"] = sudoku_module._checksum(data["puzzles"], data["solutions"])
        np.savez(target, **data)
    capsys.readouterr()
    puzzles, solutions = load_or_build_cache(tmp_path, size, 0)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and ("does not exist" if damage == "missing" else "is invalid") in warnings[0]
    np.testing.assert_array_equal(puzzles, task.puzzles[:size])  # puzzle i depends on (cache_seed, i) only
    np.testing.assert_array_equal(solutions, task.solutions[:size])
    assert not list(tmp_path.glob("*.tmp")), "the temporary file was renamed into place"
    load_or_build_cache(tmp_path, size, 0)  # now valid: loaded silently
    assert "warning" not in capsys.readouterr().err


def test_cache_is_deterministic_in_its_seed_and_named_by_size():
    a, b = build_base_puzzles(3, 7, progress=False), build_base_puzzles(3, 7, progress=False)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], build_base_puzzles(3, 8, progress=False)[0])
    np.testing.assert_array_equal(build_base_puzzles(2, 7, progress=False)[0], a[0][:2])  # puzzle i is fixed
    assert cache_file(sudoku_module.Path("x"), 24).name != cache_file(sudoku_module.Path("x"), 2048).name


@pytest.mark.parametrize(("options", "message"), [
    ({"givens": (16, 30)}, "data.task.givens"),
    ({"givens": (40, 30)}, "data.task.givens"),
    ({"givens": (30, 81)}, "data.task.givens"),
    ({"ood_givens": (10, 20)}, "data.task.ood_givens"),
    ({"cache_size": 5}, "data.task.cache_size"),
])
def test_impossible_settings_are_one_line_config_errors(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message) as info:
        Sudoku(cache_dir=str(tmp_path), **options)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir()), "refused before building a cache"


def test_givens_must_be_two_integers(tmp_path):
    cfg = compose_config(["data=sudoku", "data.task.givens=[34]"], tmp_path)
    with pytest.raises(ConfigError, match="data.task.givens"):
        build_task(cfg)


def test_metrics_on_hand_made_predictions(task):
    batch = task.make_batch("val", 0, 4)
    solution = torch.from_numpy(full_boards(batch))
    perfect = F.one_hot(solution, 10).float() * 5
    m = task.metrics(perfect, batch)
    assert m["solved"] == 1 and m["cell_acc"] == 1 and m["violations"] == 0
    assert task.sample_correct(perfect, batch).all() and (task.sample_error(perfect, batch) == 0).all()

    blanks = (batch["targets"] != IGNORE_INDEX).sum(-1)
    cell = int(torch.nonzero(batch["input_ids"][0] == 0)[0])
    for wrong_digit in (solution[0, cell].item() % 9 + 1, 0):  # another digit, or "blank" (no digit at all)
        logits = perfect.clone()
        logits[0, cell] = F.one_hot(torch.tensor(wrong_digit), 10).float() * 5
        m = task.metrics(logits, batch)
        assert m["solved"] == 0.75
        assert m["cell_acc"] == pytest.approx(1 - 1 / blanks.sum().item())
        assert m["violations"] == pytest.approx(3 / 4)  # the cell's row, column and box each lose a digit
        torch.testing.assert_close(task.violations(logits, batch), torch.tensor([3.0, 0, 0, 0]))
        assert task.sample_correct(logits, batch).tolist() == [False, True, True, True]
        torch.testing.assert_close(task.sample_error(logits, batch), torch.tensor([1 / blanks[0].item(), 0, 0, 0]))
    givens_wrong = perfect.clone()  # predictions at givens are not scored: the board is the givens there
    givens_wrong[batch["input_ids"] > 0] = F.one_hot(torch.tensor(0), 10).float() * 5
    assert task.metrics(givens_wrong, batch)["violations"] == 0


def test_a_split_s_cell_accuracy_is_right_blanks_over_blanks(task):
    """Ratio metrics are totals over the split: accumulated over batches, cell_acc = right blanks / blanks and
    solved = solved boards / boards, whatever the batches' numbers of blanks."""
    sums, right, blanks, solved, boards, batch_cell_acc = MetricSums(), 0, 0, 0, 0, []
    for i in range(4):
        batch = task.make_batch("val", i, 3)
        generator = torch.Generator().manual_seed(i)
        logits = torch.randn(*batch["targets"].shape, 10, generator=generator)
        known = torch.rand(3, 81, 1, generator=generator) < 0.5  # about half the cells pushed to the right digit
        logits += 4 * F.one_hot(torch.from_numpy(full_boards(batch)), 10) * known
        _, blank, hit = task._boards(logits, batch)
        right, blanks = right + int(hit.sum()), blanks + int(blank.sum())
        solved, boards = solved + int((hit | ~blank).all(-1).sum()), boards + 3
        sums.add(task.metric_sums(logits, batch))
        batch_cell_acc.append(float(task.metrics(logits, batch)["cell_acc"]))
    totals = sums.compute()
    assert totals["cell_acc"] == pytest.approx(right / blanks) and totals["solved"] == pytest.approx(solved / boards)
    assert sum(batch_cell_acc) / 4 != pytest.approx(right / blanks)  # the batches differ in blanks


def test_input_encoder_adds_row_column_and_box_embeddings(task):
    torch.manual_seed(0)
    encoder = input_encoder(task, 16)
    assert isinstance(encoder, GroupedEncoder) and encoder.weight is encoder.base.weight
    assert encoder.weight.shape == (10, 16) and encoder.groups.weight.shape == (27, 16)
    assert set(encoder.state_dict()) == {"base.weight", "groups.weight"}
    x = task.make_batch("train", 0, 2)["input_ids"]
    cells = torch.arange(81)
    rows, cols, boxes = (torch.tensor(t)[cells] for t in (ROW, COL, BOX))
    expected = encoder.weight[x] + encoder.groups.weight[rows] + encoder.groups.weight[9 + cols] \
        + encoder.groups.weight[18 + boxes]
    torch.testing.assert_close(encoder(x), expected)
    perm = torch.randperm(81)
    assert not torch.allclose(encoder(x[:, perm]), encoder(x)[:, perm]), "the embedding depends on the position"
    assert 0.01 < encoder.groups.weight.std() < 0.03


def test_tasks_without_position_groups_keep_the_plain_encoder():
    encoder = input_encoder(Addition(), 16)
    assert type(encoder) is nn.Embedding and set(encoder.state_dict()) == {"weight"}


@pytest.mark.parametrize("objective", [["model/objective=predict", "model.objective.tie_embeddings=true"],
                                       ["model/objective=ebt", "model.objective.tie_candidate_projection=true"],
                                       ["model/objective=ebt"]])
def test_objectives_train_on_sudoku(cache_dir, task, tmp_path, objective):
    cfg = compose_config(["data=sudoku", f"data.task.cache_dir={cache_dir}", f"data.task.cache_size={SIZE}",
                          *objective, "debug=fdr", "model.dim=32", "kernels=torch", "data.batch_size=8",
                          "data.eval_batch_size=8", "data.eval_batches=1", "trainer.enable_progress_bar=false",
                          "trainer.enable_model_summary=false"], tmp_path)
    metrics = train(cfg)
    for key in ("val/solved", "val/cell_acc", "val/violations", "ood/solved"):
        assert key in metrics and np.isfinite(metrics[key]), key
