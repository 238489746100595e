"""Evaluate any checkpoint, predictor or EBT, on any split: the driver behind ``scripts/eval.py``.

Per split, over ``eval_batches`` batches, the objective's own evaluation: the task's metrics and the loss (for an EBT
also the metric and energy after each logged thinking step), each a ratio of totals over the batches (bits per byte
= total bits / total bytes: :mod:`ebt.tasks.metrics`), exactly what validation logs during training.

``seed``: each batch's noise (an EBT's initial candidates and Langevin noise, a diffusion model's samples) is seeded
from ``(seed, split, batch index)``. ``seed=0`` (the default) is the seed validation uses, whatever the run's
training seed: on the run's evaluation batches (the defaults) ``eval.py`` reproduces ``summary.json``'s numbers.
Another ``seed`` draws other noise for the same batches (how much of a difference is noise).

Writes ``eval.csv`` and ``eval.md`` into the run's ``eval/`` folder (``out_dir=`` to change) and prints the table.
Splits default to the task's evaluation splits; ``test`` (and ``train``) can be asked for too.
"""

from typing import Any

from omegaconf import DictConfig

from ebt.analysis import run_options as opts
from ebt.analysis.plotting import columns_of, markdown_table, write_csv, write_text
from ebt.analysis.thinking.thinking_eval import evaluate_split
from ebt.training.restore import load_run


def evaluate(cfg: DictConfig) -> list[dict[str, Any]]:
    """One row per split: the checkpoint's evaluation metrics (see the module docstring)."""
    ckpt = opts.checkpoint_option(cfg, "ckpt")
    run = load_run(ckpt, opts.data_overrides(cfg))
    splits, batches, batch_size = opts.eval_plan(cfg, run)
    seed = int(cfg.seed)
    rows, metric = [], run.task.metric
    for split in splits:
        means = evaluate_split(run, split, batches, batch_size, seed)
        rows.append({"split": split, metric: means.pop(metric), "loss": means.pop("loss"),
                     **dict(sorted(means.items()))})
    text = (f"{type(run.objective).__name__} on {run.task.describe()}, {batches} x {batch_size} examples per split "
            f"({ckpt}; evaluation seed {seed})\n\n" + markdown_table(rows, columns_of(rows)))
    print(text)
    out = opts.out_dir(cfg, ckpt, "eval")
    write_text(out / "eval.md", text + "\n")
    write_csv(rows, out / "eval.csv")
    print(f"\nwrote {out / 'eval.csv'} and {out / 'eval.md'}")
    return rows
