"""The one place the analysis tools and benchmark scripts get matplotlib, write figures, CSV files and markdown tables.

* :func:`pyplot`: ``matplotlib.pyplot`` with the non-interactive Agg backend (set once, before pyplot is imported,
  so a headless machine never needs a display);
* :func:`save_figure`: a figure laid out and written as a PNG atomically (a reader never sees half a file), then
  closed;
* :func:`write_text`: a text file written atomically;
* :func:`csv_text` / :func:`write_csv`: rows of dicts as CSV (columns: ``fieldnames`` or every key in order of first
  appearance; missing cells empty);
* :func:`markdown_table`: rows of dicts as a GitHub markdown table (floats ``.4g``, NaN and None empty).
"""

import csv
import functools
import io
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


@functools.cache
def pyplot():
    """``matplotlib.pyplot`` with the Agg backend (imported lazily: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _atomic_write(path: str | os.PathLike, write: Callable) -> None:
    from ebt.training.checkpoint import atomic_write  # imported here: it imports torch

    atomic_write(path, write)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """Lay ``fig`` out (``tight_layout``), write it as a PNG to ``path`` atomically (its folder created), close it."""
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    pyplot().close(fig)


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key of ``rows`` in order of first appearance."""
    return list(dict.fromkeys(k for r in rows for k in r))


def csv_text(rows: list[dict[str, Any]], fieldnames: list[str] | None = None, *, lineterminator: str = "\r\n") -> str:
    """``rows`` as CSV text with a header (the csv module's default dialect unless ``lineterminator`` is given)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames or columns_of(rows), lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike, fieldnames: list[str] | None = None, *,
              lineterminator: str = "\r\n") -> Path:
    """Write ``rows`` to ``path`` as CSV, atomically (replacing the file); returns the path."""
    return write_text(path, csv_text(rows, fieldnames, lineterminator=lineterminator))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (its folder created); returns the path."""
    _atomic_write(path, lambda f: f.write(text.encode()))
    return Path(path)


def cell(value: Any) -> str:
    """A table cell: floats with 4 significant digits, NaN and None as empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def cell_float(value: Any) -> float:
    """A table cell read back as a float (what :func:`cell` wrote, or a number): empty or not a number is NaN."""
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of ``columns`` (a missing cell is empty; ``|`` in a cell is escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines)
