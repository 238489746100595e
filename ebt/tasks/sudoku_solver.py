"""A small, exact 9x9 Sudoku solver and generator of unique puzzles (pure Python + numpy).

Boards are 81 digits in row-major order, ``0`` for a blank. The solver is depth-first backtracking over bitmasks
(one 9-bit mask of used digits per row, column and box) that always branches on the most constrained blank cell
(fewest candidates; a cell with one candidate is a forced move, a cell with none a dead end). It counts solutions up
to a limit, so ``count_solutions(board, 2) == 1`` is the uniqueness test.

Generation (:func:`generate_unique_puzzle`): a random full grid (randomised backtracking from the empty board), then
every cell in a random order is blanked unless that makes the solution non-unique (tested as "is there a solution
with another digit in that cell", :func:`has_other_solution`). Removing givens never restores uniqueness, so a cell
kept once stays necessary and the result is *minimal*: no given can be removed (typically 22-27 givens).
"""

import numpy as np

__all__ = ["BOX", "COL", "ROW", "UNITS", "count_solutions", "generate_unique_puzzle", "has_other_solution",
           "is_valid_solution", "random_full_grid", "solve"]

ROW = tuple(i // 9 for i in range(81))
COL = tuple(i % 9 for i in range(81))
BOX = tuple((i // 27) * 3 + (i % 9) // 3 for i in range(81))
UNITS = np.array([[r * 9 + c for c in range(9)] for r in range(9)]  # rows, then columns, then boxes: (27, 9)
                 + [[r * 9 + c for r in range(9)] for c in range(9)]
                 + [[i for i in range(81) if BOX[i] == b] for b in range(9)], dtype=np.int64)
FULL = 0x1FF
_BITS = tuple(tuple(1 << d for d in range(9) if m >> d & 1) for m in range(512))  # candidate bits of a mask
_POPCOUNT = tuple(bin(m).count("1") for m in range(512))
_DIGIT = {1 << d: d + 1 for d in range(9)}


def _masks(board) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """Used-digit masks of rows, columns, boxes and the blank cells; ``None`` if two givens clash."""
    rows, cols, boxes, blanks = [0] * 9, [0] * 9, [0] * 9, []
    for i, v in enumerate(board):
        v = int(v)
        if v == 0:
            blanks.append(i)
            continue
        if not 1 <= v <= 9:
            raise ValueError(f"a sudoku cell holds 0..9, got {v} at cell {i}")
        bit = 1 << (v - 1)
        r, c, b = ROW[i], COL[i], BOX[i]
        if (rows[r] | cols[c] | boxes[b]) & bit:
            return None
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
    return rows, cols, boxes, blanks


def _most_constrained(blanks: list[int], rows: list[int], cols: list[int], boxes: list[int],
                      _row=ROW, _col=COL, _box=BOX, _popcount=_POPCOUNT) -> tuple[int, int]:
    """(index into ``blanks`` of the blank cell with the fewest candidates, its candidate mask)."""
    best, best_free, best_n = 0, 0, 10
    for j, i in enumerate(blanks):
        free = ~(rows[_row[i]] | cols[_col[i]] | boxes[_box[i]]) & 0x1FF
        n = _popcount[free]
        if n < best_n:
            if n <= 1:
                return j, free
            best, best_free, best_n = j, free, n
    return best, best_free


def _count(blanks: list[int], rows: list[int], cols: list[int], boxes: list[int], limit: int) -> int:
    if not blanks:
        return 1
    j, free = _most_constrained(blanks, rows, cols, boxes)
    if not free:
        return 0
    i = blanks[j]
    rest = blanks[:j] + blanks[j + 1:]
    r, c, b = ROW[i], COL[i], BOX[i]
    total = 0
    for bit in _BITS[free]:
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        total += _count(rest, rows, cols, boxes, limit - total)
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
        if total >= limit:
            break
    return total


def count_solutions(board, limit: int = 2) -> int:
    """Number of solutions of ``board`` (81 digits, 0 = blank), counted up to ``limit`` (a clash of givens: 0)."""
    masks = _masks(board)
    return 0 if masks is None else _count(masks[3], *masks[:3], limit)


def has_other_solution(board, cell: int, digit: int) -> bool:
    """Whether ``board`` with ``cell`` blanked has a solution with another digit than ``digit`` there (blanking a
    given of a unique puzzle keeps it unique iff not; faster than counting to 2: the known solution is skipped)."""
    masks = _masks([0 if i == cell else v for i, v in enumerate(board)])
    if masks is None:
        return False
    rows, cols, boxes, blanks = masks
    blanks.remove(cell)
    r, c, b = ROW[cell], COL[cell], BOX[cell]
    for bit in _BITS[~(rows[r] | cols[c] | boxes[b] | 1 << (digit - 1)) & FULL]:
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        if _count(blanks, rows, cols, boxes, 1):
            return True
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
    return False


def _solve(blanks, rows, cols, boxes, out: list[int], rng: np.random.Generator | None) -> bool:
    if not blanks:
        return True
    j, free = _most_constrained(blanks, rows, cols, boxes)
    if not free:
        return False
    i = blanks[j]
    rest = blanks[:j] + blanks[j + 1:]
    r, c, b = ROW[i], COL[i], BOX[i]
    bits = _BITS[free]
    if rng is not None and len(bits) > 1:
        bits = [bits[k] for k in rng.permutation(len(bits))]
    for bit in bits:
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        if _solve(rest, rows, cols, boxes, out, rng):
            out[i] = _DIGIT[bit]
            return True
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
    return False


def solve(board, rng: np.random.Generator | None = None) -> np.ndarray | None:
    """One solution of ``board`` as an (81,) int64 array, or ``None``; with ``rng`` the digits are tried in a random
    order, so solving the empty board draws a random full grid."""
    masks = _masks(board)
    if masks is None:
        return None
    out = [int(v) for v in board]
    return np.array(out, dtype=np.int64) if _solve(masks[3], *masks[:3], out, rng) else None


def random_full_grid(rng: np.random.Generator) -> np.ndarray:
    """A uniformly shuffled valid completed grid (81,) drawn by randomised backtracking."""
    board = np.zeros(81, dtype=np.int64)
    for b in (0, 4, 8):  # the diagonal boxes are independent: fill them with random permutations first
        cells = UNITS[18 + b]
        board[cells] = rng.permutation(9) + 1
    grid = solve(board, rng)
    assert grid is not None  # any filling of the three diagonal boxes completes
    return grid


def generate_unique_puzzle(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(puzzle, solution), both (81,) int64: a minimal puzzle whose unique solution is a random full grid."""
    solution = random_full_grid(rng)
    puzzle = solution.tolist()
    for cell in rng.permutation(81).tolist():
        if not has_other_solution(puzzle, cell, puzzle[cell]):
            puzzle[cell] = 0
    return np.array(puzzle, dtype=np.int64), solution


def is_valid_solution(grids: np.ndarray) -> np.ndarray:
    """(n,) bool: each (81,) row of ``grids`` (n, 81) is a completed grid (every unit holds 1..9 once)."""
    grids = np.asarray(grids).reshape(-1, 81)
    units = np.sort(grids[:, UNITS], axis=-1)  # (n, 27, 9)
    return (units == np.arange(1, 10)).all(axis=(1, 2))
