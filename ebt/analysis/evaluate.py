"""Evaluate any checkpoint, predictor or EBT, on any split: the driver behind ``scripts/eval.py``.

Per split, the mean over ``eval_batches`` batches of the objective's own evaluation: the task's metrics and the loss
(for an EBT also the metric and energy after each logged thinking step), exactly what validation logs during
training. Writes ``eval.csv`` and ``eval.md`` into the run's ``eval/`` folder (``out_dir=`` to change) and prints the
table. Splits default to the task's evaluation splits; ``test`` (and ``train``) can be asked for too.
"""

from typing import Any

import lightning as L
from omegaconf import DictConfig

from ebt.analysis import run_options as opts
from ebt.analysis.plotting import columns_of, markdown_table, write_csv, write_text
from ebt.analysis.thinking_eval import evaluate_split
from ebt.training.restore import load_run


def evaluate(cfg: DictConfig) -> list[dict[str, Any]]:
    """One row per split: the checkpoint's evaluation metrics (see the module docstring)."""
    ckpt = opts.checkpoint_option(cfg, "ckpt")
    run = load_run(ckpt, opts.data_overrides(cfg))
    splits, batches, batch_size = opts.eval_plan(cfg, run)
    L.seed_everything(cfg.seed, verbose=False)  # an EBT's initial candidates are noise: the same every time
    rows, metric = [], run.task.metric
    for split in splits:
        means = evaluate_split(run, split, batches, batch_size)
        rows.append({"split": split, metric: means.pop(metric), "loss": means.pop("loss"),
                     **dict(sorted(means.items()))})
    text = (f"{type(run.objective).__name__} on {run.task.describe()}, {batches} x {batch_size} examples per split "
            f"({ckpt})\n\n" + markdown_table(rows, columns_of(rows)))
    print(text)
    out = opts.out_dir(cfg, ckpt, "eval")
    write_text(out / "eval.md", text + "\n")
    write_csv(rows, out / "eval.csv")
    print(f"\nwrote {out / 'eval.csv'} and {out / 'eval.md'}")
    return rows
