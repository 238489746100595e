"""k-frame autoregressive rollouts of world models on bouncing-ball video (behind ``scripts/rollout.py``).

    python scripts/rollout.py ebt_ckpt=RUN predictor_ckpt=RUN [context=3] [horizon=null] [splits=[val,ood]]

From the same ``context`` ground-truth frames of each sequence, every model predicts the next frame, appends its own
prediction to its input and goes on for ``horizon`` frames (teacher forcing only inside the context). The EBT thinks
``ebt_steps`` steps per frame (default: its trained steps) from fresh initial noise (seeded per model, split and
batch from ``(seed, split, batch index)``: a split's rollouts do not depend on the splits rolled out before); the
predictor makes one forward pass. ``copy_last`` (repeat the last context frame) is the do-nothing reference. With
``clip=true`` every predicted frame is clipped to [0, 1] before it is fed back.

Options (``key=value``; ``--help`` lists the defaults): ``ebt_ckpt`` / ``predictor_ckpt`` (a checkpoint or run folder of
``scripts/train.py``; at least one, both trained on the same task), ``context`` (>= 1), ``horizon`` (null: the rest of
the sequence, ``frames - context``; ``context + horizon <= frames``), ``splits`` (null: the task's evaluation splits),
``batches`` x ``batch_size`` sequences per split, ``ebt_steps``, ``samples`` (sequences drawn in the picture), ``clip``,
``seed``, ``out_dir`` (null: ``<the EBT's (else the predictor's) run folder>/rollouts``), ``wandb`` (log the table and
pictures; ``WANDB_MODE=offline`` works), ``data.KEY=VALUE`` (merged into the stored data config, e.g.
``data.task.ood_speed=[2,3]``).

Outputs: ``rollouts.csv`` (split, method, horizon, mse, psnr, psnr_sem: PSNR per predicted frame, mean and its
standard error over sequences), ``rollouts.md`` (PSNR per horizon, one table per split), ``rollouts.png`` (PSNR vs
horizon) and ``rollouts_<split>.png``: ground truth / predictor / EBT side by side over the horizon (the last context
frame first) for ``samples`` sequences.
"""

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ebt.analysis import run_options as opts
from ebt.analysis.plotting import markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.errors import ConfigError
from ebt.objectives.base import Objective
from ebt.objectives.frozen import frozen
from ebt.options import integer
from ebt.tasks.bouncing import BouncingBalls, psnr
from ebt.tasks.metrics import forked_rng, seed_batch
from ebt.training import config  # noqa: F401  (registers ${uid:})
from ebt.training.restore import Run, load_run

DEFAULTS = {"ebt_ckpt": None, "predictor_ckpt": None, "context": 3, "horizon": None, "splits": None, "batches": 2,
            "batch_size": 64, "ebt_steps": None, "samples": 3, "clip": False, "seed": 0, "out_dir": None,
            "wandb": False, "data": None}
CSV_COLUMNS = ["split", "method", "horizon", "mse", "psnr", "psnr_sem"]


def next_frame(objective: Objective, frames: torch.Tensor, ebt_steps: int | None = None) -> torch.Tensor:
    """The model's prediction of the frame after ``frames`` (B, n, P): (B, P), from position ``n - 1``."""
    batch = {"inputs": frames, "targets": torch.zeros_like(frames)}
    if objective.thinks:
        steps = objective.steps if ebt_steps is None else ebt_steps
        with frozen(objective):
            thought = objective.think(batch, steps=steps, langevin_std=objective.eval_langevin_std, keep=())
        return thought.candidates[-1].detach()[:, -1]
    with torch.no_grad():
        return objective.predict(batch)[:, -1]


def rollout(objective: Objective, context: torch.Tensor, horizon: int, *, ebt_steps: int | None = None,
            clip: bool = False) -> torch.Tensor:
    """``horizon`` frames (B, horizon, P) predicted autoregressively from ``context`` (B, c, P): each prediction is
    appended to the input of the next."""
    frames, predicted = context, []
    for _ in range(horizon):
        frame = next_frame(objective, frames, ebt_steps)
        frame = frame.clamp(0, 1) if clip else frame
        predicted.append(frame)
        frames = torch.cat([frames, frame[:, None]], dim=1)
    return torch.stack(predicted, dim=1)


def copy_last(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The do-nothing reference: the last context frame repeated ``horizon`` times."""
    return context[:, -1:].expand(-1, horizon, -1)


def evaluate_rollouts(models: dict[str, Objective], task: BouncingBalls, split: str, *, context: int, horizon: int,
                      batches: int, batch_size: int, ebt_steps: int | None = None, clip: bool = False,
                      seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Rows (split, method, horizon, mse, psnr, psnr_sem) and every method's frames of the split's first batch
    (``truth`` included), (B, context + horizon, P) with the context frames first. Each model's rollout of batch
    ``index`` starts from the global stream seeded with ``(seed, split, index)``; the caller's stream is untouched."""
    per_method: dict[str, list[torch.Tensor]] = {}
    errors: dict[str, list[torch.Tensor]] = {}
    first: dict[str, torch.Tensor] = {}
    for index in range(batches):
        frames = task.make_batch(split, index, batch_size)["frames"].flatten(2)  # (B, T, P)
        seen, truth = frames[:, :context], frames[:, context: context + horizon]
        outputs = {}
        for name, model in models.items():
            with forked_rng():
                seed_batch(seed, split, index)
                outputs[name] = rollout(model, seen, horizon, ebt_steps=ebt_steps, clip=clip)
        outputs["copy_last"] = copy_last(seen, horizon)
        for name, predicted in outputs.items():
            per_method.setdefault(name, []).append(psnr(predicted, truth))  # (B, horizon)
            errors.setdefault(name, []).append((predicted - truth).square().mean(dim=-1))
        if index == 0:
            first = {"truth": frames[:, : context + horizon]}
            first |= {name: torch.cat([seen, predicted], dim=1) for name, predicted in outputs.items()}
    rows = []
    for name, chunks in per_method.items():
        values, mse = torch.cat(chunks), torch.cat(errors[name])  # (N, horizon)
        sem = values.std(dim=0) / values.shape[0] ** 0.5 if values.shape[0] > 1 else torch.full_like(values[0], 0.0)
        rows += [{"split": split, "method": name, "horizon": h + 1, "mse": float(mse[:, h].mean()),
                  "psnr": float(values[:, h].mean()), "psnr_sem": float(sem[h])} for h in range(horizon)]
    return rows, first


def plot_psnr(rows: list[dict[str, Any]], path: Path) -> None:
    """PSNR against rollout horizon, one panel per split, one line per method (± standard error)."""
    plt = pyplot()
    splits = list(dict.fromkeys(r["split"] for r in rows))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.6 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows if r["split"] == split):
            line = [r for r in rows if (r["split"], r["method"]) == (split, method)]
            x, y = [r["horizon"] for r in line], [r["psnr"] for r in line]
            style = {"linestyle": ":", "color": "gray"} if method == "copy_last" else {}
            handle = ax.plot(x, y, marker="o", ms=3, label=method, **style)[0]
            ax.fill_between(x, [v - r["psnr_sem"] for v, r in zip(y, line, strict=True)],
                            [v + r["psnr_sem"] for v, r in zip(y, line, strict=True)], color=handle.get_color(),
                            alpha=0.2)
        ax.set(title=f"{split}: rollout PSNR", xlabel="frames predicted ahead", ylabel="PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_grid(frames: dict[str, torch.Tensor], *, context: int, size: int, samples: int, title: str,
              path: Path) -> None:
    """Side by side, for ``samples`` sequences: one row per method (ground truth first), one column per frame from
    the last context frame to the end of the horizon."""
    plt = pyplot()
    methods = ["truth", *(m for m in frames if m not in ("truth", "copy_last"))]
    columns = frames["truth"].shape[1] - context + 1
    n = min(samples, frames["truth"].shape[0])
    fig, axes = plt.subplots(n * len(methods), columns, figsize=(0.85 * columns + 1.2, 0.85 * n * len(methods) + 0.6),
                             squeeze=False)
    for s in range(n):
        for m, method in enumerate(methods):
            row = s * len(methods) + m
            for c in range(columns):
                ax = axes[row, c]
                image = frames[method][s, context - 1 + c].reshape(size, size).clamp(0, 1)
                ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"{'ground truth' if method == 'truth' else method}\n#{s}", fontsize=7)
                if row == 0:
                    ax.set_title("context" if c == 0 else f"+{c}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


WANTS = {"thinks": "an EBT (model/objective=ebt)", "one_pass": "a predictor (model/objective=predict)"}


def _load(path: str, capability: str, data_overrides: dict[str, Any] | None) -> Run:
    """The run at ``path``: a data=bouncing model whose objective has ``capability`` (``thinks`` or ``one_pass``)."""
    run = load_run(path, data_overrides)
    if not getattr(run.objective, capability):
        want = WANTS[capability]
        raise ConfigError(f"{path} is a {type(run.objective).__name__} checkpoint; this option needs {want}")
    if not isinstance(run.task, BouncingBalls):
        raise ConfigError(f"{path} was trained on {run.task.describe()!r}; rollouts need a data=bouncing model")
    return run


def main(cfg: DictConfig) -> list[dict[str, Any]]:
    """The ``scripts/rollout.py`` command (options: the module docstring): roll the models out on every split; write
    the CSV, markdown tables and pictures; return the rows."""
    if not cfg.ebt_ckpt and not cfg.predictor_ckpt:
        raise ConfigError("pass ebt_ckpt=RUN and/or predictor_ckpt=RUN (checkpoints of scripts/train.py with "
                          "data=bouncing)")
    data = opts.data_overrides(cfg)
    runs: dict[str, Run] = {}
    if cfg.predictor_ckpt:
        runs["predictor"] = _load(opts.checkpoint_option(cfg, "predictor_ckpt"), "one_pass", data)
    if cfg.ebt_ckpt:
        runs["EBT"] = _load(opts.checkpoint_option(cfg, "ebt_ckpt"), "thinks", data)
    task = next(iter(runs.values())).task
    for name, run in runs.items():
        if run.task.describe() != task.describe():
            raise ConfigError(f"the {name} was trained on {run.task.describe()!r} but the other model on "
                              f"{task.describe()!r}; roll out models of the same task")
    context = integer(cfg, "context", 1)
    horizon = task.frames - context if cfg.horizon is None else integer(cfg, "horizon", 1)
    if horizon < 1 or context + horizon > task.frames:
        raise ConfigError(f"context={context} + horizon={horizon} frames do not fit the {task.frames}-frame sequences "
                          f"the models were trained on; use context + horizon <= {task.frames}")
    ebt_steps = None if cfg.ebt_steps is None else integer(cfg, "ebt_steps", 1)
    batches, batch_size, samples = integer(cfg, "batches", 1), integer(cfg, "batch_size", 1), integer(cfg, "samples", 1)
    splits = list(task.eval_splits) if cfg.splits is None else list(cfg.splits)
    unknown = [s for s in splits if s not in (*task.eval_splits, "test", "train")]
    if unknown or not splits:
        raise ConfigError(f"splits={splits}: use some of {list(task.eval_splits)} (null: all)")

    models = {name: run.objective for name, run in runs.items()}
    rows, pictures = [], {}
    for split in splits:
        split_rows, pictures[split] = evaluate_rollouts(models, task, split, context=context, horizon=horizon,
                                                        batches=batches, batch_size=batch_size, ebt_steps=ebt_steps,
                                                        clip=bool(cfg.clip), seed=int(cfg.seed))
        rows += split_rows
    first = runs.get("EBT", next(iter(runs.values())))
    out = Path(cfg.out_dir) if cfg.out_dir else Path(first.path).resolve().parent.parent / "rollouts"
    thinking = ebt_steps if ebt_steps is not None else getattr(models.get("EBT"), "steps", None)
    text = report(rows, task, context, thinking)
    print(text)
    write_text(out / "rollouts.md", text + "\n")
    write_csv(rows, out / "rollouts.csv", CSV_COLUMNS)
    plot_psnr(rows, out / "rollouts.png")
    grids = {}
    for split, frames in pictures.items():
        grids[split] = out / f"rollouts_{split}.png"
        plot_grid(frames, context=context, size=task.frame_size, samples=samples, path=grids[split],
                  title=f"{split}: ground truth vs models, {context} context frames, {horizon} predicted")
    print(f"\nwrote {out / 'rollouts.csv'}, {out / 'rollouts.md'}, {out / 'rollouts.png'}, "
          + ", ".join(str(p) for p in grids.values()))
    if cfg.wandb:
        _log_wandb(rows, out / "rollouts.png", grids, first)
    return rows


def report(rows: list[dict[str, Any]], task: BouncingBalls, context: int, ebt_steps: int | None) -> str:
    """One markdown table per split: PSNR (dB) of each method at each horizon."""
    lines = [f"Rollouts: {task.describe()}; {context} context frames"
             + (f", EBT thinking {ebt_steps} steps per frame" if ebt_steps else "")]
    for split in dict.fromkeys(r["split"] for r in rows):
        mine = [r for r in rows if r["split"] == split]
        table = [{"method": m, **{f"+{r['horizon']}": r["psnr"] for r in mine if r["method"] == m}}
                 for m in dict.fromkeys(r["method"] for r in mine)]
        lines += ["", f"[{split}] PSNR (dB) per frame predicted ahead", "", markdown_table(table, list(table[0]))]
    return "\n".join(lines)


def _log_wandb(rows: list[dict[str, Any]], plot: Path, grids: dict[str, Path], run: Run) -> None:
    import wandb

    project = (run.config.get("logger") or {}).get("wandb", {}).get("project", "ebt-alt-arch")
    with wandb.init(project=project, job_type="rollout", config={"ckpt": str(run.path)}) as w:
        w.log({"rollouts/table": wandb.Table(columns=CSV_COLUMNS, data=[[r[c] for c in CSV_COLUMNS] for r in rows]),
               "rollouts/psnr": wandb.Image(str(plot)),
               **{f"rollouts/{split}": wandb.Image(str(path)) for split, path in grids.items()}})
