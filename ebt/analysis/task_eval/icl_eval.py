"""Error vs number of in-context examples for trained models and the classical baselines (Garg et al. 2022, Fig. 2).

    python scripts/icl_eval.py ckpt=outputs/icl_linear/runs/RUN/checkpoints/last.ckpt
    python scripts/icl_eval.py 'ckpt=[A.ckpt,B.ckpt]' 'labels=[looped,stack]' eval_loops=12 batches=8

Options (``key=value``; ``--help`` lists the defaults): ``ckpt`` (one path or a list), ``labels`` (names in the plot;
default: the backbone class and run folder), ``splits`` (default ``[val, ood]``), ``batches`` x ``batch_size`` prompts
per split (default 8 x 128, the same prompts for every model and baseline), ``eval_loops`` (evaluation iterations of
looped backbones; default: as trained), ``out`` (folder; default: the run folder of the first checkpoint, i.e. the
parent of its ``checkpoints/``), ``seed`` (evaluation noise, default 0). Writes ``icl_eval.csv`` (split, method, k, err,
sem) and ``icl_eval.png`` there. ``err`` is the squared error divided by the prior variance of ``y`` (``d`` for linear
regression): 0 is perfect, 1 is "predict 0": per k, the mean over every prompt of every batch. A model's noise (an EBT's
initial candidates) is seeded per batch from ``(seed, split, batch index)`` (option ``seed``, default 0: as in
validation, :mod:`ebt.tasks.metrics`).
"""

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ebt.analysis.plotting import pyplot, save_figure, write_csv
from ebt.analysis.thinking.thinking_eval import set_eval_loops
from ebt.errors import ConfigError
from ebt.tasks.icl import ICLRegression
from ebt.tasks.icl_baselines import baselines_for
from ebt.tasks.metrics import forked_rng, seed_batch
from ebt.training import config  # noqa: F401  (registers ${uid:})
from ebt.training.checkpoint import load_checkpoint
from ebt.training.restore import restore_lit_model

DEFAULTS = {"ckpt": None, "labels": None, "splits": ["val", "ood"], "batches": 8, "batch_size": 128,
            "eval_loops": None, "out": None, "seed": 0}


def load_model(path: str | Path):
    """The LitModel and task of a checkpoint written by scripts/train.py, in eval mode (an ICL regression task)."""
    _, task, model = restore_lit_model(load_checkpoint(path), path)
    if not isinstance(task, ICLRegression):
        raise ConfigError(f"checkpoint {path} was trained on {type(task).__name__}; icl_eval needs data=icl_regression")
    return model.eval(), task


def _mean_sem(errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-k mean and standard error over prompts of (P, K) errors."""
    return errors.mean(0), errors.std(0) / errors.shape[0] ** 0.5


@torch.no_grad()
def evaluate(models: dict[str, tuple], task: ICLRegression, split: str, batches: int, batch_size: int,
             seed: int = 0):
    """Rows (split, method, k, err, sem) for every model and baseline on the same prompts."""
    per_method: dict[str, list[torch.Tensor]] = {}
    for index in range(batches):
        batch = task.make_batch(split, index, batch_size)
        for label, (model, _) in models.items():
            with forked_rng():
                seed_batch(seed, split, index)
                prediction = model.objective.predict(batch)
            errors = task.normalized_errors(task.query_predictions(prediction, batch), batch)
            per_method.setdefault(label, []).append(errors)
        for name, baseline in baselines_for(task.family).items():
            errors = task.normalized_errors(baseline(batch["xs"], batch["ys"]), batch)
            per_method.setdefault(name, []).append(errors)
    rows = []
    for method, chunks in per_method.items():
        mean, sem = _mean_sem(torch.cat(chunks))
        rows += [{"split": split, "method": method, "k": k, "err": float(m), "sem": float(s)}
                 for k, (m, s) in enumerate(zip(mean, sem, strict=True))]
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    splits = list(dict.fromkeys(r["split"] for r in rows))
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows if r["split"] == split):
            pts = [r for r in rows if r["split"] == split and r["method"] == method]
            ks = [r["k"] for r in pts]
            err = [r["err"] for r in pts]
            sem = [r["sem"] for r in pts]
            line = ax.plot(ks, err, marker="o", ms=3, label=method)[0]
            ax.fill_between(ks, [e - s for e, s in zip(err, sem, strict=True)],
                            [e + s for e, s in zip(err, sem, strict=True)], color=line.get_color(), alpha=0.2)
        ax.set(title=f"{title} ({split})", xlabel="in-context examples", ylabel="squared error / Var(y)")
        ax.set_ylim(-0.05, 1.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main(opts: DictConfig) -> list[dict]:
    """The ``scripts/icl_eval.py`` command (options: the module docstring): evaluate, write, print; returns the
    rows."""
    if not opts.ckpt:
        raise ConfigError("pass ckpt=PATH (a checkpoint written by scripts/train.py with data=icl_regression)")
    paths = [Path(p) for p in (opts.ckpt if OmegaConf.is_list(opts.ckpt) else [opts.ckpt])]
    run_dirs = [p.parent.parent if p.parent.name == "checkpoints" else p.parent for p in paths]
    labels = list(opts.labels) if opts.labels else None
    if labels is not None and len(labels) != len(paths):
        raise ConfigError(f"labels has {len(labels)} entries for {len(paths)} checkpoints; give one per ckpt")
    models = {}
    for i, (path, run_dir) in enumerate(zip(paths, run_dirs, strict=True)):
        model, task = load_model(path)
        changed = set_eval_loops(model, opts.eval_loops)
        label = labels[i] if labels else f"{type(model.objective.backbone).__name__} ({run_dir.name})"
        if changed:
            label += f" T={opts.eval_loops}"
        models[label] = (model, task)
    task = next(iter(models.values()))[1]  # every model is evaluated on the first checkpoint's prompts
    for label, (_, other) in models.items():
        if (other.input_dim, other.family) != (task.input_dim, task.family):
            raise ConfigError(f"{label} was trained on {other.describe()}, not {task.describe()}; compare like tasks")
    rows = [row for split in opts.splits
            for row in evaluate(models, task, split, opts.batches, opts.batch_size, int(opts.seed))]
    out = Path(opts.out) if opts.out else run_dirs[0]
    write_csv(rows, out / "icl_eval.csv", ["split", "method", "k", "err", "sem"])
    plot(rows, out / "icl_eval.png", f"{task.family} regression, d={task.n_dims}")
    _print_table(rows, task)
    print(f"wrote {out / 'icl_eval.csv'} and {out / 'icl_eval.png'}")
    return rows


def _print_table(rows: list[dict], task: ICLRegression) -> None:
    ks = [k for k in sorted({0, *task.report_ks, task.n_points - 1}) if k < task.n_points]
    for split in dict.fromkeys(r["split"] for r in rows):
        print(f"\n[{split}] err at k in-context examples")
        print(f"{'method':32s}" + "".join(f"{f'k={k}':>9s}" for k in ks))
        for method in dict.fromkeys(r["method"] for r in rows if r["split"] == split):
            by_k = {r["k"]: r["err"] for r in rows if r["split"] == split and r["method"] == method}
            print(f"{method[:32]:32s}" + "".join(f"{by_k[k]:9.4f}" for k in ks if k in by_k))
