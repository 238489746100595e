"""A thinking setting is chosen on one split and read on the others: the one selection rule of ``think.py``,
``ood_curve.py`` and ``think_seeds.py``.

Rows are the rows of ``scripts/think.py`` (``thinking.csv``): ``split``, ``mode`` (``fixed`` / ``adaptive``: the
EBT's settings; ``predictor``, ``loops``: other models), ``best_of``, ``steps``, ``loops`` and metric columns. A
*setting* is ``(mode, best_of, steps, loops)``.

* the **trained** setting: fixed mode, best-of-1 at the training step count;
* the **selected** setting (:func:`select`): the best EBT setting (fixed or adaptive) on the selection split ``val``
  for the metric in its direction (ties: the first row);
* the **thinking improvement** of a split (:func:`thinking_improvement`): the relative change from the trained to the
  selected setting on that split, ``sign * (selected - trained) / |trained|`` (positive = better, whatever the
  metric's direction). On the selection split itself the improvement is *in-sample* (the setting was chosen there, so
  it is >= 0 by construction); on every other split it is a held-out result;
* **fixed step changes** (:func:`fixed_step_change`): the relative change from the trained steps to ``k`` times as
  many, best-of-1, on every split (no selection at all).
"""

import math
from collections.abc import Callable
from typing import Any

SELECT_ON = "val"
EBT_MODES = ("fixed", "adaptive")

Row = dict[str, Any]


def direction(mode: str) -> float:
    """+1 for a metric to maximise, -1 to minimise."""
    if mode not in ("max", "min"):
        raise ValueError(f"metric direction {mode!r}: must be max or min")
    return 1.0 if mode == "max" else -1.0


def _int(value: Any) -> int:
    """An integer cell (``2``, ``2.0``, ``"2"``), 0 when empty."""
    if value in (None, ""):
        return 0
    value = float(value)
    return 0 if math.isnan(value) else int(value)


def setting_of(row: Row) -> tuple[str, int, int, int]:
    """``(mode, best_of, steps, loops)`` of a row (numbers parsed, empty cells 0)."""
    return row["mode"], _int(row.get("best_of")), _int(row.get("steps")), _int(row.get("loops"))


def setting_label(row: Row | None) -> str:
    """``best-of-4, 2 steps`` (``adaptive`` prefixed for the adaptive stop rule; ``4 loops`` for a looped row)."""
    if row is None:
        return ""
    mode, best_of, steps, loops = setting_of(row)
    if mode == "loops":
        return f"{loops} loop" + ("s" if loops != 1 else "")
    label = f"best-of-{best_of}, {steps} step" + ("s" if steps != 1 else "")
    return label if mode == "fixed" else f"{mode} {label}"


def _value(row: Row, metric: str) -> float:
    value = row.get(metric)
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def best_row(rows: list[Row], metric: str, mode: str) -> Row | None:
    """The row with the best ``metric`` (NaN and empty cells skipped; the first on ties), or None."""
    sign = direction(mode)
    rows = [r for r in rows if not math.isnan(_value(r, metric))]
    return max(rows, key=lambda r: sign * _value(r, metric)) if rows else None


def lookup(rows: list[Row], split: str, setting: Row | None) -> Row | None:
    """The row of ``split`` with the setting of ``setting`` (None when absent)."""
    if setting is None:
        return None
    key = setting_of(setting)
    return next((r for r in rows if r["split"] == split and setting_of(r) == key), None)


def trained_row(rows: list[Row], split: str, train_steps: int) -> Row | None:
    """The trained setting's row of ``split``: fixed, best-of-1, ``train_steps`` steps."""
    return lookup(rows, split, {"mode": "fixed", "best_of": 1, "steps": train_steps})


def relative_change(base: float, value: float, mode: str) -> float:
    """``sign * (value - base) / |base|`` (positive = better); NaN when ``base`` is 0 or either is NaN."""
    if base is None or value is None or math.isnan(base) or math.isnan(value) or base == 0:
        return math.nan
    return direction(mode) * (value - base) / abs(base)


def select(rows: list[Row], metric: str, mode: str, *, select_on: str = SELECT_ON, modes: tuple[str, ...] = EBT_MODES,
           keep: Callable[[Row], bool] | None = None) -> Row | None:
    """The best row of ``select_on`` among the settings of ``modes`` (and ``keep``), or None."""
    candidates = [r for r in rows if r["split"] == select_on and r["mode"] in modes and (keep is None or keep(r))]
    return best_row(candidates, metric, mode)


def ebt_splits(rows: list[Row]) -> list[str]:
    """The splits with EBT rows, in first-seen order."""
    return list(dict.fromkeys(r["split"] for r in rows if r["mode"] in EBT_MODES))


def thinking_improvement(rows: list[Row], metric: str, mode: str, train_steps: int, *, select_on: str = SELECT_ON,
                         keep: Callable[[Row], bool] | None = None) -> dict[str, dict[str, Any]]:
    """Per EBT split with a trained row: ``trained`` (its value), ``selected`` (the value of the setting chosen on
    ``select_on``, NaN when that split lacks it or nothing could be chosen), ``setting`` (its label),
    ``improvement`` (:func:`relative_change` from trained to selected) and ``in_sample`` (the split is ``select_on``).
    ``keep`` restricts the settings that may be chosen (e.g. at least the trained steps)."""
    chosen = select(rows, metric, mode, select_on=select_on, keep=keep)
    out = {}
    for split in ebt_splits(rows):
        trained = trained_row(rows, split, train_steps)
        if trained is None:
            continue
        selected = lookup(rows, split, chosen)
        base, value = _value(trained, metric), _value(selected, metric) if selected is not None else math.nan
        out[split] = {"trained": base, "selected": value, "setting": setting_label(chosen),
                      "improvement": relative_change(base, value, mode), "in_sample": split == select_on}
    return out


def fixed_step_change(rows: list[Row], metric: str, mode: str, train_steps: int, steps: int) -> dict[str, float]:
    """Per EBT split with a trained row: the relative change from the trained steps to ``steps`` steps, best-of-1,
    fixed mode (NaN where ``steps`` was not evaluated)."""
    out = {}
    for split in ebt_splits(rows):
        trained = trained_row(rows, split, train_steps)
        if trained is None:
            continue
        at = lookup(rows, split, {"mode": "fixed", "best_of": 1, "steps": steps})
        out[split] = relative_change(_value(trained, metric), _value(at, metric) if at else math.nan, mode)
    return out
