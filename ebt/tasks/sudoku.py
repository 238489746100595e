"""Sudoku 9x9 as a bidirectional whole-board token task (after IRED: Du, Mao, Tenenbaum, "Learning Iterative Reasoning
through Energy Diffusion", ICML 2024, whose harder Sudoku test set has fewer givens than its training set).

A sample is a board of 81 tokens in row-major order, ``0`` for a blank and ``1..9`` for a given digit. ``targets``
hold the solution digit at every blank and ``IGNORE_INDEX`` at the givens, so a model predicts all blanks at once
(``causal = False``; under the EBT objective this is the whole-target mode). Every puzzle has exactly one solution.
The task declares ``position_groups`` (row 0..8, column 9..17, box 18..26 of each cell), so the input encoder adds
learned row, column and box embeddings to each token (:func:`ebt.objectives.base.input_encoder`).

Construction:

* **Base puzzles** (a cache built once, deterministic in ``cache_seed`` only, independent of ``seed``): puzzle ``i``
  comes from ``numpy.random.default_rng([cache_seed, i])``: a random full grid, then every cell in a random order is
  blanked unless that breaks uniqueness (exact solver, :mod:`ebt.tasks.sudoku_solver`). The result is a *minimal*
  unique puzzle with 21-28 givens (the default 2048: 21: 0.2%, 22: 3%, 23: 16%, 24: 35%, 25: 31%, 26: 13%,
  27: 2%, 28: 0.5%).
* **Disjoint pools** by index range of the cache: train 70%, val 10%, test 5%, ood 15% (so val / test / ood base
  puzzles are never seen in training; the pools are recomputed from ``cache_size``).
* **Difficulty** (the number of givens ``k``): ``train``, ``val`` and ``test`` draw ``k`` uniformly from ``givens``
  (default 34..45), ``ood`` from ``ood_givens`` (default 23..27: fewer givens, harder, as in IRED). A base puzzle
  with at most ``k`` givens is drawn uniformly from the split's pool and ``k`` minus its count solution cells are
  revealed at random (more givens keep a unique puzzle unique). Only when the pool has no base with ``<= k`` givens
  is one of its sparsest bases used as it is (with more than ``k`` givens).
* **Validity-preserving transforms**, drawn per sample: digit relabelling, row permutations inside each band,
  column permutations inside each stack, band and stack permutations, and a transpose (3.4e11 x 9! boards per base).

Deviation from IRED: IRED trains and tests in distribution on the SAT-Net dataset (Wang et al., 2019) and tests
out of distribution on the harder RRN dataset (Palm et al., 2018: 17-34 givens); here every puzzle is generated
offline, so the OOD split is limited to what the generator reaches reliably: 23..27 by default (about 20% of the
base puzzles have <= 23 givens, 3% have 22 and 0.2% have 21, so lower counts would rest on a handful of bases).

The cache is an ``.npz`` file ``sudoku_v{version}_seed{cache_seed}_n{cache_size}.npz`` under ``cache_dir`` (``uint8``
``puzzles`` and ``solutions`` (n, 81), the version, seed, size and a SHA-256 of both arrays), written atomically (a
temporary file, then ``os.replace``). Loading checks the metadata, shapes, digits, checksum, that every solution is a
valid grid consistent with its puzzle, and re-solves a few puzzles; a missing, corrupt or mismatching file is rebuilt
with a one-line warning.

Metrics: ``solved`` (headline: the fraction of boards whose every blank is right), ``cell_acc`` (accuracy over
blanks) and ``violations`` (mean over boards of the constraint violations of the completed board, givens plus argmax
predictions at the blanks: the sum over the 27 rows, columns and boxes of ``9 - distinct digits``; a predicted ``0``
is no digit, so it counts as a missing one).
"""

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ebt.errors import ConfigError
from ebt.tasks.base import IGNORE_INDEX, Task
from ebt.tasks.metrics import Sums, masked_sums, mean_sums
from ebt.tasks.sudoku_solver import BOX, COL, ROW, UNITS, count_solutions, generate_unique_puzzle, is_valid_solution

GENERATOR_VERSION = 1  # bump when the generator changes: the cache file name changes with it
MIN_GIVENS, MAX_GIVENS = 17, 80  # 17: the fewest givens of any unique 9x9 sudoku; 80: at least one blank
POOL_FRACTIONS = {"val": 0.10, "test": 0.05, "ood": 0.15}  # train: the rest
MIN_CACHE_SIZE = 20
RECHECK = 3  # puzzles re-solved (uniqueness) when a cache is loaded
POSITION_GROUPS = torch.tensor([[ROW[i], 9 + COL[i], 18 + BOX[i]] for i in range(81)], dtype=torch.int64)  # (81, 3)


def default_cache_dir() -> str:
    """``$EBT_DATA_CACHE``, else ``~/.cache/ebt-alt-arch`` (the yaml's default too)."""
    return os.environ.get("EBT_DATA_CACHE") or str(Path.home() / ".cache" / "ebt-alt-arch")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _checksum(puzzles: np.ndarray, solutions: np.ndarray) -> str:
    return hashlib.sha256(puzzles.tobytes() + solutions.tobytes()).hexdigest()


def build_base_puzzles(size: int, cache_seed: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(puzzles, solutions), both (size, 81) uint8: puzzle ``i`` drawn from ``default_rng([cache_seed, i])``."""
    from tqdm.auto import tqdm

    puzzles = np.zeros((size, 81), dtype=np.uint8)
    solutions = np.zeros((size, 81), dtype=np.uint8)
    for i in tqdm(range(size), desc="sudoku base puzzles", disable=not progress, mininterval=1.0, leave=False):
        puzzles[i], solutions[i] = generate_unique_puzzle(np.random.default_rng([cache_seed, i]))
    return puzzles, solutions


def check_cache(data, size: int, cache_seed: int) -> str | None:
    """Why a loaded cache (a mapping of arrays) is unusable, or ``None`` when it is valid."""
    expected = {"version": GENERATOR_VERSION, "cache_seed": cache_seed, "size": size}
    for key, value in expected.items():
        if int(data[key]) != value:
            return f"{key} is {int(data[key])}, expected {value}"
    puzzles, solutions = data["puzzles"], data["solutions"]
    for name, array in (("puzzles", puzzles), ("solutions", solutions)):
        if array.shape != (size, 81) or array.dtype != np.uint8:
            return f"{name} is {array.dtype} {array.shape}, expected uint8 {(size, 81)}"
    if str(data["checksum"]) != _checksum(puzzles, solutions):
        return "checksum mismatch"
    if puzzles.max() > 9 or solutions.min() < 1 or solutions.max() > 9:
        return "digits out of range"
    if not ((puzzles == 0) | (puzzles == solutions)).all():
        return "a puzzle disagrees with its solution"
    if not is_valid_solution(solutions).all():
        return "a solution breaks the sudoku rules"
    for i in np.linspace(0, size - 1, RECHECK).astype(int):
        if count_solutions(puzzles[i].tolist(), 2) != 1:
            return f"puzzle {i} does not have a unique solution"
    return None


def load_or_build_cache(cache_dir: str | Path, size: int, cache_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The cached base puzzles, (re)built and written atomically when the file is missing, corrupt or mismatching."""
    path = Path(cache_dir).expanduser() / f"sudoku_v{GENERATOR_VERSION}_seed{cache_seed}_n{size}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
            problem = check_cache(data, size, cache_seed)
        except Exception as e:  # noqa: BLE001 - any unreadable file (truncated zip, garbage, missing keys) is rebuilt
            problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
        if problem is None:
            return data["puzzles"], data["solutions"]
        _warn(f"sudoku cache {path} is invalid ({problem}); rebuilding it ({size} puzzles)")
    else:
        _warn(f"sudoku cache {path} does not exist; building it once ({size} puzzles)")
    start = time.perf_counter()
    puzzles, solutions = build_base_puzzles(size, cache_seed)
    seconds = time.perf_counter() - start
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            np.savez(f, puzzles=puzzles, solutions=solutions, version=GENERATOR_VERSION, cache_seed=cache_seed,
                     size=size, checksum=_checksum(puzzles, solutions))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        print(f"sudoku cache: built {size} puzzles in {seconds:.0f}s, wrote {path}", file=sys.stderr, flush=True)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _warn(f"could not write the sudoku cache {path} ({e.strerror or e}); using it in memory only")
    return puzzles, solutions


def _givens_range(name: str, value) -> tuple[int, int]:
    lo, hi = (int(v) for v in value)
    if not MIN_GIVENS <= lo <= hi <= MAX_GIVENS:
        raise ConfigError(f"data.task.{name}={[lo, hi]} must be [lo, hi] with {MIN_GIVENS} <= lo <= hi <= "
                          f"{MAX_GIVENS} (a unique sudoku has >= 17 givens and a puzzle needs a blank)")
    return lo, hi


def _band_permutations(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 9) permutations of 0..8 that permute the three bands and the three lines inside each band."""
    bands = rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1)  # (n, 3)
    inner = rng.permuted(np.tile(np.arange(3), (n, 3, 1)), axis=2)  # (n, 3, 3)
    return (3 * bands[:, :, None] + inner).reshape(n, 9)


def random_transforms(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Validity-preserving symmetries of ``n`` boards: (positions (n, 81), digits (n, 10)) such that
    ``digits[b][board[positions[b]]]`` is the transformed board ``b`` (``digits[:, 0] == 0`` keeps blanks)."""
    rows, cols = _band_permutations(rng, n), _band_permutations(rng, n)
    positions = rows[:, :, None] * 9 + cols[:, None, :]  # (n, 9, 9): new (r, c) reads old (rows[r], cols[c])
    transpose = rng.random(n) < 0.5
    positions[transpose] = positions[transpose].transpose(0, 2, 1)
    digits = np.zeros((n, 10), dtype=np.int64)
    digits[:, 1:] = rng.permuted(np.tile(np.arange(1, 10), (n, 1)), axis=1)
    return positions.reshape(n, 81), digits


def apply_transforms(boards: np.ndarray, positions: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """``boards`` (n, 81) with the transforms of :func:`random_transforms` applied."""
    moved = np.take_along_axis(np.asarray(boards, dtype=np.int64), positions, axis=1)
    return np.take_along_axis(digits, moved, axis=1)


class Sudoku(Task):
    kind = "tokens"
    metric = "solved"
    metric_mode = "max"
    causal = False
    vocab_size = 10  # 0 = blank, 1..9 digits
    max_len = 81
    spatial_shape = (9, 9)
    position_groups = POSITION_GROUPS
    num_position_groups = 27

    def __init__(self, *, cache_dir: str | None = None, cache_size: int = 2048, cache_seed: int = 0,
                 givens: tuple[int, int] = (34, 45), ood_givens: tuple[int, int] = (23, 27), seed: int = 0) -> None:
        super().__init__(seed=seed)
        if cache_size < MIN_CACHE_SIZE:
            raise ConfigError(f"data.task.cache_size={cache_size} is too small to split into train / val / test / ood "
                              f"pools; use >= {MIN_CACHE_SIZE}")
        self.givens, self.ood_givens = _givens_range("givens", givens), _givens_range("ood_givens", ood_givens)
        self.cache_size, self.cache_seed = cache_size, cache_seed
        self.puzzles, self.solutions = load_or_build_cache(cache_dir or default_cache_dir(), cache_size, cache_seed)
        counts = (self.puzzles > 0).sum(axis=1)
        sizes = {name: max(1, int(cache_size * fraction)) for name, fraction in POOL_FRACTIONS.items()}
        sizes = {"train": cache_size - sum(sizes.values()), **sizes}
        self.pools: dict[str, np.ndarray] = {}  # split -> base indices, sorted by their number of givens
        self.pool_counts: dict[str, np.ndarray] = {}
        start = 0
        for name, size in sizes.items():
            pool = np.arange(start, start + size)
            order = np.argsort(counts[pool], kind="stable")
            self.pools[name], self.pool_counts[name] = pool[order], counts[pool][order]
            start += size
        for split in ("train", "ood"):
            lo, fewest = self.givens_range(split)[0], int(self.pool_counts[split][0])
            if lo < fewest:
                key = "ood_givens" if split == "ood" else "givens"
                _warn(f"data.task.{key} starts at {lo} givens but the {split} base puzzles have >= {fewest}; "
                      f"those {split} samples keep {fewest}")

    def givens_range(self, split: str) -> tuple[int, int]:
        return self.ood_givens if split == "ood" else self.givens

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rng = self.rng(split, index)
        pool, counts = self.pools[split], self.pool_counts[split]
        lo, hi = self.givens_range(split)
        k = rng.integers(lo, hi + 1, size=batch_size)
        eligible = np.searchsorted(counts, k, side="right")  # bases with <= k givens (the pool is sorted)
        sparsest = np.searchsorted(counts, counts[0], side="right")
        eligible = np.where(eligible > 0, eligible, sparsest)
        base = pool[(rng.random(batch_size) * eligible).astype(np.int64)]
        puzzles = self.puzzles[base].astype(np.int64)
        solutions = self.solutions[base].astype(np.int64)
        keys = np.where(puzzles > 0, -1.0, rng.random((batch_size, 81)))  # givens first, then blanks in random order
        ranks = np.empty((batch_size, 81), dtype=np.int64)
        np.put_along_axis(ranks, np.argsort(keys, axis=1), np.arange(81)[None].repeat(batch_size, 0), axis=1)
        keep = np.maximum(k, (puzzles > 0).sum(axis=1))  # a base with more than k givens keeps them all
        puzzles = np.where(ranks < keep[:, None], solutions, 0)
        positions, digits = random_transforms(rng, batch_size)
        puzzles = apply_transforms(puzzles, positions, digits)
        solutions = apply_transforms(solutions, positions, digits)
        targets = np.where(puzzles == 0, solutions, IGNORE_INDEX)
        return {"input_ids": torch.from_numpy(puzzles), "targets": torch.from_numpy(targets)}

    @staticmethod
    def _boards(prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(predicted digits at blanks (B, 81), blank mask (B, 81), right at blanks (B, 81)); ``prediction``: logits
        (B, 81, V) or digits (B, 81)."""
        digits = prediction.argmax(-1) if prediction.dim() == 3 else prediction
        targets = batch["targets"].to(digits.device)
        blank = targets != IGNORE_INDEX
        return digits, blank, (digits == targets) & blank

    def sample_error(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) float: the fraction of a board's blanks predicted wrong."""
        _, blank, right = self._boards(prediction, batch)
        return 1 - right.sum(-1).float() / blank.sum(-1).clamp_min(1)

    def sample_correct(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) bool: every blank of the board is right."""
        _, blank, right = self._boards(prediction, batch)
        return (right | ~blank).all(-1)

    def violations(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) float: sum over the 27 units of the completed board of ``9 - distinct digits 1..9``."""
        digits, blank, _ = self._boards(prediction, batch)
        board = torch.where(blank, digits, batch["input_ids"].to(digits.device)).clamp(0, 9)
        units = board[:, torch.as_tensor(UNITS, device=board.device)]  # (B, 27, 9)
        present = F.one_hot(units, 10)[..., 1:].amax(dim=2)  # (B, 27, 9): digit d present in the unit
        return (9 - present.sum(-1)).sum(-1).float()

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """``solved``: boards with every blank right / boards; ``cell_acc``: right blanks / blanks; ``violations``:
        mean over boards."""
        _, blank, right = self._boards(prediction, batch)
        return {"solved": mean_sums((right | ~blank).all(-1).float()),
                "cell_acc": masked_sums(right.float(), blank),
                "violations": mean_sums(self.violations(prediction, batch))}

    def describe(self) -> str:
        (lo, hi), (olo, ohi) = self.givens, self.ood_givens
        return (f"sudoku 9x9, unique solutions: {lo}..{hi} givens (OOD: {olo}..{ohi}), "
                f"{self.cache_size} base puzzles (cache seed {self.cache_seed})")
